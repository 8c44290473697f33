"""Mesh cleanup: floaters, hidden shells, welding, degenerate faces, decimation, outward orientation."""

import numpy as np
import pytest
import torch
import trimesh

from threestudio_like.export.mesh_ops import (
    clean_mesh,
    count_degenerate_faces,
    decimate,
    orient_outward,
    remove_degenerate_faces,
    remove_enclosed_components,
    remove_small_components,
    signed_volume,
    vertex_components,
    weld_vertices,
)
from threestudio_like.geometry.base import Mesh


def _mesh(tm: trimesh.Trimesh) -> Mesh:
    return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces, dtype=torch.int64))


def _concat(*meshes: Mesh) -> Mesh:
    vs, fs, off = [], [], 0
    for m in meshes:
        vs.append(m.v_pos)
        fs.append(m.t_pos_idx + off)
        off += m.num_vertices
    return Mesh(torch.cat(vs), torch.cat(fs))


def _sphere(subdiv=3, center=(0, 0, 0), radius=1.0) -> Mesh:
    tm = trimesh.creation.icosphere(subdiv, radius=radius)
    tm.apply_translation(center)
    return _mesh(tm)


def test_floaters_removed_by_area_and_by_face_count():
    body = _sphere(3)  # 1280 faces, area ≈ 4π
    box = _mesh(trimesh.creation.box((0.1, 0.1, 0.1)))  # 12 faces, area 0.06
    box.v_pos += torch.tensor([3.0, 0, 0])
    small = _sphere(1, center=(0, 3, 0), radius=0.3)  # 80 faces, area ≈ 1.1 (≈ 8%)
    mesh = _concat(body, box, small)

    out, removed = remove_small_components(mesh, min_area_fraction=0.01)
    assert removed == 1 and out.num_faces == 1280 + 80
    out, removed = remove_small_components(mesh, min_area_fraction=0.1)
    assert removed == 2 and out.num_faces == 1280
    out, removed = remove_small_components(mesh, min_faces=13)
    assert removed == 1 and out.num_faces == 1280 + 80
    assert out.num_vertices == 642 + 42  # unused vertices dropped
    # thresholds that would drop everything keep the largest component
    out, removed = remove_small_components(mesh, min_faces=10**6, min_area_fraction=1.0)
    assert removed == 2 and out.num_faces == 1280
    assert torch.allclose(out.v_pos.norm(dim=1), torch.ones(642), atol=1e-5)


def test_weld_joins_triangle_soup_and_degenerates_dropped():
    sphere = _sphere(2)
    soup = Mesh(sphere.v_pos[sphere.t_pos_idx].reshape(-1, 3), torch.arange(sphere.num_faces * 3).view(-1, 3))
    n_soup, _ = vertex_components(soup.num_vertices, soup.t_pos_idx.numpy())
    assert n_soup == sphere.num_faces
    welded = weld_vertices(soup)
    assert welded.num_vertices == sphere.num_vertices
    assert vertex_components(welded.num_vertices, welded.t_pos_idx.numpy())[0] == 1
    bad = Mesh(sphere.v_pos, torch.cat([sphere.t_pos_idx, torch.tensor([[0, 0, 1], [0, 1, 0]])]))
    assert remove_degenerate_faces(bad).num_faces == sphere.num_faces


def _outward_fraction(mesh: Mesh, center) -> float:
    c = mesh.v_pos[mesh.t_pos_idx].mean(1) - torch.tensor(center, dtype=torch.float32)
    return float(((mesh.face_normals() * c).sum(-1) > 0).float().mean())


def test_orient_outward_fixes_random_flips_and_inverted_components():
    gen = np.random.default_rng(0)
    a, b = _sphere(3), _sphere(2, center=(4, 0, 0), radius=0.5)
    fa = a.t_pos_idx.clone()
    flip = torch.from_numpy(gen.random(len(fa)) < 0.4)
    fa[flip] = fa[flip][:, [0, 2, 1]]
    fb = b.t_pos_idx[:, [0, 2, 1]]  # b entirely inside-out
    mesh = _concat(Mesh(a.v_pos, fa), Mesh(b.v_pos, fb))
    assert _outward_fraction(Mesh(a.v_pos, fa), (0, 0, 0)) < 0.7

    out, flipped = orient_outward(mesh)
    assert out.num_faces == mesh.num_faces
    volume = trimesh.creation.icosphere(3).volume + trimesh.creation.icosphere(2, radius=0.5).volume
    assert signed_volume(out) == pytest.approx(volume, rel=1e-5)
    na = a.num_faces
    assert _outward_fraction(Mesh(out.v_pos, out.t_pos_idx[:na]), (0, 0, 0)) == 1.0
    assert _outward_fraction(Mesh(out.v_pos, out.t_pos_idx[na:]), (4, 0, 0)) == 1.0
    assert flipped >= 1
    # same triangles, only re-ordered corners
    assert torch.equal(out.t_pos_idx.sort(1).values, mesh.t_pos_idx.sort(1).values)


