"""3D Gaussians: activations, initialisation, densification and the optimizer surgery, checkpoints,
the density field (against direct sums written here) and its isosurface (against the analytic
level set of one Gaussian)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from threestudio_like.core.errors import UserError
from threestudio_like.geometry.base import Mesh
from threestudio_like.geometry.explicit_mesh import ExplicitMesh
from threestudio_like.geometry.gaussians import GaussianGeometry
from threestudio_like.systems.optimization import OptimizerConfig, ParamGroupConfig, build_optimizer

NAMES = ("means_raw", "scales_log", "quats_raw", "opacities_logit", "features_raw")


def _rotation(q_wxyz):
    """Rotation matrices (N,3,3) of quaternions (N,4) w x y z, by scipy (x y z w order)."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    return torch.tensor(Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix(), dtype=torch.float32)


def _gaussians(means, scales, quats=None, opacities=0.5, features=None, **cfg):
    """A geometry holding exactly the given Gaussians (activated values in, raw values set)."""
    means = torch.as_tensor(means, dtype=torch.float32).reshape(-1, 3)
    n = means.shape[0]
    g = GaussianGeometry({"init_scale": 0.1, **cfg}, points=means, features=features)
    with torch.no_grad():
        g.scales_log.copy_(torch.as_tensor(scales, dtype=torch.float32).expand(n, 3).log())
        if quats is not None:
            g.quats_raw.copy_(torch.as_tensor(quats, dtype=torch.float32).expand(n, 4))
        g.opacities_logit.copy_(torch.logit(torch.as_tensor(opacities, dtype=torch.float32).expand(n).reshape(n, 1)))
    return g


def _stats(g, ndc_grads):
    """Feed per-Gaussian view-space gradient norms (NDC units) through one 2×2-pixel view
    (pixel gradient × W/2 = NDC gradient, B = 1)."""
    grad = torch.zeros(g.num_gaussians, 2)
    grad[:, 0] = torch.as_tensor(ndc_grads, dtype=torch.float32)
    g.add_densification_stats(grad, torch.ones(g.num_gaussians), image_size=(2, 2))


# ---- activations --------------------------------------------------------------------------
def test_activations_and_normals_on_constructed_gaussians():
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    angle = 1.1
    q = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])
    r = _rotation(np.stack([q, q]))
    # smallest axes: z for the first, y for the second; the second's centre lies along -y' so that
    # its axis has to be flipped to point away from the origin
    means = torch.stack([0.4 * r[0, :, 2], -0.4 * r[1, :, 1]])
    g = _gaussians(means, [0.1, 0.2, 0.05], quats=torch.tensor(3 * q), opacities=[0.2, 0.9])
    with torch.no_grad():
        g.scales_log[1] = torch.tensor([0.3, 0.01, 0.2]).log()
    assert torch.allclose(g.quats, torch.tensor(q, dtype=torch.float32).expand(2, 4), atol=1e-6)
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(2))
    assert (g.scales > 0).all() and torch.allclose(g.scales[0], torch.tensor([0.1, 0.2, 0.05]))
    assert torch.allclose(g.opacities[:, 0], torch.tensor([0.2, 0.9]), atol=1e-6)
    assert torch.allclose(g.rotations(), r, atol=1e-5)
    assert torch.allclose(g.normals(), torch.stack([r[0, :, 2], -r[1, :, 1]]), atol=1e-5)


def test_blob_init_follows_dreamgaussian():
    torch.manual_seed(0)
    g = GaussianGeometry({"init_num_points": 400, "init_radius": 0.5, "init_opacity": 0.1})
    p = g.means.detach().double()
    assert g.num_gaussians == 400 and (p.norm(dim=-1) <= 0.5 + 1e-6).all()
    assert p.norm(dim=-1).median() > 0.5 * 0.5 ** (1 / 3) * 0.9  # uniform in volume: median radius r/2^(1/3)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    d2.fill_diagonal_(float("inf"))
    expected = d2.sort(1).values[:, :3].mean(1).sqrt()
    assert torch.allclose(g.scales.detach().double(), expected[:, None].expand(-1, 3), rtol=1e-4)
    assert torch.allclose(g.opacities, torch.full((400, 1), 0.1))
    assert torch.equal(g.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(400, 4))
    assert torch.equal(g.features, torch.zeros(400, 3))  # grey under the sigmoid albedo


