"""Geometry metrics against a ground truth: inside tests, volumetric IoU, Chamfer distance.

``winding_number`` (generalised winding number by solid angles, Van Oosterom & Strackee) is ≈ 1
inside a closed outward-oriented mesh and ≈ 0 outside, robust to small holes; ``mesh_inside``
thresholds it at 0.5. ``volumetric_iou`` compares two inside-functions on a regular grid of
points in a box; ``chamfer_distance`` is the symmetric mean nearest-neighbour distance between
two point sets (surface samples).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..geometry.base import Mesh

InsideFn = Callable[[Tensor], Tensor]
"""(N,3) points → (N,) bool."""


def winding_number(points: Tensor, v_pos: Tensor, faces: Tensor, chunk: int = 256) -> Tensor:
    """(N,3) points, mesh (V,3)/(F,3) → (N,) generalised winding numbers (float64)."""
    tri = v_pos.detach().double()[faces]
    out = []
    for p in points.double().split(chunk):
        a, b, c = (tri[None, :, k] - p[:, None] for k in range(3))
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.linalg.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append((2 * torch.atan2(det, den)).sum(-1) / (4 * math.pi))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def mesh_inside(mesh: Mesh) -> InsideFn:
    return lambda p: winding_number(p, mesh.v_pos, mesh.t_pos_idx) > 0.5


def grid_points(resolution: int, extent: float) -> Tensor:
    """(R³,3) cell centres of a regular grid over [-extent, extent]³."""
    axis = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * extent - extent
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def volumetric_iou(inside_a: InsideFn, inside_b: InsideFn, resolution: int = 32, extent: float = 1.0) -> float:
    """|A ∩ B| / |A ∪ B| on a grid of ``resolution``³ points over [-extent, extent]³."""
    p = grid_points(resolution, extent)
    a, b = inside_a(p), inside_b(p)
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def chamfer_distance(x: Tensor, y: Tensor, chunk: int = 2048) -> float:
    """Symmetric mean nearest-neighbour distance between point sets (N,3) and (M,3)."""
    def one_way(p: Tensor, q: Tensor) -> Tensor:
        return torch.cat([torch.cdist(c, q).min(dim=1).values for c in p.split(chunk)]).mean()

    return float(0.5 * (one_way(x, y) + one_way(y, x)))


def sample_surface(mesh: Mesh, n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n,3) points uniformly on the mesh surface (area-weighted)."""
    v = mesh.v_pos.detach()[mesh.t_pos_idx]
    area = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1).norm(dim=-1)
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    u, w = torch.rand(n, generator=generator), torch.rand(n, generator=generator)
    flip = u + w > 1
    u, w = torch.where(flip, 1 - u, u), torch.where(flip, 1 - w, w)
    t = v[face]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])
