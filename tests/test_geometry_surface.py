"""DMTet and ExplicitMesh: hand-offs checked by voxel IoU (winding numbers), file round trips."""

import math

import numpy as np
import pytest
import torch
import trimesh

from threestudio_like.core.errors import UserError
from threestudio_like.geometry.dmtet import DMTetGeometry, normalized_level
from threestudio_like.geometry.explicit_mesh import ExplicitMesh
from threestudio_like.geometry.implicit_volume import ImplicitVolume

SMALL_GRID = {
    "otype": "HashGrid",
    "n_levels": 4,
    "n_features_per_level": 2,
    "log2_hashmap_size": 12,
    "base_resolution": 4,
    "per_level_scale": 2.0,
}


from threestudio_like.eval.shape_metrics import winding_number  # noqa: E402


def voxel_iou(mesh_a, mesh_b, n=14, extent=0.95) -> float:
    axis = torch.linspace(-extent, extent, n)
    p = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    ina = winding_number(p, mesh_a.v_pos.detach(), mesh_a.t_pos_idx) > 0.5
    inb = winding_number(p, mesh_b.v_pos.detach(), mesh_b.t_pos_idx) > 0.5
    return float((ina & inb).sum()) / max(float((ina | inb).sum()), 1.0)


def _volume_with_density_bias(bias, **cfg):
    """An ImplicitVolume whose density is softplus(bias(points)): density head zeroed, blob bias
    replaced by ``bias`` (N,3) → (N,1)."""
    g = ImplicitVolume({"pos_encoding_config": SMALL_GRID, "isosurface_resolution": 32, **cfg})
    last = g.density_network.net[-2]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    g.density_bias = bias
    return g


def _volume_with_known_density():
    """The lumpy, off-centre field softplus(10 (1 - q)) with q an ellipsoid distance."""

    def bias(points):
        q = ((points - torch.tensor([0.1, -0.05, 0.0])) / torch.tensor([0.55, 0.4, 0.3])).norm(dim=-1, keepdim=True)
        return 10 * (1 - q)

    return _volume_with_density_bias(bias)


def test_dmtet_from_volume_matches_its_isosurface_and_copies_the_texture_field():
    vol = _volume_with_known_density()
    dm = DMTetGeometry.create_from(vol, {"isosurface_resolution": 20}, where="stage2.geometry")
    mesh = dm.mesh()
    assert voxel_iou(mesh, vol.isosurface()) > 0.85
    p = torch.rand(50, 3) * 2 - 1
    assert torch.allclose(dm(p).features, vol(p).features)
    assert dm.cfg.pos_encoding_config == SMALL_GRID and dm.cfg.radius == vol.cfg.radius
    # the SDF's zero crossings are those of threshold - density on every crossing edge
    level = vol.isosurface_threshold_value() - vol.forward_density(dm.grid_vertices).reshape(-1)
    assert torch.equal(dm.sdf < 0, level < 0)


def test_normalized_level_keeps_crossings_and_bounds_values():
    g = torch.Generator().manual_seed(0)
    dm = DMTetGeometry({"pos_encoding_config": SMALL_GRID, "isosurface_resolution": 4})
    level = 30 * (dm.grid_vertices.norm(dim=-1) - 0.5) + torch.randn(dm.sdf.shape, generator=g)
    sdf = normalized_level(level, dm.tets)
    assert float(sdf.abs().max()) <= 1.0 and float(sdf.abs().max()) == 1.0
    from threestudio_like.ops.marching_tets import marching_tets

    a = marching_tets(dm.grid_vertices, level, dm.tets).v_pos
    b = marching_tets(dm.grid_vertices, sdf, dm.tets).v_pos
    assert torch.allclose(a, b, atol=1e-6)


def test_dmtet_from_scratch_is_a_sphere_and_mesh_is_differentiable():
    dm = DMTetGeometry(
        {"pos_encoding_config": SMALL_GRID, "isosurface_resolution": 12, "shape_init_radius": 0.5, "radius": 2.0}
    )
    mesh = dm.mesh()
    h = 2 * 2.0 / 12 * math.sqrt(3)
    radii = mesh.v_pos.detach().norm(dim=-1)
    assert float(radii.max()) <= 1.0 + 1e-5 and float(radii.min()) > 1.0 - h * h / 8
    mesh.v_pos.square().sum().backward()
    assert dm.sdf.grad.abs().sum() > 0 and dm.deformation.grad.abs().sum() > 0
    # deformation is bounded by half a cell
    with torch.no_grad():
        dm.deformation.fill_(100.0)
    step = (dm.vertex_positions() - dm.grid_vertices).detach().abs().max()
    assert float(step) == pytest.approx(0.5 * 2 * 2.0 / 12, rel=1e-5)


