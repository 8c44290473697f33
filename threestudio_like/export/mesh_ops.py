"""Mesh cleanup before export: weld, fix degenerate faces, remove hidden shells and floaters,
decimate, orient.

All functions take and return a :class:`~threestudio_like.geometry.base.Mesh` (``v_pos`` (V,3),
``t_pos_idx`` (F,3)); the work is done in numpy/scipy on the CPU and the result comes back on the
input's device and dtype. UV atlases are not carried through (cleanup runs before unwrapping).

- :func:`weld_vertices` merges vertices closer than a tolerance, so that a triangle soup becomes
  connected (components are found through shared vertices).
- :func:`remove_degenerate_faces` gets rid of zero-area and sliver faces without opening the
  surface: needles (a short edge) by collapsing that edge, caps (a vertex lying on the opposite
  edge) by flipping that edge; what neither can fix (non-manifold spots) is deleted.
- :func:`remove_enclosed_components` removes components that lie inside another, closed
  component (hidden shells: invisible, but they break 3-D printing and booleans), by the
  generalized winding number of their points.
- :func:`remove_small_components` removes floaters: vertex-connected components with fewer than
  ``min_faces`` faces, fewer than ``min_face_fraction`` of all faces or less than
  ``min_area_fraction`` of the total area. The largest component (by area) is always kept, so a
  non-empty mesh never comes out empty. (Also used on every isosurface, ``geometry/isosurface.py``.)
- :func:`decimate` reduces the face count to at most ``target_faces`` by vertex clustering on a
  grid (bisection on the cell size). Pure numpy; coarser than quadric edge collapse.
- :func:`orient_outward` makes the winding consistent across each edge-connected patch (faces
  sharing an edge traverse it in opposite directions), then flips every patch whose signed volume
  about the mesh centroid is negative, so face normals (right-hand rule) point outward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components
from torch import Tensor

from ..geometry.base import Mesh


@dataclass
class CleanupStats:
    """What :func:`clean_mesh` did: counts before/after and per step."""

    faces_in: int
    faces_out: int
    vertices_out: int
    components_out: int
    """Vertex-connected components of the result."""
    degenerate_faces: int
    """Zero-area or sliver faces found (collapsed, flipped or deleted)."""
    components_enclosed: int
    """Components removed because another, closed component encloses them."""
    components_removed: int
    """Components removed as floaters (too small)."""
    faces_removed_as_floaters: int
    patches_flipped: int


def _to_numpy(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    return (mesh.v_pos.detach().cpu().double().numpy(), mesh.t_pos_idx.detach().cpu().long().numpy())


def _to_mesh(v: np.ndarray, f: np.ndarray, like: Mesh) -> Mesh:
    ref: Tensor = like.v_pos
    return Mesh(
        v_pos=ref.new_tensor(v.astype(np.float64)).to(ref.dtype),
        t_pos_idx=like.t_pos_idx.new_tensor(f.astype(np.int64)).long(),
    )


def _compact(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unreferenced vertices and renumber the faces."""
    used = np.zeros(len(v), dtype=bool)
    used[f.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return v[used], remap[f].reshape(-1, 3)


def _face_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    p = v[f]
    return 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)


def weld_vertices(mesh: Mesh, tolerance: float = 1e-7) -> Mesh:
    """Merge vertices that fall in the same cell of a grid of ``tolerance`` × bbox diagonal."""
    v, f = _to_numpy(mesh)
    if len(f) == 0:
        return mesh
    diag = float(np.linalg.norm(v.max(0) - v.min(0))) or 1.0
    keys = np.round((v - v.min(0)) / (tolerance * diag)).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    v_new, f_new = _compact(v[first], inverse.reshape(-1)[f])
    return _to_mesh(v_new, f_new, mesh)


