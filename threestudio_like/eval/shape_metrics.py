"""Geometry metrics against a ground truth: inside tests, volumetric IoU, Chamfer distance, F-score,
normal consistency.

``winding_number`` (generalised winding number by solid angles, Van Oosterom & Strackee) is ≈ 1
inside a closed outward-oriented mesh and ≈ 0 outside, robust to small holes; ``mesh_inside``
thresholds it at 0.5 (cost ∝ points × faces). ``grid_inside`` gives the same answer for a closed
mesh on a whole grid at a cost ∝ the grid columns in the faces' bounding boxes (signed ray
crossings along each axis, majority of the three). ``volumetric_iou`` compares two inside-functions on a regular grid of
points in a box; ``chamfer_distance`` is the symmetric mean nearest-neighbour distance between
two point sets (surface samples), ``fscore`` the F-score of two point sets at a distance and
``normal_consistency`` the agreement of their normals at nearest neighbours.
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


def grid_axis(resolution: int, extent: float) -> Tensor:
    """(R,) cell centres of ``resolution`` cells over [-extent, extent]."""
    return (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * extent - extent


def grid_points(resolution: int, extent: float) -> Tensor:
    """(R³,3) cell centres of a regular grid over [-extent, extent]³ (x slowest, z fastest)."""
    axis = grid_axis(resolution, extent)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def _edge_function(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    """(b − a) × (p − a) in 2-D, evaluated from the edge's lower endpoint (by y, then x) so that
    the two triangles sharing an edge get exactly opposite values; a, b, p: (N,2) → (N,)."""
    swap = (a[:, 1] > b[:, 1]) | ((a[:, 1] == b[:, 1]) & (a[:, 0] > b[:, 0]))
    lo, hi = torch.where(swap[:, None], b, a), torch.where(swap[:, None], a, b)
    d = hi - lo
    e = d[:, 0] * (p[:, 1] - lo[:, 1]) - d[:, 1] * (p[:, 0] - lo[:, 0])
    return torch.where(swap, -e, e)


def _columns_in_boxes(lo: Tensor, hi: Tensor, axis: Tensor) -> tuple[Tensor, Tensor]:
    """(column, face) pairs of the grid columns ``axis × axis`` (index x·R + y) inside each face's
    closed (x, y) bounding box [lo, hi] (F,2): the only columns that can cross it."""
    r = len(axis)
    first = torch.searchsorted(axis, lo, right=False)  # first axis value ≥ lo
    count = (torch.searchsorted(axis, hi, right=True) - first).clamp(min=0)  # values ≤ hi
    n = count[:, 0] * count[:, 1]
    face = torch.repeat_interleave(torch.arange(len(lo)), n)
    k = torch.arange(int(n.sum())) - torch.repeat_interleave(n.cumsum(0) - n, n)  # index within the box
    ny = count[face, 1]
    ix, iy = first[face, 0] + k // ny.clamp(min=1), first[face, 1] + k % ny.clamp(min=1)
    return ix * r + iy, face


def column_winding(mesh: Mesh, axis: Tensor, chunk: int = 1 << 22) -> Tensor:
    """(R,R,R) winding numbers (int) of a closed outward-oriented mesh at the grid points
    ``axis × axis × axis`` (indexed x, y, z; ``axis`` increasing): per (x, y) column, the sum of
    sign(n_z) over the surface crossings above each point. A column through an edge or a vertex
    counts as if moved by (+ε, +ε²) in (x, y) (a tie rule on the edge functions), so it is crossed
    exactly once. Only the columns in each face's bounding box are tested, ``chunk`` pairs at a time."""
    v = mesh.v_pos.detach().double()
    tri = v[mesh.t_pos_idx]
    # signed doubled projected area (= n_z of the face): edge 0→1 evaluated at vertex 2
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (tri[:, 1, 1] - tri[:, 0, 1]) * (
        tri[:, 2, 0] - tri[:, 0, 0]
    )
    keep = area != 0  # faces seen edge-on are never crossed by a perturbed column
    tri, sign = tri[keep], area[keep].sign()
    ccw = torch.where((sign > 0)[:, None, None], tri, tri[:, [0, 2, 1]])  # counter-clockwise in (x, y)
    axis64 = axis.double()
    r = len(axis)
    cols = torch.stack(torch.meshgrid(axis64, axis64, indexing="ij"), -1).reshape(-1, 2)
    delta = torch.zeros(r * r, r + 1, dtype=torch.long)
    pair_col, pair_face = _columns_in_boxes(ccw[:, :, :2].amin(1), ccw[:, :, :2].amax(1), axis64)
    for start in range(0, len(pair_col), chunk):
        col, face = pair_col[start : start + chunk], pair_face[start : start + chunk]
        p, f = cols[col], ccw[face]
        inside = torch.ones(len(col), dtype=torch.bool)
        weights = []
        for i, j, _k in ((1, 2, 0), (2, 0, 1), (0, 1, 2)):  # edge i→j, opposite vertex _k
            a, b = f[:, i, :2], f[:, j, :2]
            e = _edge_function(a, b, p)
            d = b - a
            owns = (d[:, 1] < 0) | ((d[:, 1] == 0) & (d[:, 0] > 0))  # where e = 0, (+ε, +ε²) moves p inside
            inside &= (e > 0) | ((e == 0) & owns)
            weights.append(e)
        w = torch.stack(weights, -1)[inside]  # barycentric weights (unnormalised)
        col, f = col[inside], f[inside]
        z = (w * f[:, :, 2]).sum(-1) / w.sum(-1)
        below = torch.searchsorted(axis64, z)  # grid points strictly below the crossing
        delta.index_put_((col, below), sign[face[inside]].long(), accumulate=True)
    # winding at point k = Σ of signs of crossings with more than k points below them
    wind = delta.flip(-1).cumsum(-1).flip(-1)[:, 1:]
    return wind.reshape(r, r, r)