def test_dmtet_fix_geometry_and_non_deformable_grid():
    dm = DMTetGeometry(
        {
            "pos_encoding_config": SMALL_GRID,
            "isosurface_resolution": 6,
            "fix_geometry": True,
            "isosurface_deformable_grid": False,
        }
    )
    assert "sdf" in dict(dm.named_buffers()) and not hasattr(dm, "deformation")
    assert all(not n.startswith("sdf") for n, _ in dm.named_parameters())
    assert torch.equal(dm.vertex_positions(), dm.grid_vertices)


def test_dmtet_from_dmtet_copies_or_resamples():
    vol = _volume_with_known_density()
    a = DMTetGeometry.create_from(vol, {"isosurface_resolution": 16})
    with torch.no_grad():
        a.deformation.normal_(0, 0.2)
    same = DMTetGeometry.create_from(a, {"isosurface_resolution": 16})
    assert torch.equal(same.mesh().v_pos, a.mesh().v_pos)
    finer = DMTetGeometry.create_from(a, {"isosurface_resolution": 24})
    assert voxel_iou(finer.mesh(), a.mesh()) > 0.85
    with pytest.raises(UserError, match="cannot build a DMTet"):
        DMTetGeometry.create_from(ExplicitMesh.create_from(a, {}), {})


def test_dmtet_from_triplane_volume_keeps_its_encoding():
    tv = ImplicitVolume(
        {"pos_encoding_config": {"otype": "Triplane", "resolution": 8, "n_channels": 4}, "isosurface_resolution": 24}
    )
    dm = DMTetGeometry.create_from(tv, {"isosurface_resolution": 12})
    assert dm.cfg.pos_encoding_config["otype"] == "Triplane"
    p = torch.rand(20, 3) * 2 - 1
    assert torch.allclose(dm(p).features, tv(p).features)
    rebuilt = DMTetGeometry(dm.cfg)  # the merged config rebuilds the same architecture (resume)
    rebuilt.load_state_dict(dm.state_dict())
    assert torch.allclose(rebuilt(p).features, tv(p).features)


def test_empty_dmtet_surface_raises():
    dm = DMTetGeometry({"pos_encoding_config": SMALL_GRID, "isosurface_resolution": 4, "shape_init_radius": 5.0})
    with pytest.raises(UserError, match="DMTet surface is empty"):
        dm.mesh()


# ---- ExplicitMesh --------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".obj", ".ply", ".glb"])
def test_explicit_mesh_file_round_trip(tmp_path, suffix):
    src = trimesh.creation.icosphere(subdivisions=1, radius=0.4)
    src.apply_translation([0.1, 0.2, -0.1])
    path = tmp_path / f"shape{suffix}"
    src.export(path)
    em = ExplicitMesh({"mesh_path": str(path), "normalize": False, "pos_encoding_config": SMALL_GRID})
    mesh = em.mesh()
    assert mesh.num_faces == len(src.faces)
    got = np.sort(mesh.v_pos.numpy().round(5), axis=0)
    assert np.allclose(got, np.sort(np.asarray(src.vertices).round(5), axis=0), atol=1e-5)
    tri = mesh.v_pos.double()[mesh.t_pos_idx]
    volume = float((tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2], dim=-1)).sum() / 6)
    assert volume == pytest.approx(src.volume, rel=1e-4)  # same faces, same (outward) orientation


def test_explicit_mesh_normalisation_and_up_axis(tmp_path):
    box = trimesh.creation.box(extents=[2.0, 4.0, 1.0])
    box.apply_translation([5.0, 3.0, 1.0])  # y (the file's up) is the longest side
    path = tmp_path / "box.obj"
    box.export(path)
    em = ExplicitMesh(
        {
            "mesh_path": str(path),
            "up_axis": "+Y",
            "radius": 2.0,
            "normalize_extent": 0.5,
            "pos_encoding_config": SMALL_GRID,
        }
    )
    v = em.mesh().v_pos
    lo, hi = v.min(0).values, v.max(0).values
    assert torch.allclose((lo + hi) / 2, torch.zeros(3), atol=1e-6)
    # longest side (file y) is now z and spans ±0.5·2; file z (depth 1) maps to -y
    assert torch.allclose(hi - lo, torch.tensor([1.0, 0.5, 2.0]), atol=1e-5)


def test_explicit_mesh_bad_paths(tmp_path):
    with pytest.raises(UserError, match="no file at"):
        ExplicitMesh({"mesh_path": str(tmp_path / "missing.obj")})
    cloud = tmp_path / "points.ply"
    trimesh.PointCloud(np.random.rand(10, 3)).export(cloud)
    with pytest.raises(UserError, match="no triangles"):
        ExplicitMesh({"mesh_path": str(cloud)})
    with pytest.raises(UserError, match="has no mesh"):
        ExplicitMesh({"pos_encoding_config": SMALL_GRID}).mesh()