def _edges(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges ``(E,2)`` (smaller index first) and the number of faces on each."""
    pairs = np.sort(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    edges, count = np.unique(pairs, axis=0, return_counts=True)
    return edges, count


def _adjacency(n_vertices: int, edges: np.ndarray) -> sp.csr_matrix:
    rows, cols = np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]]
    return sp.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(n_vertices,) * 2)


def _face_shape(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per face: smallest altitude (0 for a repeated vertex), index k of the shortest edge
    (``f[k]`` → ``f[k+1]``) and its length."""
    edge_len = np.linalg.norm(v[f[:, [1, 2, 0]]] - v[f], axis=2)
    altitude = 2 * _face_areas(v, f) / np.maximum(edge_len.max(1), 1e-300)
    return altitude, edge_len.argmin(1), edge_len.min(1)


def _altitude(p: np.ndarray) -> float:
    """Smallest altitude of the triangle with corners ``p`` (3,3)."""
    longest = max(np.linalg.norm(p[1] - p[0]), np.linalg.norm(p[2] - p[1]), np.linalg.norm(p[0] - p[2]))
    return float(np.linalg.norm(np.cross(p[1] - p[0], p[2] - p[0])) / max(longest, 1e-300))


def _collapse_needles(v: np.ndarray, f: np.ndarray, min_length: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """One round of edge collapses. A degenerate face (altitude < ``min_length``) is a needle when
    its shortest edge is below ``min_length`` or below twice its altitude (a tiny face); that
    edge merges into its midpoint — shortest first, non-overlapping 1-rings, and only where the
    two endpoints share exactly the two neighbours of the edge's faces (the link condition: the
    collapse keeps the surface a manifold)."""
    altitude, k, shortest = _face_shape(v, f)
    needle = (altitude < min_length) & ((shortest < min_length) | (shortest < 2 * altitude))
    if not needle.any():
        return v, f, False
    rows = np.flatnonzero(needle)
    cand = np.sort(np.stack([f[rows, k[rows]], f[rows, (k[rows] + 1) % 3]], 1), axis=1)
    cand, first = np.unique(cand, axis=0, return_index=True)
    cand = cand[np.argsort(shortest[rows][first], kind="stable")]
    edges, count = _edges(f)
    adj = _adjacency(len(v), edges)
    common = np.asarray(adj[cand[:, 0]].multiply(adj[cand[:, 1]]).sum(1)).ravel()
    on_edge = dict(zip(map(tuple, edges.tolist()), count.tolist()))
    cand = cand[(common == 2) & np.array([on_edge[tuple(e)] == 2 for e in cand.tolist()], dtype=bool)]
    locked = np.zeros(len(v), dtype=bool)
    remap = np.arange(len(v))
    v = v.copy()
    for a, b in cand:
        ring = np.r_[
            a, b, adj.indices[adj.indptr[a] : adj.indptr[a + 1]], adj.indices[adj.indptr[b] : adj.indptr[b + 1]]
        ]
        if locked[ring].any():
            continue
        locked[ring] = True
        v[a] = (v[a] + v[b]) / 2
        remap[b] = a
    f = remap[f]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return v, f[keep], bool(locked.any())


def _flip_caps(v: np.ndarray, f: np.ndarray, min_length: float) -> tuple[np.ndarray, bool]:
    """One round of edge flips. A cap ``(a, b, c)`` (altitude < ``min_length``, not a needle: its
    vertex ``c`` lies near its longest edge ``ab``) and its consistently oriented neighbour
    ``(b, a, d)`` become ``(c, a, d)`` and ``(c, d, b)`` — nearly the same surface, without the
    flat face — when that raises the pair's smallest altitude and ``cd`` is not already an edge."""
    altitude, _, shortest = _face_shape(v, f)
    caps = np.flatnonzero((altitude < min_length) & (shortest >= min_length) & (shortest >= 2 * altitude))
    if len(caps) == 0:
        return f, False
    half = {(int(x), int(y)): i for i, face in enumerate(f.tolist()) for x, y in zip(face, face[1:] + face[:1])}
    existing = set(map(tuple, _edges(f)[0].tolist()))
    used = np.zeros(len(f), dtype=bool)
    f = f.copy()
    for i in caps:
        edge_len = np.linalg.norm(v[np.roll(f[i], -1)] - v[f[i]], axis=1)
        a, b, c = (int(x) for x in np.roll(f[i], -int(np.argmax(edge_len))))
        j = half.get((b, a))
        if j is None or used[i] or used[j]:
            continue
        d = int(next(x for x in f[j] if x not in (a, b)))
        if d == c or (min(c, d), max(c, d)) in existing:
            continue
        if min(_altitude(v[[c, a, d]]), _altitude(v[[c, d, b]])) <= min(altitude[i], altitude[j]):
            continue
        f[i], f[j] = (c, a, d), (c, d, b)
        used[i] = used[j] = True
        existing.add((min(c, d), max(c, d)))
    return f, bool(used.any())


def remove_degenerate_faces(mesh: Mesh, tolerance: float = 0.01, max_rounds: int = 20) -> Mesh:
    """Fix faces with a repeated vertex or an altitude below ``tolerance`` × the median edge
    length: collapse needles, flip caps (see :func:`_collapse_needles`, :func:`_flip_caps`),
    delete what neither could fix (non-manifold spots), then drop unreferenced vertices. A closed
    manifold stays closed wherever the collapses and flips apply."""
    v, f = _to_numpy(mesh)
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    if len(f) == 0:
        return _to_mesh(*_compact(v, f), mesh)
    min_length = tolerance * float(np.median(np.linalg.norm(v[f[:, [1, 2, 0]]] - v[f], axis=2)))
    for _ in range(max_rounds):
        v, f, collapsed = _collapse_needles(v, f, min_length)
        f, flipped = _flip_caps(v, f, min_length)
        if not (collapsed or flipped):
            break
    v_new, f_new = _compact(v, f[_face_shape(v, f)[0] >= min_length])
    return _to_mesh(v_new, f_new, mesh)


def count_degenerate_faces(mesh: Mesh, tolerance: float = 0.01) -> int:
    """Faces :func:`remove_degenerate_faces` would fix (same criterion)."""
    v, f = _to_numpy(mesh)
    if len(f) == 0:
        return 0
    min_length = tolerance * float(np.median(np.linalg.norm(v[f[:, [1, 2, 0]]] - v[f], axis=2)))
    return int((_face_shape(v, f)[0] < min_length).sum())


def winding_numbers(points: np.ndarray, v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Generalized winding number (Jacobson et al. 2013) of ``points`` (P,3) with respect to the
    triangles ``v[f]``: the signed solid angle they subtend over 4π (Van Oosterom–Strackee), ±1
    inside a closed surface, 0 outside."""
    out = np.zeros(len(points))
    step = max(1, 2_000_000 // max(9 * len(f), 1))  # points per chunk: (P,F,3,3) arrays of ≤ 16 MB
    for start in range(0, len(points), step):
        p = points[start : start + step, None, None, :]
        abc = v[f][None] - p  # (P,F,3,3)
        a, b, c = abc[..., 0, :], abc[..., 1, :], abc[..., 2, :]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        dot = lambda x, y: np.einsum("pfi,pfi->pf", x, y)  # noqa: E731
        den = la * lb * lc + dot(a, b) * lc + dot(b, c) * la + dot(c, a) * lb
        out[start : start + step] = 2 * np.arctan2(det, den).sum(1) / (4 * np.pi)
    return out


def remove_enclosed_components(mesh: Mesh, n_probe: int = 8, open_fraction: float = 0.01) -> tuple[Mesh, int]:
    """Remove every component that lies inside a larger, closed component.

    Components are vertex-connected; a component is closed when at most ``open_fraction`` of its
    edges lack exactly two faces (a marching-tets surface whose degenerate faces were removed
    can keep a few boundary edges; a hole that small changes the winding number inside by
    ≈ its solid angle / 4π). A component counts as enclosed when its bounding box lies in that of a
    larger (by area) closed component that is kept and most of ``n_probe`` of its vertices have
    ``|winding number| > 0.5`` with respect to it (inside an open bowl it stays below 0.5).
    Returns ``(mesh, number of components removed)``.
    """
    v, f = _to_numpy(mesh)
    if len(f) == 0:
        return mesh, 0
    _, label = np.unique(vertex_components(len(v), f)[1], return_inverse=True)  # components with faces
    n = int(label.max()) + 1
    if n == 1:
        return mesh, 0
    area = np.bincount(label, weights=_face_areas(v, f), minlength=n)
    closed = np.array([(_edges(f[label == c])[1] != 2).mean() <= open_fraction for c in range(n)])
    corners = v[f].reshape(len(f), 9)
    lo = np.stack([np.full(3, np.inf)] * n)
    hi = -lo
    for k in range(3):
        np.minimum.at(lo, label, corners[:, 3 * k : 3 * k + 3])
        np.maximum.at(hi, label, corners[:, 3 * k : 3 * k + 3])
    keep = np.ones(n, dtype=bool)
    order = np.argsort(-area, kind="stable")
    for rank, c in enumerate(order[1:], start=1):
        verts = np.unique(f[label == c])
        probe = v[verts[np.linspace(0, len(verts) - 1, min(n_probe, len(verts))).astype(int)]]
        for outer in order[:rank]:
            if not (keep[outer] and closed[outer] and (lo[outer] <= lo[c]).all() and (hi[c] <= hi[outer]).all()):
                continue
            if np.mean(np.abs(winding_numbers(probe, v, f[label == outer])) > 0.5) > 0.5:
                keep[c] = False
                break
    v_new, f_new = _compact(v, f[keep[label]])
    return _to_mesh(v_new, f_new, mesh), int(n - keep.sum())


def vertex_components(n_vertices: int, f: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, per-face component label) for components joined by shared vertices."""
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    graph = sp.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_vertices,) * 2)
    n, labels = connected_components(graph, directed=False)
    return n, labels[f[:, 0]]


def remove_small_components(
    mesh: Mesh, min_faces: int = 0, min_area_fraction: float = 0.0, min_face_fraction: float = 0.0
) -> tuple[Mesh, int]:
    """Remove components with < ``min_faces`` faces, < ``min_face_fraction`` of all faces or
    < ``min_area_fraction`` of the total area.

    Returns ``(mesh, number of components removed)``. The largest component by area is kept
    whatever the thresholds.
    """
    v, f = _to_numpy(mesh)
    if len(f) == 0:
        return mesh, 0
    n, label = vertex_components(len(v), f)
    faces = np.bincount(label, minlength=n)
    area = np.bincount(label, weights=_face_areas(v, f), minlength=n)
    keep = (faces >= min_faces) & (faces >= min_face_fraction * len(f)) & (area >= min_area_fraction * area.sum())
    keep[np.argmax(area)] = True
    v_new, f_new = _compact(v, f[keep[label]])
    return _to_mesh(v_new, f_new, mesh), int(n - keep.sum())


def decimate(mesh: Mesh, target_faces: int, iterations: int = 24) -> Mesh:
    """At most ``target_faces`` faces by vertex clustering; unchanged if already below target.

    Vertices are snapped to the cells of a cubic grid and each cell's vertices are replaced by
    their mean; faces that collapse (two corners in one cell) or repeat are dropped. The cell
    size is bisected (log scale) to get the largest face count ≤ ``target_faces``.
    """
    v, f = _to_numpy(mesh)
    if target_faces <= 0 or len(f) <= target_faces:
        return mesh
    lo_v, extent = v.min(0), float((v.max(0) - v.min(0)).max()) or 1.0

    def cluster(cell: float) -> tuple[np.ndarray, np.ndarray]:
        keys = np.floor((v - lo_v) / cell).astype(np.int64)
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        counts = np.bincount(inverse)
        centres = np.stack([np.bincount(inverse, weights=v[:, k]) for k in range(3)], 1) / counts[:, None]
        g = inverse[f]
        g = g[(g[:, 0] != g[:, 1]) & (g[:, 1] != g[:, 2]) & (g[:, 0] != g[:, 2])]
        _, first = np.unique(np.sort(g, axis=1), axis=0, return_index=True)
        return _compact(centres, g[np.sort(first)])

    # Cell size `hi` always meets the target (one cell → no faces); `lo` never does.
    lo, hi = extent * 1e-6, extent * 2.0
    best = cluster(hi)
    for _ in range(iterations):
        mid = float(np.sqrt(lo * hi))
        cand = cluster(mid)
        if len(cand[1]) <= target_faces:
            hi, best = mid, cand
        else:
            lo = mid
    return _to_mesh(best[0], best[1], mesh)


def orient_outward(mesh: Mesh) -> tuple[Mesh, int]:
    """Consistent winding per edge-connected patch, each patch's signed volume > 0.

    Returns ``(mesh, number of patches flipped as a whole)``. Faces are only re-ordered
    (``(a, b, c)`` → ``(a, c, b)``), never removed. Edges shared by more than two faces do not
    connect patches; on a non-orientable patch some edges stay inconsistent.
    """
    v, f = _to_numpy(mesh)
    n_f = len(f)
    if n_f == 0:
        return mesh, 0
    # Manifold edges: directed half-edges grouped by their undirected key.
    a = f.reshape(-1)
    b = f[:, [1, 2, 0]].reshape(-1)
    face = np.repeat(np.arange(n_f), 3)
    key = np.minimum(a, b) * (len(v) + 1) + np.maximum(a, b)
    order = np.argsort(key, kind="stable")
    key_s = key[order]
    starts = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
    sizes = np.diff(np.r_[starts, len(key_s)])
    pair = starts[sizes == 2]
    e0, e1 = order[pair], order[pair + 1]
    f0, f1 = face[e0], face[e1]
    flip_rel = (a[e0] == a[e1]).astype(np.int8)  # same direction → one of the two must flip
    valid = f0 != f1
    f0, f1, flip_rel = f0[valid], f1[valid], flip_rel[valid]

    # Spanning forest from a virtual root (index n_f) linked to one face per patch.
    graph = sp.coo_matrix((np.ones(len(f0)), (f0, f1)), shape=(n_f, n_f)).tocsr()
    n_patch, patch = connected_components(graph, directed=False)
    seeds = np.unique(patch, return_index=True)[1]
    rows = np.concatenate([f0, f1, np.full(len(seeds), n_f)])
    cols = np.concatenate([f1, f0, seeds])
    forest = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_f + 1,) * 2).tocsr()
    _, pred = breadth_first_order(forest, n_f, directed=True, return_predecessors=True)
    parent = pred[:n_f]
    # Relative flip of each face with respect to its parent, looked up by pair key.
    pair_key = np.concatenate([f0 * (n_f + 1) + f1, f1 * (n_f + 1) + f0])
    pair_flip = np.concatenate([flip_rel, flip_rel])
    srt = np.argsort(pair_key)
    pair_key, pair_flip = pair_key[srt], pair_flip[srt]
    parity = np.zeros(n_f + 1, dtype=np.int8)
    has_face_parent = (parent >= 0) & (parent < n_f)
    q = np.flatnonzero(has_face_parent) * (n_f + 1) + parent[has_face_parent]
    parity[np.flatnonzero(has_face_parent)] = pair_flip[np.searchsorted(pair_key, q)]
    # Accumulate parity along the path to the root by pointer jumping.
    up = np.r_[np.where(has_face_parent, parent, n_f), n_f]
    while np.any(up[:n_f] != n_f):
        parity = parity ^ parity[up]
        up = up[up]
    flip = parity[:n_f].astype(bool)
    f = np.where(flip[:, None], f[:, [0, 2, 1]], f)

    # Whole-patch flips by signed volume about the area-weighted centroid of the mesh.
    p = v[f]
    areas = _face_areas(v, f)
    origin = (p.mean(1) * areas[:, None]).sum(0) / max(areas.sum(), 1e-30)
    p = p - origin
    vol = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])) / 6.0
    patch_vol = np.bincount(patch, weights=vol, minlength=n_patch)
    inverted = patch_vol < 0
    f = np.where(inverted[patch][:, None], f[:, [0, 2, 1]], f)
    return _to_mesh(v, f, mesh), int(inverted.sum())