def test_orient_outward_open_patch_faces_away_from_centre():
    sphere = _sphere(3)
    keep = sphere.v_pos[sphere.t_pos_idx].mean(1)[:, 2] > 0.2  # a cap, not closed
    cap = Mesh(sphere.v_pos, sphere.t_pos_idx[keep][:, [0, 2, 1]])  # pointing inward
    out, _ = orient_outward(cap)
    assert _outward_fraction(out, (0, 0, 0)) == 1.0


def test_decimate_reaches_target_and_keeps_shape():
    sphere = _sphere(4)  # 5120 faces
    out = decimate(sphere, 600)
    assert 300 <= out.num_faces <= 600
    r = out.v_pos.norm(dim=1)
    assert float((r - 1).abs().max()) < 0.05
    cleaned, stats = clean_mesh(sphere, decimate_target=600)
    assert stats.faces_out == cleaned.num_faces <= 600
    assert signed_volume(cleaned) == pytest.approx(4 / 3 * np.pi, rel=0.1)
    assert decimate(sphere, 10**6) is sphere


def test_clean_mesh_keeps_device_and_dtype_and_reports():
    mesh = _concat(_sphere(2), _sphere(0, center=(5, 0, 0), radius=0.05))
    mesh = Mesh(mesh.v_pos.double(), mesh.t_pos_idx)
    out, stats = clean_mesh(mesh, min_component_area_fraction=0.01)
    assert out.v_pos.dtype == torch.float64 and out.t_pos_idx.dtype == torch.int64
    assert stats.components_removed == 1 and stats.faces_removed_as_floaters == 20
    assert stats.faces_in == 320 + 20 and stats.faces_out == 320


def _vertex_set(mesh: Mesh) -> set:
    """The positions of the vertices faces use (rounded)."""
    used = mesh.v_pos.double().numpy()[np.unique(mesh.t_pos_idx.numpy())]
    return {tuple(p) for p in np.round(used, 5)}


def test_enclosed_components_removed_and_outside_ones_kept():
    """Ground truth by construction: a sphere with a hidden shell inside (and an inside-out one
    inside that), a torus around the sphere (the sphere sits in its hole: outside, though inside
    its bounding box) with a small ball inside its tube, and an open cap with a ball under it."""
    body = _sphere(3)
    hidden = _sphere(2, radius=0.5)
    nested = _sphere(1, center=(0.1, 0, 0), radius=0.2)
    nested = Mesh(nested.v_pos, nested.t_pos_idx[:, [0, 2, 1]])  # inverted winding: still enclosed
    torus = _mesh(trimesh.creation.torus(3.0, 0.5))
    in_tube = _sphere(1, center=(3.0, 0, 0), radius=0.2)
    cap_src = _sphere(3, center=(0, 0, 8))
    cap = Mesh(cap_src.v_pos, cap_src.t_pos_idx[cap_src.v_pos[cap_src.t_pos_idx].mean(1)[:, 2] > 8.0])  # open
    under_cap = _sphere(1, center=(0, 0, 8.5), radius=0.2)
    mesh = _concat(body, hidden, nested, torus, in_tube, cap, under_cap)

    out, removed = remove_enclosed_components(mesh)
    assert removed == 3
    assert _vertex_set(out) == _vertex_set(_concat(body, torus, cap, under_cap))
    cleaned, stats = clean_mesh(mesh)
    assert (stats.components_enclosed, stats.components_out) == (3, 4)
    assert _vertex_set(cleaned) == _vertex_set(out)


def test_a_shell_inside_a_body_with_a_tiny_hole_is_enclosed():
    """A body that lost one face (3 open edges, as a surface after degenerate-face removal can
    have) still encloses a shell inside (the open cap of the test above is still open); with no
    open edge allowed it would not."""
    body = _sphere(3)
    holed = Mesh(body.v_pos, body.t_pos_idx[1:])
    hidden = _sphere(2, radius=0.5)
    assert remove_enclosed_components(_concat(holed, hidden))[1] == 1
    assert remove_enclosed_components(_concat(holed, hidden), open_fraction=0.0)[1] == 0