def test_point_cloud_init_reads_positions_and_colours(tmp_path):
    import trimesh

    rng = np.random.default_rng(0)
    v = rng.uniform(-0.4, 0.4, (50, 3))
    rgb = rng.integers(10, 245, (50, 3))
    path = tmp_path / "cloud.ply"
    trimesh.PointCloud(v, colors=np.concatenate([rgb, np.full((50, 1), 255)], 1)).export(path)
    g = GaussianGeometry({"init": "points", "points_path": str(path), "points_normalize_size": None})
    assert torch.allclose(g.means, torch.tensor(v, dtype=torch.float32), atol=1e-6)
    assert torch.allclose(torch.sigmoid(g.features), torch.tensor(rgb / 255.0, dtype=torch.float32), atol=1e-4)
    with pytest.raises(UserError, match="points_path"):
        GaussianGeometry({"init": "points", "points_path": str(tmp_path / "none.ply")})


# ---- densification ------------------------------------------------------------------------
def test_clone_copies_a_small_gaussian_with_a_large_gradient():
    g = _gaussians([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0]], [0.01, 0.02, 0.03], densify_interval=10)
    with torch.no_grad():
        g.features_raw.copy_(torch.randn(2, 3))
    _stats(g, [0.02, 0.009])  # threshold 0.01: the first only
    assert g.densify_and_prune(None, 9) is None  # not a densification step
    report = g.densify_and_prune(None, 10)
    assert (report.cloned, report.split, report.pruned, g.num_gaussians) == (1, 0, 0, 3)
    for name in NAMES:
        p = getattr(g, name)
        assert torch.equal(p[2], p[0])  # an exact copy, appended


def test_split_draws_two_children_from_the_parent_gaussian():
    torch.manual_seed(0)
    n = 2000
    axis = np.array([0.0, 0.6, 0.8])
    q = np.concatenate([[math.cos(0.4)], math.sin(0.4) * axis])
    scales = torch.tensor([0.5, 0.1, 0.05])
    mean = torch.tensor([0.2, -0.1, 0.3])
    g = _gaussians(mean.expand(n, 3), scales, quats=torch.tensor(q), densify_interval=1)
    _stats(g, torch.full((n,), 0.05))
    report = g.densify_and_prune(None, 1)
    assert (report.cloned, report.split, report.pruned, g.num_gaussians) == (0, n, 0, 2 * n)
    assert torch.allclose(g.scales, (scales / 1.6).expand(2 * n, 3), rtol=1e-5)
    x = g.means.detach().double()
    r = _rotation(q[None])[0].double()
    cov = r @ torch.diag(scales.double() ** 2) @ r.T
    assert torch.allclose(x.mean(0), mean.double(), atol=4 * 0.5 / math.sqrt(2 * n))
    sample_cov = torch.cov(x.T)
    assert torch.linalg.matrix_norm(sample_cov - cov) / torch.linalg.matrix_norm(cov) < 0.08


def test_prune_removes_transparent_and_huge_gaussians_but_never_all():
    g = _gaussians(torch.zeros(4, 3), [0.01, 0.01, 0.01], opacities=[0.005, 0.5, 0.5, 0.02], densify_interval=1)
    with torch.no_grad():
        g.scales_log[2] = math.log(0.5)  # > 0.1 × scene_extent 4
        g.features_raw[:, 0] = torch.arange(4.0)
    report = g.densify_and_prune(None, 1)
    assert (report.pruned, g.num_gaussians) == (2, 2)
    assert g.features[:, 0].tolist() == [1.0, 3.0]
    faint = _gaussians(torch.zeros(3, 3), [0.01, 0.01, 0.01], opacities=0.001, densify_interval=1)
    assert faint.densify_and_prune(None, 1).pruned == 0 and faint.num_gaussians == 3


