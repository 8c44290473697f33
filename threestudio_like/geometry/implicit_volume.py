"""The density volume: ``ImplicitVolume`` on any encoding (hash grid, triplane, dense grid...).

An :class:`ImplicitVolume` is an encoding of the contracted point ``u = (p / radius + 1) / 2``
(clamped to [0,1]^3; the encoding is built by :func:`~threestudio_like.ops.encodings.make_encoding`
from ``pos_encoding_config``) followed by two MLP heads on the same code (threestudio's
``ImplicitVolume`` semantics):

* density ``sigma = act(density_network(enc) + bias(p))`` (N,1), with the blob ``bias`` that makes
  a fresh field start as a ball:
  ``blob_magic3d``: ``scale * (1 - |p| / std)``; ``blob_dreamfusion``:
  ``scale * exp(-|p|^2 / (2 std^2))``; or a constant;
* appearance features ``feature_network(enc)`` (N, n_feature_dims), raw (the material applies
  its activation);
* normals ``-grad sigma / |grad sigma|`` (N,3), by central finite differences (six extra density
  queries at ``p ± eps e_k``, clamped to the box) or by autograd (``analytic``; the graph is
  kept — ``create_graph`` — whenever the caller has gradients enabled, so normal losses train).

``configs/geometry/``: ``implicit_volume.yaml`` (hash grid), ``triplane.yaml`` (three feature
planes), ``dense_volume.yaml`` (voxel grid). ``isosurface()`` runs marching cubes on a density
grid at the level chosen by :mod:`.isosurface` (``auto`` by default).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.config import PositiveFloat, Probability, Range
from ..core.errors import UserError
from ..ops.encodings import make_encoding
from ..ops.mlp import MLP, get_activation
from .base import FieldGeometry, Geometry, GeometryOutput, Mesh, contract_to_unit
from .isosurface import density_grid, extract_isosurface, resolve_threshold

DENSITY_BIASES = ("blob_magic3d", "blob_dreamfusion")


class ImplicitVolume(FieldGeometry):
    """Density volume for volume rendering (Magic3D/DreamFusion's NeRF geometry).

    ``forward(points (N,3), output_normal) -> GeometryOutput``; ``forward_density(points (N,3))
    -> (N,1)``; ``isosurface() -> Mesh``."""

    @dataclass
    class Config(FieldGeometry.Config):
        density_activation: Literal["softplus", "exp", "trunc_exp"] = "softplus"
        """Raw density → density."""
        density_bias: Any = "blob_magic3d"
        """Added to the raw density: blob_magic3d | blob_dreamfusion | a number."""
        density_blob_scale: float = 10.0
        """Height of the blob bias."""
        density_blob_std: PositiveFloat = 0.5
        """Width of the blob bias, world units."""
        normal_type: Literal["finite_difference", "analytic", "none"] = "finite_difference"
        """How normals are computed (module docstring); none: no normals."""
        finite_difference_eps: PositiveFloat = 0.01
        """Step of the finite-difference normals, world units."""
        isosurface_resolution: Annotated[int, Range(ge=2)] = 64
        """Samples per side of the marching-cubes grid over the scene box."""
        isosurface_threshold: Any = "auto"
        """Density level of the surface: a number or 'auto' (see geometry/isosurface.py)."""
        isosurface_auto_max_fill: Probability = 0.6
        """auto: at most this fraction of the grid may be inside the surface."""
        isosurface_auto_min_threshold: float = 1.0
        """auto: the level never goes below this density (below it the field counts as empty)."""
        isosurface_remove_outliers: bool = True
        """Drop small disconnected pieces (floaters) from the isosurface."""
        isosurface_outlier_fraction: Probability = 0.01
        """A piece with fewer than this fraction of the faces is an outlier."""

    def __init__(self, cfg=None, where: str = "geometry") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.where = where
        c = self.cfg
        self._density_act = get_activation(c.density_activation)
        if not (
            c.density_bias in DENSITY_BIASES
            or (isinstance(c.density_bias, (int, float)) and not isinstance(c.density_bias, bool))
        ):
            raise UserError(
                f"{where}.density_bias: expected {'|'.join(DENSITY_BIASES)} or a number, got {c.density_bias!r}"
            )
        self.encoding = make_encoding(
            self.encoding_config(), 3, where=f"{where}.pos_encoding_config", input_grad=c.normal_type == "analytic"
        )
        n_enc = self.encoding.n_output_dims
        self.density_network = MLP(n_enc, 1, c.mlp_network_config, where=f"{where}.mlp_network_config")
        self.feature_network = MLP(n_enc, c.n_feature_dims, c.mlp_network_config, where=f"{where}.mlp_network_config")

    # ---- fields ----------------------------------------------------------------------------
    def density_bias(self, points: Tensor) -> Tensor:
        """(N,3) world points → (N,1) bias added to the raw density."""
        c = self.cfg
        if c.density_bias == "blob_magic3d":
            r = torch.linalg.vector_norm(points, dim=-1, keepdim=True)
            return c.density_blob_scale * (1.0 - r / c.density_blob_std)
        if c.density_bias == "blob_dreamfusion":
            r2 = points.square().sum(-1, keepdim=True)
            return c.density_blob_scale * torch.exp(-0.5 * r2 / c.density_blob_std**2)
        return torch.full_like(points[..., :1], float(c.density_bias))

    def _density(self, enc: Tensor, points: Tensor) -> Tensor:
        return self._density_act(self.density_network(enc) + self.density_bias(points))

    def forward_density(self, points: Tensor) -> Tensor:
        """Density (N,1) ≥ 0 at world points (N,3); no features (occupancy grid, isosurface)."""
        return self._density(self.encoding(contract_to_unit(points, self.cfg.radius)), points)

    def forward(self, points: Tensor, output_normal: bool = False) -> GeometryOutput:
        """points (N,3) world → features (N,F), density (N,1), normal (N,3) or None."""
        analytic = output_normal and self.cfg.normal_type == "analytic"
        grad_enabled = torch.is_grad_enabled()
        with torch.enable_grad() if analytic else contextlib.nullcontext():
            if analytic and not points.requires_grad:
                points = points.detach().requires_grad_(True)
            enc = self.encoding(contract_to_unit(points, self.cfg.radius))
            density = self._density(enc, points)
            features = self.feature_network(enc)
            normal = None
            if analytic:
                (grad,) = torch.autograd.grad(density, points, torch.ones_like(density), create_graph=grad_enabled)
                normal = F.normalize(-grad, dim=-1)
        if analytic and not grad_enabled:
            density, features, normal = density.detach(), features.detach(), normal.detach()
        if output_normal and self.cfg.normal_type == "finite_difference":
            normal = self.finite_difference_normal(points)
        return GeometryOutput(features=features, density=density, normal=normal)

    def finite_difference_normal(self, points: Tensor) -> Tensor:
        """(N,3) unit ``-grad density`` by central differences with step ``finite_difference_eps``."""
        eps, r = self.cfg.finite_difference_eps, self.cfg.radius
        offsets = torch.cat([torch.eye(3), -torch.eye(3)]).to(points) * eps  # (6,3): +x +y +z -x -y -z
        shifted = (points[:, None, :] + offsets).clamp(-r, r).reshape(-1, 3)
        d = self.forward_density(shifted).reshape(-1, 6)
        grad = (d[:, :3] - d[:, 3:]) / (2 * eps)
        return F.normalize(-grad, dim=-1)

    # ---- surface ---------------------------------------------------------------------------
    def density_grid(self, resolution: int | None = None) -> Tensor:
        """(R,R,R) densities on the marching-cubes grid over the scene box (x, y, z axis order)."""
        device = next(self.parameters()).device
        return density_grid(self.forward_density, resolution or self.cfg.isosurface_resolution, self.cfg.radius, device)

    def isosurface_threshold_value(self, grid: Tensor | None = None) -> float:
        """The isosurface level in use (``auto`` resolved on the density grid), checked: raises
        :class:`UserError` if the surface would be empty or fill the whole box."""
        c = self.cfg
        grid = self.density_grid() if grid is None else grid
        return resolve_threshold(
            grid, c.isosurface_threshold, c.isosurface_auto_max_fill, c.isosurface_auto_min_threshold, self.where
        )

    def isosurface(self) -> Mesh:
        """Marching-cubes mesh (detached) of ``density = threshold`` over the scene box."""
        c = self.cfg
        grid = self.density_grid()
        level = self.isosurface_threshold_value(grid)
        return extract_isosurface(
            grid, level, c.radius, self.where, c.isosurface_remove_outliers, c.isosurface_outlier_fraction
        )

    # ---- stage hand-off --------------------------------------------------------------------
    @classmethod
    def create_from(cls, other: Geometry, cfg=None, where: str = "geometry") -> ImplicitVolume:
        """A copy of ``other`` (an ImplicitVolume of the same architecture): every parameter and
        buffer is copied; settings that hold no state (isosurface, normals, bias) come from ``cfg``."""
        if not isinstance(other, cls):
            raise UserError(
                f"{where}: cannot build a {cls.__name__} from a {type(other).__name__}; "
                f"use geometry_init=scratch or a {cls.__name__} in the previous stage"
            )
        device = next(other.parameters()).device
        instance = cls(cfg, where=where).to(device)
        mine, theirs = type(instance.encoding), type(other.encoding)
        if not (issubclass(mine, theirs) or issubclass(theirs, mine)):
            raise UserError(
                f"{where}: cannot build a {cls.__name__} on a {mine.__name__} from one on a "
                f"{theirs.__name__}; keep the previous stage's pos_encoding_config or use "
                "geometry_init=scratch"
            )
        try:
            instance.load_state_dict(other.state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise UserError(
                f"{where}: the previous stage's {cls.__name__} has a different architecture "
                f"({first}); keep its encoding and MLP configs"
            ) from None
        return instance