def _with_degenerate_faces(n_caps: int = 6, n_needles: int = 6) -> tuple[Mesh, Mesh, int]:
    """An icosphere (closed) with exact zero-area caps — an edge ``ab`` split at its midpoint
    ``c`` on one side, the face ``(a, b, c)`` closing the gap — and needles — a face split at a
    point 1e-6 from one of its corners —, spread over faces that share no vertex. The surface is
    unchanged and stays closed. Returns (mesh, original, number of caps)."""
    sphere = _sphere(2)
    v, f = sphere.v_pos.double().numpy(), sphere.t_pos_idx.numpy()
    half = {(int(a), int(b)): i for i, face in enumerate(f) for a, b in zip(face, np.roll(face, -1))}
    used: set[int] = set()
    picked = []
    for i, face in enumerate(f):
        j = half[(int(face[1]), int(face[0]))]
        ring = set(face) | set(f[j])
        if not ring & used:
            used |= ring
            picked.append(i)
        if len(picked) == n_caps + n_needles:
            break
    v, faces, drop = list(v), [], set()
    for n, i in enumerate(picked):
        a, b, x = (int(k) for k in f[i])
        drop.add(i)
        if n < n_caps:
            v.append((v[a] + v[b]) / 2)
            c = len(v) - 1
            faces += [(a, c, x), (c, b, x), (a, b, c)]
        else:
            v.append(v[a] + 1e-6 * (v[b] + v[x] - 2 * v[a]))
            p = len(v) - 1
            faces += [(a, b, p), (b, x, p), (x, a, p)]
    faces += [tuple(face) for k, face in enumerate(f) if k not in drop]
    mesh = Mesh(torch.tensor(np.array(v)), torch.tensor(faces, dtype=torch.int64))
    return mesh, sphere, n_caps


def _closed(mesh: Mesh) -> bool:
    """Every directed edge appears once and its reverse once (closed, consistently wound)."""
    f = mesh.t_pos_idx.numpy()
    half = [tuple(e) for e in np.stack([f, np.roll(f, -1, axis=1)], axis=2).reshape(-1, 2).tolist()]
    return len(set(half)) == len(half) and all((b, a) in set(half) for a, b in half)


def test_degenerate_faces_fixed_without_opening_the_surface():
    mesh, sphere, n_caps = _with_degenerate_faces()
    assert _closed(mesh) and count_degenerate_faces(mesh) == n_caps + 2 * 6  # a cap each, two needle faces each
    out = remove_degenerate_faces(mesh)
    assert count_degenerate_faces(out) == 0
    assert _closed(out)  # dropping the zero-area faces instead would leave holes
    assert out.num_faces == sphere.num_faces + 2 * n_caps  # caps: flipped, not removed; needles: collapsed
    assert signed_volume(out) == pytest.approx(signed_volume(sphere), rel=1e-6)
    # the surface did not move: every vertex is an original one or an edge midpoint (within 1e-6)
    v0 = sphere.v_pos.double().numpy()
    f0 = sphere.t_pos_idx.numpy()
    allowed = np.concatenate([v0, (v0[f0] + v0[np.roll(f0, -1, axis=1)]).reshape(-1, 3) / 2])
    d = np.linalg.norm(out.v_pos.double().numpy()[:, None] - allowed[None], axis=2).min(1)
    assert d.max() < 1e-6


def test_sliver_caps_slightly_off_the_edge_are_flipped():
    """A cap whose apex sits 1e-5 off its edge (a sliver, not zero area) is flipped away too; the
    volume changes by at most that height times the edge length."""
    mesh, sphere, n_caps = _with_degenerate_faces(n_caps=4, n_needles=0)
    v = mesh.v_pos.clone()
    v[sphere.num_vertices :] *= 1 + 1e-5  # the inserted midpoints, pushed outward
    out = remove_degenerate_faces(Mesh(v, mesh.t_pos_idx))
    assert count_degenerate_faces(Mesh(v, mesh.t_pos_idx)) == n_caps and count_degenerate_faces(out) == 0
    assert _closed(out) and out.num_faces == sphere.num_faces + 2 * n_caps


def test_clean_mesh_leaves_one_clean_component():
    """A demo-like mesh: a body with degenerate faces, two hidden shells (one small enough to be
    a floater too: counted as enclosed) and a floater outside → one closed component."""
    mesh, sphere, _ = _with_degenerate_faces()
    hidden = (_sphere(1, radius=0.3), _sphere(0, center=(0.2, 0.2, 0), radius=0.1))
    mesh = _concat(mesh, *hidden, _sphere(0, center=(3, 0, 0), radius=0.1))
    out, stats = clean_mesh(mesh, min_component_area_fraction=0.01)
    assert (stats.components_out, stats.components_enclosed, stats.components_removed) == (1, 2, 1)
    assert stats.degenerate_faces == 6 + 12
    assert _closed(out) and count_degenerate_faces(out) == 0
    assert signed_volume(out) == pytest.approx(signed_volume(sphere), rel=1e-6)