def test_explicit_mesh_from_dmtet_and_checkpoint_round_trip():
    vol = _volume_with_known_density()
    dm = DMTetGeometry.create_from(vol, {"isosurface_resolution": 10})
    em = ExplicitMesh.create_from(dm, {})
    assert torch.equal(em.mesh().v_pos, dm.mesh().v_pos.detach())
    assert torch.equal(em.mesh().t_pos_idx, dm.mesh().t_pos_idx)
    p = torch.rand(20, 3) * 2 - 1
    assert torch.allclose(em(p).features, vol(p).features)
    resumed = ExplicitMesh(em.cfg)  # empty mesh, sized by the checkpoint
    resumed.load_state_dict(em.state_dict())
    assert torch.equal(resumed.mesh().t_pos_idx, em.mesh().t_pos_idx)
    from_volume = ExplicitMesh.create_from(vol, {})
    assert voxel_iou(from_volume.mesh(), vol.isosurface()) == 1.0


def _hollow_ball(shell=(0.3, 0.42), hole=False):
    """An ImplicitVolume (threshold 10) whose density is ≈ 50 in the shell ``shell[0] < |p| <
    shell[1]`` and ≈ 0.7 inside and out — a ball a camera sees as solid, hollow inside. With
    ``hole`` a tunnel (|y|, |z| < 0.15, x > 0) opens the cavity to the outside."""

    def bias(points):
        r = points.norm(dim=-1, keepdim=True)
        in_shell = (r > shell[0]) & (r < shell[1])
        if hole:
            in_shell &= ~((points[:, 1:].abs() < 0.15).all(-1, keepdim=True) & (points[:, :1] > 0))
        return torch.where(in_shell, torch.full_like(r, 50.0), torch.zeros_like(r))

    return _volume_with_density_bias(bias, isosurface_threshold=10.0)


def test_enclosed_voids_are_the_cavity_and_only_while_it_is_closed():
    from threestudio_like.geometry.isosurface import enclosed_voids

    for hole in (False, True):
        vol = _hollow_ball(hole=hole)
        grid = vol.density_grid()
        voids = enclosed_voids(grid > 10.0)
        axis = torch.linspace(-1, 1, 32)
        r = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).norm(dim=-1)
        if hole:
            assert not voids.any()
        else:
            assert torch.equal(voids, (grid <= 10.0) & (r < 0.3))  # every interior cell, nothing else
            assert int(voids.sum()) > 100


def test_hollow_volume_exports_and_hands_off_as_a_solid():
    vol = _hollow_ball()
    mesh = vol.isosurface()
    assert float(mesh.v_pos.norm(dim=-1).min()) > 0.33  # no inner surface around the cavity (r = 0.3)
    # without filling the cavity the DMTet keeps it: an inner surface (24³), or, on a 12³ grid whose
    # 0.17-wide cells the 0.12 shell slips between, a hollow opened to the outside (measured: the
    # centre's winding number 0 at both; IoU with the solid ball 0.60 at 24³)
    solid = DMTetGeometry({"pos_encoding_config": SMALL_GRID, "isosurface_resolution": 24, "shape_init_radius": 0.42})
    for resolution in (12, 24):
        mesh = DMTetGeometry.create_from(vol, {"isosurface_resolution": resolution}).mesh()
        assert float(winding_number(torch.zeros(1, 3), mesh.v_pos.detach(), mesh.t_pos_idx)) > 0.5
    assert voxel_iou(mesh, solid.mesh(), n=20) > 0.8  # 0.85 (24³)


class _ColourRamp(torch.nn.Module):
    """A geometry with no appearance field (as Gaussians): features are a function of position,
    its surface a box."""

    def forward(self, points, output_normal=False):
        from threestudio_like.geometry.base import GeometryOutput

        return GeometryOutput(features=torch.stack([points[:, 0], -points[:, 1], points[:, 2] ** 2], dim=-1))

    def isosurface(self):
        from threestudio_like.geometry.base import Mesh

        box = trimesh.creation.box(extents=(1.2, 1.0, 0.8))
        return Mesh(v_pos=torch.tensor(box.vertices, dtype=torch.float32), t_pos_idx=torch.tensor(box.faces))


def test_explicit_mesh_from_a_geometry_without_a_field_fits_its_appearance():
    torch.manual_seed(0)
    source = _ColourRamp()
    cfg = {"radius": 1.0, "pos_encoding_config": SMALL_GRID, "appearance_fit_steps": 300}
    fitted = ExplicitMesh.create_from(source, cfg)
    untrained = ExplicitMesh.create_from(source, {**cfg, "appearance_fit_steps": 0})
    points = fitted.mesh().sample_surface(4000, torch.Generator().manual_seed(1))
    target = source(points).features
    with torch.no_grad():
        err = (fitted(points).features - target).pow(2).mean()
        err_untrained = (untrained(points).features - target).pow(2).mean()
    assert err < 0.05 * target.var(0).mean() and err < 0.05 * err_untrained, (float(err), float(err_untrained))