def signed_volume(mesh: Mesh) -> float:
    """Signed volume of a closed mesh (positive when faces wind counter-clockwise seen from outside)."""
    v, f = _to_numpy(mesh)
    p = v[f]
    return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0)


def clean_mesh(
    mesh: Mesh,
    min_component_faces: int = 0,
    min_component_area_fraction: float = 0.0,
    decimate_target: int = 0,
    orient: bool = True,
    remove_enclosed: bool = True,
    degenerate_tolerance: float = 0.01,
) -> tuple[Mesh, CleanupStats]:
    """Weld → fix degenerate faces → remove enclosed components → remove floaters → decimate →
    fix degenerate faces → orient outward."""
    faces_in = mesh.num_faces
    out = weld_vertices(mesh)
    n_degenerate = count_degenerate_faces(out, degenerate_tolerance)
    out = remove_degenerate_faces(out, degenerate_tolerance)
    n_enclosed = 0
    if remove_enclosed:
        out, n_enclosed = remove_enclosed_components(out)
    before = out.num_faces
    out, n_removed = remove_small_components(out, min_component_faces, min_component_area_fraction)
    floater_faces = before - out.num_faces
    if decimate_target > 0:
        out = decimate(out, decimate_target)
        n_degenerate += count_degenerate_faces(out, degenerate_tolerance)
        out = remove_degenerate_faces(out, degenerate_tolerance)
    flipped = 0
    if orient:
        out, flipped = orient_outward(out)
    v, f = _to_numpy(out)
    return out, CleanupStats(
        faces_in=faces_in,
        faces_out=out.num_faces,
        vertices_out=out.num_vertices,
        components_out=vertex_components(len(v), f)[0] if len(f) else 0,
        degenerate_faces=n_degenerate,
        components_enclosed=n_enclosed,
        components_removed=n_removed,
        faces_removed_as_floaters=floater_faces,
        patches_flipped=flipped,
    )
