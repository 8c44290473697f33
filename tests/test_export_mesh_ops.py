"""Mesh cleanup: floaters, welding, degenerate faces, decimation, outward orientation."""

import numpy as np
import pytest
import torch
import trimesh

from threestudio_like.export.mesh_ops import (
    clean_mesh,
    decimate,
    orient_outward,
    remove_degenerate_faces,
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
