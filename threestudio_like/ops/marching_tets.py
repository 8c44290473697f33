"""Differentiable marching tetrahedra (DMTet's surface extraction), pure torch.

``marching_tets(vertices (V,3), sdf (V,), tets (T,4)) -> Mesh``. A vertex is *inside* where
``sdf < 0`` (DMTet's convention). Each tet edge whose endpoints are on different sides gets one
surface vertex at the zero crossing of the linear interpolation,

    p = p_a + (p_b - p_a) * s_a / (s_a - s_b),

shared by every tet that holds the edge (edges are deduplicated), so the result is watertight on
a conforming grid. ``p`` is differentiable with respect to both the vertex positions and the SDF
values. A tet with one (or three) inside vertices gives one triangle, one with two gives two;
triangles are counter-clockwise seen from outside (normals point towards positive SDF) provided
the tets are positively oriented (``det(v1-v0, v2-v0, v3-v0) > 0``, as :mod:`.tet_grid` makes them).
No CUDA twin is needed: every step is a gather, a sort or a ``unique`` that runs on any device.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..geometry.base import Mesh

# local edges of a tet, (a, b) vertex slots; edge e of the table below refers to this order
TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


@functools.lru_cache(maxsize=1)
def triangle_table() -> tuple[Tensor, Tensor]:
    """``(table (16,2,3) int64, count (16,) int64)``: for each inside-pattern code
    ``sum(inside_i << i)``, up to two triangles as local edge indices (``-1`` unused), oriented
    outward on the positively oriented reference tet (and so on every positive tet)."""
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    table = torch.full((16, 2, 3), -1, dtype=torch.int64)
    count = torch.zeros(16, dtype=torch.int64)
    for code in range(1, 15):
        inside = [bool(code >> i & 1) for i in range(4)]
        crossing = [e for e, (a, b) in enumerate(TET_EDGES) if inside[a] != inside[b]]
        if len(crossing) == 3:
            polys = [crossing]
        else:  # two inside, two outside: order the four crossing edges around the quad
            loop = [crossing[0]]
            while len(loop) < 4:
                last = set(TET_EDGES[loop[-1]])
                loop.append(next(e for e in crossing if e not in loop and set(TET_EDGES[e]) & last))
            polys = [[loop[0], loop[1], loop[2]], [loop[0], loop[2], loop[3]]]
        inside_c = ref[[i for i in range(4) if inside[i]]].mean(0)
        outside_c = ref[[i for i in range(4) if not inside[i]]].mean(0)
        for t, poly in enumerate(polys):
            pts = torch.stack([ref[list(TET_EDGES[e])].mean(0) for e in poly])
            normal = torch.linalg.cross(pts[1] - pts[0], pts[2] - pts[0], dim=-1)
            if torch.dot(normal, outside_c - inside_c) < 0:
                poly = [poly[0], poly[2], poly[1]]
            table[code, t] = torch.tensor(poly)
        count[code] = len(polys)
    return table, count


def marching_tets(vertices: Tensor, sdf: Tensor, tets: Tensor) -> Mesh:
    """Surface ``sdf = 0`` of a tet mesh. vertices (V,3) float, sdf (V,) (or (V,1)), tets (T,4)
    int64 → :class:`Mesh` (empty: 0 vertices and 0 faces when no tet changes sign)."""
    sdf = sdf.reshape(-1)
    device = vertices.device
    n_vertices = vertices.shape[0]
    inside = sdf < 0
    occ = inside[tets]  # (T,4)
    code = (occ.long() << torch.arange(4, device=device)).sum(-1)
    valid = (code > 0) & (code < 15)
    tets_v, code_v, occ_v = tets[valid], code[valid], occ[valid]  # (M,4), (M,), (M,4)

    edge_slots = torch.tensor(TET_EDGES, device=device)  # (6,2)
    ends = tets_v[:, edge_slots]  # (M,6,2)
    crossing = occ_v[:, edge_slots[:, 0]] != occ_v[:, edge_slots[:, 1]]  # (M,6)
    lo, hi = ends.min(-1).values, ends.max(-1).values
    keys, vertex_of_edge = torch.unique((lo * n_vertices + hi)[crossing], return_inverse=True)
    edge_vertex = torch.full(crossing.shape, -1, dtype=torch.int64, device=device)
    edge_vertex[crossing] = vertex_of_edge

    a, b = keys // n_vertices, keys % n_vertices
    sa, sb = sdf[a], sdf[b]
    w = (sa / (sa - sb)).unsqueeze(-1)
    v_pos = vertices[a] + (vertices[b] - vertices[a]) * w  # (E,3)

    table, count = (t.to(device) for t in triangle_table())
    tri_edges = table[code_v]  # (M,2,3)
    used = torch.arange(2, device=device) < count[code_v].unsqueeze(-1)  # (M,2)
    faces = torch.gather(edge_vertex.unsqueeze(1).expand(-1, 2, -1), 2, tri_edges.clamp(min=0))
    return Mesh(v_pos=v_pos, t_pos_idx=faces[used])
