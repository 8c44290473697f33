"""Tet grid, marching cubes and marching tets against analytic shapes and finite differences."""

from collections import Counter

import numpy as np
import pytest
import torch

from threestudio_like.ops.marching_cubes import marching_cubes
from threestudio_like.ops.marching_tets import marching_tets
from threestudio_like.ops.tet_grid import generate_tet_grid, tet_grid
from threestudio_like.ops.tet_grid import main as tet_grid_main


def _signed_volume(v: torch.Tensor, f: torch.Tensor) -> float:
    t = v.double()[f]
    return float((t[:, 0] * torch.linalg.cross(t[:, 1], t[:, 2], dim=-1)).sum() / 6)


def _outward_fraction(v: torch.Tensor, f: torch.Tensor) -> float:
    t = v[f]
    n = torch.linalg.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], dim=-1)
    return float(((n * t.mean(1)).sum(-1) > 0).float().mean())


def _assert_closed_and_consistent(f: torch.Tensor) -> None:
    """Every directed edge appears once and its reverse once: watertight, consistently oriented."""
    directed = Counter()
    for a, b, c in f.tolist():
        for e in ((a, b), (b, c), (c, a)):
            directed[e] += 1
    assert max(directed.values()) == 1
    assert all(directed.get((b, a), 0) == 1 for (a, b) in directed)


# ---- tet grid ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3])
def test_tet_grid_fills_cube_with_positive_tets(n):
    v, t = generate_tet_grid(n)
    assert v.shape == ((n + 1) ** 3, 3) and t.shape == (6 * n**3, 4)
    assert v.min() == -1 and v.max() == 1
    p = v.double()[t]
    vol = torch.linalg.det(p[:, 1:] - p[:, :1]) / 6
    assert bool((vol > 0).all())
    assert float(vol.sum()) == pytest.approx(8.0, rel=1e-9)
    assert torch.allclose(vol, torch.full_like(vol, 8.0 / (6 * n**3)))


def test_tet_grid_faces_shared_by_two_tets_inside_and_one_on_boundary():
    n = 3
    v, t = generate_tet_grid(n)
    faces = Counter()
    for tet in t.tolist():
        for drop in range(4):
            faces[tuple(sorted(tet[:drop] + tet[drop + 1 :]))] += 1
    on_boundary = lambda face: bool((v[list(face)].abs() == 1).all(0).any())  # noqa: E731  all on one cube face
    for face, count in faces.items():
        assert count == (1 if on_boundary(face) else 2), face
    assert sum(1 for f in faces if on_boundary(f)) == 6 * n * n * 2


def test_tet_grid_cached_and_cli(tmp_path):
    assert tet_grid(2)[1] is tet_grid(2)[1]
    out = tmp_path / "grid.npz"
    tet_grid_main(["--resolution", "2", "--out", str(out)])
    data = np.load(out)
    v, t = generate_tet_grid(2)
    assert np.array_equal(data["vertices"], v.numpy()) and np.array_equal(data["tets"], t.numpy())


# ---- marching cubes ------------------------------------------------------------------------
def test_marching_cubes_sphere_density_radius_and_orientation():
    res, r = 48, 0.6
    axis = torch.linspace(-1, 1, res, dtype=torch.float64)
    p = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    density = 10.0 * (1 - p.norm(dim=-1) / r)  # > 0 inside, linear in the radius
    mesh = marching_cubes(density, 0.0, [-1, -1, -1], [1, 1, 1])
    radii = mesh.v_pos.norm(dim=-1)
    assert float((radii - r).abs().max()) < 0.01
    assert mesh.t_pos_idx.dtype == torch.int64 and mesh.v_pos.dtype == torch.float32
    assert _outward_fraction(mesh.v_pos, mesh.t_pos_idx) == 1.0
    assert _signed_volume(mesh.v_pos, mesh.t_pos_idx) == pytest.approx(4 / 3 * np.pi * r**3, rel=0.02)


def test_marching_cubes_axis_order_and_bbox():
    # ellipsoid with semi-axes (0.3, 0.5, 0.7) around (1, 2, 3) in an off-centre box of different sides
    lo, hi = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([2.0, 3.5, 4.5])
    shape = (41, 51, 61)
    axes = [torch.linspace(float(lo[i]), float(hi[i]), shape[i], dtype=torch.float64) for i in range(3)]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    q = ((x - 1) / 0.3) ** 2 + ((y - 2) / 0.5) ** 2 + ((z - 3) / 0.7) ** 2
    mesh = marching_cubes((1 - q).numpy(), 0.0, lo.tolist(), hi.tolist())
    vmin, vmax = mesh.v_pos.min(0).values, mesh.v_pos.max(0).values
    assert torch.allclose(vmin, torch.tensor([0.7, 1.5, 2.3]), atol=0.01)
    assert torch.allclose(vmax, torch.tensor([1.3, 2.5, 3.7]), atol=0.01)