def grid_inside(mesh: Mesh, resolution: int, extent: float) -> Tensor:
    """(R³,) bool, ordered as :func:`grid_points`: inside the mesh by :func:`column_winding`
    along z, x and y (cyclic turns of the coordinates), the majority of the three — equal to
    ``mesh_inside(mesh)(grid_points(...))`` for a closed mesh, robust to a small hole."""
    axis = grid_axis(resolution, extent)
    votes = torch.zeros(resolution, resolution, resolution, dtype=torch.long)
    for turn in range(3):  # turn 0: rays along z; 1: along x; 2: along y
        w = column_winding(Mesh(mesh.v_pos.roll(-turn, dims=-1), mesh.t_pos_idx), axis)  # in rolled coordinates
        votes += (w > 0).long().permute(*[(d - turn) % 3 for d in range(3)])
    return (votes >= 2).reshape(-1)


def volumetric_iou(inside_a: InsideFn, inside_b: InsideFn, resolution: int = 32, extent: float = 1.0) -> float:
    """|A ∩ B| / |A ∪ B| on a grid of ``resolution``³ points over [-extent, extent]³."""
    p = grid_points(resolution, extent)
    a, b = inside_a(p), inside_b(p)
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def nearest_neighbours(p: Tensor, q: Tensor, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """For each of the (N,3) points ``p``: the distance (N,) to its nearest point of (M,3) ``q``
    and that point's index (N,)."""
    found = [torch.cdist(c, q).min(dim=1) for c in p.split(chunk)]
    return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])


def chamfer_distance(x: Tensor, y: Tensor, chunk: int = 2048) -> float:
    """Symmetric mean nearest-neighbour distance between point sets (N,3) and (M,3)."""
    return float(0.5 * (nearest_neighbours(x, y, chunk)[0].mean() + nearest_neighbours(y, x, chunk)[0].mean()))


def fscore(pred: Tensor, gt: Tensor, tau: float, chunk: int = 2048) -> float:
    """F-score at distance ``tau`` (Tatarchenko et al. 2019): the harmonic mean of precision (the
    fraction of ``pred`` points within ``tau`` of ``gt``) and recall (of ``gt`` points within
    ``tau`` of ``pred``); 0 when both are 0."""
    precision = float((nearest_neighbours(pred, gt, chunk)[0] < tau).double().mean())
    recall = float((nearest_neighbours(gt, pred, chunk)[0] < tau).double().mean())
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def normal_consistency(x: Tensor, x_normals: Tensor, y: Tensor, y_normals: Tensor, chunk: int = 2048) -> float:
    """Mean ``|cos|`` between the unit normal (N,3) at each point of (N,3) ``x`` and the normal at
    its nearest point of ``y``, averaged with the same from ``y`` to ``x`` (Occupancy Networks'
    normal consistency: 1 for surfaces that agree; orientation is ignored)."""

    def one_way(p: Tensor, pn: Tensor, q: Tensor, qn: Tensor) -> Tensor:
        return (pn * qn[nearest_neighbours(p, q, chunk)[1]]).sum(-1).abs().mean()

    return float(0.5 * (one_way(x, x_normals, y, y_normals) + one_way(y, y_normals, x, x_normals)))
