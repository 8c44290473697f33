"""Geometry interfaces and the mesh type shared by renderers and export.

All geometries live in a cube ``[-radius, radius]^3`` around the origin (world frame of
``data/cameras.py``: +Z up). What the system, the renderers and export call is declared here:

* :class:`Geometry` — every geometry: ``forward(points)`` → :class:`GeometryOutput`,
  ``isosurface()`` → :class:`Mesh` (export, the next stage's ``create_from``) and the classmethod
  ``create_from(previous stage's geometry, cfg)``;
* :class:`SurfaceGeometry` — a triangle mesh, rasterized: ``mesh()`` (differentiable in its
  vertices for DMTet); its ``isosurface()`` is that mesh. Density volumes (volume rendering)
  add ``forward_density(points)`` instead (``implicit_volume.py``);
* :class:`FieldGeometry` — appearance features from a neural field
  ``feature_network(encoding(contract_to_unit(p)))``, which a geometry of another kind can take
  over in ``create_from``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.config import Configurable, PositiveFloat, to_container
from ..core.schedule import Updateable


@dataclass
class GeometryOutput:
    """Per-point outputs. ``density`` (N,1) ≥ 0 (None for explicit geometry), ``features``
    (N,F) appearance features for the material, ``normal`` (N,3) unit world normals or None,
    ``sdf`` (N,1) where the geometry has one."""

    features: Tensor
    density: Optional[Tensor] = None
    normal: Optional[Tensor] = None
    sdf: Optional[Tensor] = None


@dataclass
class Mesh:
    """A triangle mesh. ``v_pos`` (V,3) float, ``t_pos_idx`` (F,3) int64, counter-clockwise
    faces seen from outside. Optional UV atlas: ``v_tex`` (T,2) in [0,1], ``t_tex_idx`` (F,3)."""

    v_pos: Tensor
    t_pos_idx: Tensor
    v_tex: Optional[Tensor] = None
    t_tex_idx: Optional[Tensor] = None

    @property
    def num_vertices(self) -> int:
        return self.v_pos.shape[0]

    @property
    def num_faces(self) -> int:
        return self.t_pos_idx.shape[0]

    def face_normals(self) -> Tensor:
        """(F,3) unit face normals (right-hand rule on the vertex order)."""
        v = self.v_pos[self.t_pos_idx]
        n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
        return torch.nn.functional.normalize(n, dim=-1)

    def sample_surface(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """(n,3) points uniform on the surface (faces drawn by area, then uniform barycentrics);
        detached."""
        v = self.v_pos.detach()[self.t_pos_idx]
        area = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1).norm(dim=-1)
        face = torch.multinomial(area, n, replacement=True, generator=generator)
        u, w = (torch.rand(n, generator=generator, device=v.device, dtype=v.dtype) for _ in range(2))
        flip = u + w > 1  # reflect into the triangle
        u, w = torch.where(flip, 1 - u, u), torch.where(flip, 1 - w, w)
        t = v[face]
        return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])

    def vertex_normals(self) -> Tensor:
        """(V,3) area-weighted unit vertex normals."""
        v = self.v_pos[self.t_pos_idx]
        n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
        vn = torch.zeros_like(self.v_pos)
        for k in range(3):
            vn = vn.index_add(0, self.t_pos_idx[:, k], n)
        return torch.nn.functional.normalize(vn, dim=-1, eps=1e-12)


class Geometry(Configurable, Updateable, nn.Module):
    """Base of every geometry; ``cfg.radius`` is the half side of its scene box."""

    def forward(self, points: Tensor, output_normal: bool = False) -> GeometryOutput:
        """points (N,3) world → per-point outputs (features (N,F); density, normal where the
        geometry has them)."""
        raise NotImplementedError

    def isosurface(self) -> Mesh:
        """The surface as a triangle mesh, for export and for the next stage."""
        raise NotImplementedError

    @classmethod
    def create_from(cls, other: Geometry, cfg: Any = None, where: str = "geometry") -> Geometry:
        """This kind of geometry built from the previous stage's ``other`` (stage hand-off);
        a :class:`~threestudio_like.core.errors.UserError` when it cannot be."""
        raise NotImplementedError

    def after_optimizer_step(self, optimizer: torch.optim.Optimizer, global_step: int, render: Any) -> None:
        """After each optimizer step, with the step's :class:`~threestudio_like.renderers.base.RenderOutput`:
        a geometry that changes its parameters during training (Gaussians: densify, prune) edits
        them and ``optimizer``'s state here. Nothing by default."""


class SurfaceGeometry(Geometry):
    """A geometry whose surface is a triangle mesh: renderers rasterize ``mesh()``."""

    def mesh(self) -> Mesh:
        """The surface mesh (differentiable in its vertices where the geometry trains them)."""
        raise NotImplementedError

    def isosurface(self) -> Mesh:
        """The surface for export: ``mesh()``."""
        return self.mesh()


def contract_to_unit(points: Tensor, radius: float) -> Tensor:
    """World points (N,3) in ``[-radius, radius]^3`` → encoding input (N,3) in [0,1]^3 (clamped)."""
    return ((points / radius + 1.0) * 0.5).clamp(0.0, 1.0)


def default_hash_grid() -> dict[str, Any]:
    """Instant-NGP / Magic3D hash grid: 16 levels × 2 features, 2^19 table, base 16, scale ≈1.447."""
    return {
        "otype": "HashGrid",
        "n_levels": 16,
        "n_features_per_level": 2,
        "log2_hashmap_size": 19,
        "base_resolution": 16,
        "per_level_scale": 1.447269237440378,
    }


def encoding_config_or_default(cfg: Optional[dict[str, Any]]) -> dict[str, Any]:
    """``pos_encoding_config`` as given, the hash grid of :func:`default_hash_grid` when None, or
    that hash grid updated with the given keys when they name no ``otype``. (The config field
    defaults to None because OmegaConf would merge a user's dict into a default dict, mixing
    the keys of two encodings.)"""
    if cfg is None:
        return default_hash_grid()
    data = dict(to_container(cfg))
    return data if "otype" in data else {**default_hash_grid(), **data}


class FieldGeometry(Geometry):
    """A geometry whose appearance features are ``feature_network(encoding(u))`` with
    ``u = contract_to_unit(p, radius)``; subclasses build ``encoding`` (with
    :func:`~threestudio_like.ops.encodings.make_encoding` of :meth:`encoding_config`) and
    ``feature_network`` (an :class:`~threestudio_like.ops.mlp.MLP` with ``mlp_network_config``)."""

    @dataclass
    class Config:
        radius: PositiveFloat = 1.0
        """Half the side of the scene box [-radius, radius]^3."""
        n_feature_dims: int = 3
        """Appearance features per point (3 for an RGB albedo material)."""
        pos_encoding_config: Optional[dict[str, Any]] = None
        """Encoding of the contracted point (ops/encodings.py): otype HashGrid |
        ProgressiveBandHashGrid | Frequency | Triplane | DenseGrid and that encoding's fields;
        None (or no otype) = the Instant-NGP hash grid."""
        mlp_network_config: dict[str, Any] = field(default_factory=dict)
        """Config of the MLP heads on the encoding (ops.mlp.MLP.Config; its defaults: one hidden
        ReLU layer of 64)."""

    encoding: nn.Module
    feature_network: nn.Module

    def encoding_config(self) -> dict[str, Any]:
        """The encoding as a complete ``pos_encoding_config`` dict (default filled in), so that
        another geometry can build the same appearance field."""
        return encoding_config_or_default(self.cfg.pos_encoding_config)