def test_marching_cubes_empty_grid_gives_empty_mesh():
    mesh = marching_cubes(torch.zeros(4, 4, 4), 0.5, [-1] * 3, [1] * 3)
    assert mesh.num_vertices == 0 and mesh.num_faces == 0


# ---- marching tets -------------------------------------------------------------------------
def test_marching_tets_sphere_radius_orientation_watertight():
    v, t = generate_tet_grid(16)
    r = 0.6
    mesh = marching_tets(v, v.norm(dim=-1) - r, t)
    radii = mesh.v_pos.norm(dim=-1)
    # linear interpolation of |p| - r along an edge of length h: chord error below h^2 / (8 r)
    h = 2 / 16 * np.sqrt(3)
    assert float(radii.max()) <= r + 1e-6 and float(radii.min()) > r - h * h / (8 * r) - 1e-6
    assert _outward_fraction(mesh.v_pos, mesh.t_pos_idx) == 1.0
    _assert_closed_and_consistent(mesh.t_pos_idx)
    assert _signed_volume(mesh.v_pos, mesh.t_pos_idx) == pytest.approx(4 / 3 * np.pi * r**3, rel=0.05)


def test_marching_tets_random_field_is_watertight_and_vertices_are_zero_crossings():
    g = torch.Generator().manual_seed(0)
    v, t = generate_tet_grid(4)
    v = v + 0.05 * torch.randn(v.shape, generator=g)  # a deformed (still positive) grid
    sdf = torch.randn(v.shape[0], generator=g, dtype=torch.float64).float()
    sdf[(v.abs() > 0.9).any(-1)] = 1.0  # outside on the box boundary, so the surface is closed
    mesh = marching_tets(v, sdf, t)
    assert mesh.num_faces > 0
    _assert_closed_and_consistent(mesh.t_pos_idx)
    assert _signed_volume(mesh.v_pos, mesh.t_pos_idx) > 0  # normals point towards sdf > 0
    # each new vertex lies on a sign-changing grid edge at the linear zero crossing
    edges = {tuple(sorted((a, b))) for tet in t.tolist() for a in tet for b in tet if a != b}
    expected = []
    for a, b in edges:
        if (sdf[a] < 0) != (sdf[b] < 0):
            w = sdf[a] / (sdf[a] - sdf[b])
            expected.append(v[a] + (v[b] - v[a]) * w)
    expected = torch.stack(expected)
    assert mesh.num_vertices == expected.shape[0]
    d = torch.cdist(mesh.v_pos, expected, compute_mode="donot_use_mm_for_euclid_dist")
    assert float(d.min(1).values.max()) < 1e-5 and float(d.min(0).values.max()) < 1e-5


def test_marching_tets_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(1)
    v0, t = generate_tet_grid(3)
    v0 = v0.double()
    sdf0 = v0.norm(dim=-1) - 0.55 + 0.05 * torch.randn(v0.shape[0], generator=g, dtype=torch.float64)
    weights = torch.randn(marching_tets(v0, sdf0, t).v_pos.shape, generator=g, dtype=torch.float64)

    def loss(v, s):
        return (marching_tets(v, s, t).v_pos * weights).sum()

    v = v0.clone().requires_grad_(True)
    s = sdf0.clone().requires_grad_(True)
    gv, gs = torch.autograd.grad(loss(v, s), (v, s))
    eps = 1e-6
    idx = torch.nonzero(gs).reshape(-1)[:10]
    assert idx.numel() == 10
    for i in idx.tolist():
        e = torch.zeros_like(sdf0)
        e[i] = eps
        fd = (loss(v0, sdf0 + e) - loss(v0, sdf0 - e)) / (2 * eps)
        assert float(gs[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)
    for i in torch.nonzero(gv.abs().sum(-1)).reshape(-1)[:5].tolist():
        for k in range(3):
            e = torch.zeros_like(v0)
            e[i, k] = eps
            fd = (loss(v0 + e, sdf0) - loss(v0 - e, sdf0)) / (2 * eps)
            assert float(gv[i, k]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_marching_tets_no_crossing_gives_empty_mesh():
    v, t = generate_tet_grid(2)
    mesh = marching_tets(v, torch.ones(v.shape[0]), t)
    assert mesh.num_vertices == 0 and mesh.num_faces == 0
