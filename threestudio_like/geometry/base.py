"""Geometry interface and the mesh type shared by renderers and export.

All geometries live in a cube ``[-radius, radius]^3`` around the origin (world frame of
``data/cameras.py``: +Z up). Two families:

* **implicit** (volume rendering): ``forward(points)`` gives density and appearance features;
* **explicit** (rasterization): ``mesh()`` gives a triangle :class:`Mesh` (differentiable in
  its vertices for DMTet) and ``forward(points)`` gives the appearance features at surface points.

Every geometry can produce a mesh (``isosurface()`` for implicit ones) for export and for the
next stage's ``create_from``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


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

    def vertex_normals(self) -> Tensor:
        """(V,3) area-weighted unit vertex normals."""
        v = self.v_pos[self.t_pos_idx]
        n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
        vn = torch.zeros_like(self.v_pos)
        for k in range(3):
            vn = vn.index_add(0, self.t_pos_idx[:, k], n)
        return torch.nn.functional.normalize(vn, dim=-1, eps=1e-12)