def test_cap_and_window_and_opacity_reset():
    g = _gaussians(torch.zeros(3, 3), [0.01, 0.01, 0.01], densify_interval=5, max_gaussians=4, densify_from_step=5)
    with torch.no_grad():
        g.features_raw[:, 0] = torch.arange(3.0)
    assert not g.densifying(4) and g.densifying(5)
    _stats(g, [0.02, 0.05, 0.03])
    g.densify_and_prune(None, 5)
    assert g.num_gaussians == 4 and g.features[3, 0] == 1.0  # room for one: the largest gradient
    g = _gaussians(torch.zeros(2, 3), [0.01] * 3, opacities=[0.5, 0.005], opacity_reset_interval=7)
    report = g.densify_and_prune(None, 7)
    assert report.opacity_reset and (report.cloned, report.split) == (0, 0)
    assert torch.allclose(g.opacities[:, 0], torch.tensor([0.01, 0.005]), atol=1e-7)


class _System(nn.Module):
    def __init__(self, geometry):
        super().__init__()
        self.geometry = geometry


def _loss(g):
    return (g.means.square().sum() + g.scales.sum() + g.quats[:, 1:].sum() + g.opacities.sum()) + g.features.sum()


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adan"])
def test_optimizer_state_follows_the_surgery(name):
    torch.manual_seed(0)
    # 0 survives, 1 is cloned, 2 is split, 3 is pruned (opacity), 4 survives
    g = _gaussians(torch.rand(5, 3) * 0.2, [0.01] * 3, opacities=[0.5, 0.5, 0.5, 0.005, 0.5], densify_interval=1)
    with torch.no_grad():
        g.scales_log[2] = math.log(0.2)
    system = _System(g)
    groups = {"geometry.means": ParamGroupConfig(lr=1e-3), "geometry.opacities": ParamGroupConfig(lr=0.05)}
    opt = build_optimizer(OptimizerConfig(name=name, params=groups), list(system.named_parameters()), "opt")
    _loss(g).backward()
    opt.step()
    before = {n: {k: v.clone() for k, v in opt.state[getattr(g, n)].items()} for n in NAMES}
    _stats(g, [0.0, 0.05, 0.05, 0.0, 0.0])
    report = g.densify_and_prune(opt, 1)
    assert (report.cloned, report.split, report.pruned, g.num_gaussians) == (1, 1, 1, 6)
    keep = torch.tensor([0, 1, 4])  # then the clone of 1 and the two children of 2
    in_groups = [p for group in opt.param_groups for p in group["params"]]
    for n in NAMES:
        p = getattr(g, n)
        assert sum(q is p for q in in_groups) == 1
        per_row = [k for k, v in before[n].items() if torch.is_tensor(v) and v.dim() > 0]
        assert per_row  # exp_avg, exp_avg_sq (Adan: exp_avg_diff, previous_grad too)
        for key, old in before[n].items():
            new = opt.state[p][key]
            if key in per_row:
                assert new.shape == p.shape
                assert torch.equal(new[:3], old[keep]) and torch.equal(new[3:], torch.zeros_like(new[3:]))
            else:
                assert torch.equal(torch.as_tensor(new), torch.as_tensor(old))  # step counts
    opt.zero_grad()
    _loss(g).backward()
    opt.step()
    assert all(torch.isfinite(getattr(g, n)).all() for n in NAMES)


