"""DMTet: a signed distance on a deformable tetrahedral grid, meshed by marching tets (Magic3D's
fine stage).

Grid: :func:`~threestudio_like.ops.tet_grid.tet_grid` at ``isosurface_resolution`` cells per side,
scaled to ``[-radius, radius]^3`` (not saved in checkpoints: regenerated from the resolution).
Trainable state: ``sdf`` (V,) (negative inside) and, with ``isosurface_deformable_grid``,
``deformation`` (V,3), applied as ``tanh(deformation) * radius / N`` — at most half a cell
(cell side ``2 radius / N``). ``fix_geometry`` keeps both as buffers (same checkpoint keys).
``mesh()`` is the differentiable marching-tets mesh; ``forward(points)`` the appearance features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.config import PositiveFloat, PositiveInt
from ..core.errors import UserError
from ..ops.marching_tets import marching_tets
from ..ops.tet_grid import tet_grid
from .base import Geometry, Mesh
from .explicit_mesh import FieldSurface
from .implicit_volume import ImplicitVolume
from .isosurface import at_nearest_grid_point, enclosed_voids


def normalized_level(level: Tensor, tets: Tensor) -> Tensor:
    """``level / s`` clamped to [-1, 1], with ``s`` the largest ``|level|`` over the vertices of
    the tets that change sign: the zero crossings on every edge stay exactly where they were
    (no vertex of a crossing edge is clamped), while far-away values stop dominating the scale."""
    occ = (level < 0)[tets]
    mixed = occ.any(1) & ~occ.all(1)
    near = torch.zeros_like(level, dtype=torch.bool)
    near[tets[mixed].reshape(-1)] = True
    scale = level[near].abs().max() if bool(near.any()) else level.abs().max().clamp(min=1e-12)
    return (level / scale.clamp(min=1e-12)).clamp(-1.0, 1.0)


class DMTetGeometry(FieldSurface):
    """``mesh() -> Mesh`` (differentiable in sdf and deformation); ``forward(points (N,3))``."""

    @dataclass
    class Config(FieldSurface.Config):
        isosurface_resolution: PositiveInt = 128
        """Tet grid cells per side (threestudio's 128_tets file ≈ 64 here; see ops/tet_grid.py)."""
        isosurface_deformable_grid: bool = True
        """Train per-vertex offsets of the grid (at most half a cell)."""
        fix_geometry: bool = False
        """Freeze sdf and deformation (texture-only training)."""
        shape_init_radius: PositiveFloat = 0.5
        """From scratch: the SDF of a sphere of this radius (fraction of radius)."""

    def __init__(self, cfg=None, where: str = "geometry") -> None:
        super().__init__(cfg, where)
        c = self.cfg
        vertices, tets = tet_grid(c.isosurface_resolution)
        self.register_buffer("grid_vertices", vertices * c.radius, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        sdf = vertices.norm(dim=-1) * c.radius - c.shape_init_radius * c.radius
        self._state("sdf", sdf)
        if c.isosurface_deformable_grid:
            self._state("deformation", torch.zeros_like(vertices))

    def _state(self, name: str, value: Tensor) -> None:
        if self.cfg.fix_geometry:
            self.register_buffer(name, value)
        else:
            setattr(self, name, nn.Parameter(value))

    def vertex_positions(self) -> Tensor:
        """(V,3) world positions of the (deformed) grid vertices."""
        if not self.cfg.isosurface_deformable_grid:
            return self.grid_vertices
        return self.grid_vertices + torch.tanh(self.deformation) * (self.cfg.radius / self.cfg.isosurface_resolution)

    def mesh(self) -> Mesh:
        """Marching-tets mesh of ``sdf = 0`` on the deformed grid."""
        mesh = marching_tets(self.vertex_positions(), self.sdf, self.tets)
        if mesh.num_faces == 0:
            lo, hi = float(self.sdf.detach().min()), float(self.sdf.detach().max())
            raise UserError(
                f"{self.where}: the DMTet surface is empty (sdf ranges over [{lo:g}, {hi:g}], "
                "a surface needs both signs); initialise it from a trained volume or check its "
                "shape_init_radius"
            )
        return mesh

    @classmethod
    def create_from(cls, other: Geometry, cfg=None, where: str = "geometry") -> DMTetGeometry:
        """Stage hand-off. Always copied: the appearance field (encoding + feature MLP weights, and
        the ``radius``, ``n_feature_dims``, ``pos_encoding_config``, ``mlp_network_config`` they
        need — taken from ``other``, overriding ``cfg``).

        * from a density volume: ``sdf = normalized_level(threshold - density)`` at the grid
          vertices, with the threshold the volume's ``isosurface()`` uses (``auto`` resolved on
          its marching-cubes grid) and the vertices in an enclosed cavity of that grid
          (:func:`~.isosurface.enclosed_voids`) made inside; deformation starts at zero;
        * from a DMTet: ``sdf`` and ``deformation`` copied when the resolutions match; otherwise
          ``sdf`` is resampled trilinearly on the new grid and the deformation starts at zero.
        """
        if not isinstance(other, (ImplicitVolume, DMTetGeometry)):
            raise UserError(
                f"{where}: cannot build a DMTet from a {type(other).__name__}; the previous stage "
                "needs an ImplicitVolume or DMTet geometry"
            )
        c = cls._config_with_appearance_of(other, cfg, where)
        device = next(other.parameters()).device
        instance = cls(c, where=where).to(device)
        instance.copy_appearance_from(other)
        with torch.no_grad():
            instance.sdf.copy_(instance._sdf_from(other))
            if isinstance(other, DMTetGeometry) and _same_grid(instance, other):
                instance.deformation.copy_(other.deformation)
        return instance

    def _sdf_from(self, other: ImplicitVolume | DMTetGeometry) -> Tensor:
        if isinstance(other, ImplicitVolume):
            grid = other.density_grid()
            threshold = other.isosurface_threshold_value(grid)
            density = torch.cat([other.forward_density(p).reshape(-1) for p in self.grid_vertices.split(1 << 16)])
            level = threshold - density
            voids = enclosed_voids(grid > threshold)
            if bool(voids.any()):  # vertices in a cavity of the marching-cubes grid count as inside
                in_void = at_nearest_grid_point(voids, self.grid_vertices, other.cfg.radius)
                level = torch.where(in_void, -level.abs(), level)
            return normalized_level(level, self.tets)
        if other.cfg.isosurface_resolution == self.cfg.isosurface_resolution:
            return other.sdf.detach()
        m = other.cfg.isosurface_resolution + 1
        lattice = other.sdf.detach().reshape(1, 1, m, m, m)  # [x, y, z] lattice of the old grid
        coords = (self.grid_vertices / self.cfg.radius).flip(-1)  # grid_sample wants (z, y, x) → (W, H, D)
        return F.grid_sample(lattice, coords.reshape(1, -1, 1, 1, 3), mode="bilinear", align_corners=True).reshape(-1)


def _same_grid(a: DMTetGeometry, b: DMTetGeometry) -> bool:
    return (
        a.cfg.isosurface_deformable_grid
        and b.cfg.isosurface_deformable_grid
        and a.cfg.isosurface_resolution == b.cfg.isosurface_resolution
    )