def test_checkpoint_round_trip_across_a_change_of_count():
    torch.manual_seed(0)
    a = _System(GaussianGeometry({"init_num_points": 30, "densify_interval": 1}))
    opt_a = build_optimizer(OptimizerConfig(), list(a.named_parameters()), "opt")
    _loss(a.geometry).backward()
    opt_a.step()
    _stats(a.geometry, torch.linspace(0, 0.02, 30))
    a.geometry.densify_and_prune(opt_a, 1)
    assert a.geometry.num_gaussians != 30
    b = _System(GaussianGeometry({"init_num_points": 12}))
    opt_b = build_optimizer(OptimizerConfig(), list(b.named_parameters()), "opt")  # built first, as on resume
    b.load_state_dict(a.state_dict())
    opt_b.load_state_dict(opt_a.state_dict())
    for n in NAMES:
        assert torch.equal(getattr(b.geometry, n), getattr(a.geometry, n))
    _loss(b.geometry).backward()
    opt_b.step()
    copy = GaussianGeometry.create_from(a.geometry, {"densify_interval": 7})
    assert copy.cfg.densify_interval == 7
    assert all(torch.equal(getattr(copy, n), getattr(a.geometry, n)) for n in NAMES)


def test_densification_statistics_convert_pixels_to_ndc_and_average_visible_views():
    g = _gaussians(torch.zeros(2, 3), [0.01] * 3, densify_interval=1, features=torch.eye(2, 3))
    grad = torch.zeros(2, 2, 2)  # (view, Gaussian, xy); (H, W) = (64, 32): NDC = pixels × (W/2, H/2)
    grad[:, 0, 1] = 0.006 / 32  # Gaussian 0: 0.006 NDC in each view, × B = 2 views → 0.012 ≥ 0.01
    grad[0, 1, 0] = 0.004 / 16  # Gaussian 1: 0.004 × 2 = 0.008 in the first view...
    grad[1, 1, 0] = 1.0  # ...and a huge gradient in the second, which does not see it
    radii = torch.tensor([[3, 3], [2, 0]])
    g.add_densification_stats(grad, radii, image_size=(64, 32))
    assert g.densify_and_prune(None, 1).cloned == 1 and g.num_gaussians == 3
    assert torch.equal(g.features[2], torch.tensor([1.0, 0, 0]))  # Gaussian 0's clone


# ---- density and isosurface ---------------------------------------------------------------
def _direct(g, points, cutoff):
    """Σ o exp(-½ dᵀ Σ⁻¹ d) over Gaussians within ``cutoff`` (None: all), Σ from scipy rotations
    and inverted by torch; features' density-weighted mean."""
    r = _rotation(g.quats.detach().numpy()).double()
    cov = r @ torch.diag_embed(g.scales.detach().double() ** 2) @ r.transpose(1, 2)
    d = points.double()[:, None] - g.means.detach().double()[None]
    m2 = torch.einsum("mni,nij,mnj->mn", d, torch.linalg.inv(cov), d)
    w = g.opacities.detach().double()[:, 0] * torch.exp(-0.5 * m2)
    if cutoff is not None:
        w = w * (m2 <= cutoff**2)
    return w.sum(1), (w @ g.features.detach().double()) / w.sum(1, keepdim=True)


def test_density_and_features_match_direct_sums():
    torch.manual_seed(0)
    n = 60
    q = torch.randn(n, 4)
    g = _gaussians(
        torch.rand(n, 3) - 0.5, torch.rand(n, 3) * 0.15 + 0.02, quats=q, opacities=torch.rand(n) * 0.9 + 0.05
    )
    with torch.no_grad():
        g.features_raw.copy_(torch.randn(n, 3))
    points = torch.rand(500, 3) * 1.2 - 0.6
    out = g(points, output_normal=True)
    density, features = _direct(g, points, cutoff=3.0)
    seen = density > 1e-3
    assert seen.sum() > 300
    assert torch.allclose(out.density[:, 0].double(), density, atol=1e-5)
    assert torch.allclose(out.features[seen].double(), features[seen], atol=1e-4)
    wide = GaussianGeometry.create_from(g, {"density_cutoff": 8.0})
    assert torch.allclose(wide.forward_density(points)[:, 0].double(), _direct(g, points, None)[0], atol=1e-5)
    p = points.double().requires_grad_(True)
    (grad,) = torch.autograd.grad(_direct_density_sum(g, p), p)
    steep = grad.norm(dim=-1) > 1e-2
    assert steep.sum() > 300
    expected = -grad[steep] / grad[steep].norm(dim=-1, keepdim=True)
    assert torch.allclose(out.normal[steep].double(), expected, atol=1e-3)


def _direct_density_sum(g, p):
    r = _rotation(g.quats.detach().numpy()).double()
    cov = r @ torch.diag_embed(g.scales.detach().double() ** 2) @ r.transpose(1, 2)
    d = p[:, None] - g.means.detach().double()[None]
    m2 = torch.einsum("mni,nij,mnj->mn", d, torch.linalg.inv(cov), d)
    return (g.opacities.detach().double()[:, 0] * torch.exp(-0.5 * m2) * (m2 <= 9)).sum()


def test_features_far_from_every_gaussian_are_the_nearest_ones():
    g = _gaussians([[0.0, 0, 0], [1.0, 0, 0]], [0.01] * 3, features=torch.tensor([[1.0, 2, 3], [4.0, 5, 6]]))
    out = g(torch.tensor([[1.5, 0.2, 0.0], [-2.0, 0.0, 0.0]]))
    assert torch.equal(out.density, torch.zeros(2, 1))
    assert torch.equal(out.features, torch.tensor([[4.0, 5, 6], [1.0, 2, 3]]))


def test_isosurface_of_one_gaussian_is_its_analytic_level_set():
    sigma, opacity, level = 0.3, 0.9, 0.3
    g = _gaussians(
        [[0.0, 0.0, 0.0]], [sigma] * 3, opacities=opacity, isosurface_threshold=level, isosurface_resolution=48
    )
    mesh = g.isosurface()
    radius = sigma * math.sqrt(2 * math.log(opacity / level))
    r = mesh.v_pos.norm(dim=-1)
    assert abs(float(r.mean()) - radius) < 0.01 * radius and float((r - radius).abs().max()) < 0.03 * radius
    v = mesh.v_pos.double()[mesh.t_pos_idx]
    volume = float(torch.linalg.det(v).sum()) / 6  # > 0: faces counter-clockwise seen from outside
    assert volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.05)
    with pytest.raises(UserError, match="isosurface"):
        _gaussians([[0.0, 0.0, 0.0]], [sigma] * 3, opacities=opacity, isosurface_threshold=1.0).isosurface()


def test_create_from_a_cube_puts_points_on_its_surface():
    torch.manual_seed(0)
    corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    faces = torch.tensor(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    )  # fmt: skip
    small = {"otype": "HashGrid", "n_levels": 2, "log2_hashmap_size": 10, "base_resolution": 4, "per_level_scale": 2}
    cube = ExplicitMesh({"radius": 1.0, "pos_encoding_config": small}, mesh=Mesh(v_pos=corners, t_pos_idx=faces))
    g = GaussianGeometry.create_from(cube, {"init_num_points": 600, "init_opacity": 0.2})
    p = g.means.detach()
    assert g.num_gaussians == 600
    assert torch.allclose(p.abs().amax(1), torch.full((600,), 0.5), atol=1e-6)
    face = torch.argmax(p.abs(), 1) * 2 + (p.gather(1, p.abs().argmax(1, keepdim=True))[:, 0] > 0)
    assert torch.bincount(face, minlength=6).min() > 60  # area-weighted: about 100 a face
    with torch.no_grad():
        assert torch.allclose(g.features, cube(p).features, atol=1e-6)
    assert torch.allclose(g.opacities, torch.full((600, 1), 0.2))
