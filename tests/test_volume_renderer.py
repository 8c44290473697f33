"""Volume renderer and occupancy grid against closed forms on a constant-density sphere."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from threestudio_like.background.base import SolidBackground
from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import orbit_cameras
from threestudio_like.geometry.base import GeometryOutput
from threestudio_like.materials.base import DiffuseWithPointLight, NoMaterial
from threestudio_like.renderers.occupancy_grid import OccupancyGrid
from threestudio_like.renderers.volume import (
    VolumeRenderer,
    march_rays_torch,
    packed_exclusive_sum,
    ray_aabb_intersect,
    render_weights_torch,
)
from threestudio_like.renderers.volume_nerfacc import nerfacc_available

COLOR = (0.2, 0.6, 0.9)
BG = (1.0, 0.5, 0.0)


class ConstantDensitySphere(nn.Module):
    """Density σ inside a ball of radius R at the origin, 0 outside; constant colour; analytic
    outward normals. Scene box [-box_radius, box_radius]^3."""

    def __init__(self, sphere_radius: float = 0.5, sigma: float = 5.0, box_radius: float = 1.0) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(radius=box_radius)
        self.sphere_radius = sphere_radius
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        self.color_logit = nn.Parameter(torch.logit(torch.tensor(COLOR)))
        self.density_calls = 0

    def inside(self, points):
        return (points.norm(dim=-1, keepdim=True) < self.sphere_radius).to(points.dtype)

    def forward_density(self, points):
        self.density_calls += 1
        return self.inside(points) * self.log_sigma.exp()

    def forward(self, points, output_normal=False):
        density = self.inside(points) * self.log_sigma.exp()
        features = self.color_logit.to(points.dtype).expand(points.shape[0], 3)
        normal = nn.functional.normalize(points, dim=-1) if output_normal else None
        return GeometryOutput(features=features, density=density, normal=normal)


class ConstantDensityCube(ConstantDensitySphere):
    """Density σ in the axis-aligned cube [-R, R]^3 instead of the ball."""

    def inside(self, points):
        return (points.abs().amax(dim=-1, keepdim=True) < self.sphere_radius).to(points.dtype)


def render(renderer, cams, geometry, shading="albedo", generator=None):
    return renderer(cams, geometry, NoMaterial(), SolidBackground({"color": BG}), shading=shading, generator=generator)


def analytic_chords(cams, sphere_radius):
    """Per pixel: chord length through the sphere and distance to its front surface."""
    o, d = cams.rays_o, cams.rays_d
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - sphere_radius**2
    disc = (b * b - c).clamp(min=0.0)
    chord = 2.0 * disc.sqrt()
    t_hit = -b - disc.sqrt()
    return chord, t_hit


def test_ray_aabb_intersect_analytic():
    o = torch.tensor([[-3.0, 0.2, 0.1], [0.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    t_near, t_far = ray_aabb_intersect(o, d, -1.0, 1.0)
    assert torch.allclose(t_near[:2], torch.tensor([2.0, -1.0]))
    assert torch.allclose(t_far[:2], torch.tensor([4.0, 1.0]))
    assert t_far[2] <= t_near[2]  # misses


def test_marching_keeps_intervals_whose_midpoint_is_in_the_segment():
    # one ray over t in [0, 1], step 2√3/64: 1/step = 18.475 → midpoints (k + .5)·step < 1 for k ≤ 17
    step = 2 * math.sqrt(3) / 64
    o, d = torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])
    ray_indices, t_starts, t_ends = march_rays_torch(o, d, torch.zeros(1), torch.ones(1), step, 64)
    assert ray_indices.tolist() == [0] * 18
    assert torch.allclose(t_starts, torch.arange(18) * step) and torch.allclose(
        t_ends - t_starts, torch.full((18,), step)
    )


def test_packed_transmittance_matches_per_ray_product():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([3, 0, 7, 1, 12, 5])
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), counts)
    s = int(counts.sum())
    sigmas = torch.rand(s, generator=g, dtype=torch.float64) * 30
    t_starts = torch.rand(s, generator=g, dtype=torch.float64)
    t_ends = t_starts + torch.rand(s, generator=g, dtype=torch.float64) * 0.2
    weights, trans = render_weights_torch(t_starts, t_ends, sigmas, ray_indices, len(counts))
    pos = 0
    for n in counts.tolist():
        prod = 1.0
        for i in range(pos, pos + n):
            alpha = 1.0 - math.exp(-sigmas[i].item() * (t_ends[i] - t_starts[i]).item())
            assert trans[i].item() == pytest.approx(prod, rel=1e-10, abs=1e-300)
            assert weights[i].item() == pytest.approx(prod * alpha, rel=1e-10, abs=1e-300)
            prod *= 1.0 - alpha
        pos += n
    # large per-ray sums in float32 do not leak into the next ray
    big = torch.full((4000,), 50.0)
    idx = torch.repeat_interleave(torch.arange(2), torch.tensor([3999, 1]))
    assert packed_exclusive_sum(big, idx, 2)[-1].item() == 0.0


def test_opacity_and_colour_match_closed_form():
    sphere = ConstantDensitySphere(sphere_radius=0.6, sigma=3.0).double()
    cams = orbit_cameras(2, 20.0, 2.5, 40.0, 12, 12, dtype=torch.float64)
    r = VolumeRenderer({"num_samples_per_ray": 1024, "estimator": "uniform"}).eval()
    out = render(r, cams, sphere)
    chord, _ = analytic_chords(cams, 0.6)
    expected = 1.0 - torch.exp(-3.0 * chord)
    assert chord.max() > 1.0 and (chord == 0).any()  # silhouette inside the image
    assert (out.opacity[..., 0] - expected).abs().max() < 0.02
    color, bg = torch.tensor(COLOR, dtype=torch.float64), torch.tensor(BG, dtype=torch.float64)
    expected_rgb = expected[..., None] * color + (1.0 - expected[..., None]) * bg
    assert (out.rgb - expected_rgb).abs().max() < 0.02


def test_depth_and_normal_of_dense_sphere_are_its_surface():
    sphere = ConstantDensitySphere(sphere_radius=0.5, sigma=1000.0).double()
    cams = orbit_cameras(2, 30.0, 2.0, 40.0, 10, 10, dtype=torch.float64)
    r = VolumeRenderer({"num_samples_per_ray": 512, "estimator": "uniform", "return_normals": True}).eval()
    out = render(r, cams, sphere)
    chord, t_hit = analytic_chords(cams, 0.5)
    solid = chord > 0.3  # rays well inside the silhouette
    assert solid.sum() > 20
    step = r.render_step_size(1.0)
    assert (out.opacity[..., 0][solid] > 0.999).all()
    assert (out.depth[..., 0][solid] - t_hit[solid]).abs().max() < step
    hit_normal = (cams.rays_o + t_hit[..., None] * cams.rays_d) / 0.5
    assert (out.normal[solid] - hit_normal[solid]).norm(dim=-1).max() < 0.05
    ex = out.extras
    n_rays = 2 * 10 * 10
    op = torch.zeros(n_rays, dtype=torch.float64).index_add(0, ex["ray_indices"], ex["weights"][:, 0])
    assert torch.allclose(op, out.opacity.reshape(-1))
    assert ex["num_samples"] == ex["weights"].shape[0] == ex["normal_points"].shape[0] == ex["dirs"].shape[0]
    assert torch.allclose(ex["intervals"], torch.full_like(ex["intervals"], step))


def test_lit_shading_uses_normals_positions_and_light():
    sphere = ConstantDensitySphere(sphere_radius=0.5, sigma=1000.0).double()
    cams = orbit_cameras(1, 30.0, 2.0, 40.0, 10, 10, dtype=torch.float64)
    cams.light_position = torch.tensor([[0.0, 3.0, 1.0]], dtype=torch.float64)
    material = DiffuseWithPointLight({"ambient_light_color": 0.1, "diffuse_light_color": 0.9})
    r = VolumeRenderer({"num_samples_per_ray": 512, "estimator": "uniform"}).eval()
    out = r(cams, sphere, material, SolidBackground({"color": BG}), shading="textureless")
    assert out.normal is not None  # the material needs normals
    chord, t_hit = analytic_chords(cams, 0.5)
    solid = chord > 0.3
    hit = cams.rays_o + t_hit[..., None] * cams.rays_d
    light_dir = nn.functional.normalize(cams.light_position[:, None, None] - hit, dim=-1)
    lambert = ((hit / 0.5) * light_dir).sum(-1).clamp(min=0)
    expected = 0.1 + 0.9 * lambert
    assert (lambert[solid] > 0.3).any() and (lambert[solid] == 0).any()
    assert (out.rgb[solid] - expected[solid][:, None]).abs().max() < 0.03


def test_occupancy_grid_marks_the_sphere():
    sphere_r, res = 0.5, 16
    sphere = ConstantDensitySphere(sphere_radius=sphere_r, sigma=50.0)
    grid = OccupancyGrid(resolution=res)
    grid.update(sphere.forward_density, radius=1.0, step=0, step_size=0.02, generator=torch.Generator().manual_seed(0))
    lo = torch.arange(res) / res * 2 - 1
    lo3 = torch.stack(torch.meshgrid(lo, lo, lo, indexing="ij"), -1)
    hi3 = lo3 + 2.0 / res
    nearest = torch.maximum(torch.maximum(lo3, -hi3), torch.zeros_like(lo3)).norm(dim=-1)
    farthest = torch.maximum(lo3.abs(), hi3.abs()).norm(dim=-1)
    occ = grid.binaries[0]
    assert occ[farthest < sphere_r].all()
    assert not occ[nearest > sphere_r].any()
    assert grid.occupied(torch.tensor([[0.0, 0.0, 0.0], [0.9, -0.9, 0.9], [3.0, 0.0, 0.0]]), 1.0).tolist() == [
        True,
        False,
        False,
    ]


def test_occupancy_grid_levels_lookup():
    grid = OccupancyGrid(resolution=4, levels=2)
    grid.binaries.zero_()
    grid.binaries[1, 3, 2, 2] = True  # level 1 covers [-2, 2]^3 (cells of 1.0)
    pts = torch.tensor([[1.5, 0.1, 0.1], [0.75, 0.05, 0.05], [2.5, 0.0, 0.0], [-1.5, 0.1, 0.1]])
    assert grid.occupied(pts, 1.0).tolist() == [True, False, False, False]
    lo, hi = grid.occupied_bounds(1.0)
    assert lo.tolist() == [1.0, 0.0, 0.0] and hi.tolist() == [2.0, 1.0, 1.0]


def test_grid_marching_equals_filtering_uniform_marching():
    # clipping rays to the occupied cells' box must not change which samples are kept
    sphere = ConstantDensitySphere(sphere_radius=0.3, sigma=10.0)
    grid = OccupancyGrid(resolution=16)
    grid.update(sphere.forward_density, radius=1.0, step=0, step_size=0.05)
    cams = orbit_cameras(3, 25.0, 1.6, 50.0, 16, 16)
    o, d = cams.rays_o.reshape(-1, 3), cams.rays_d.reshape(-1, 3)
    t_min, t_max = ray_aabb_intersect(o, d, -1.0, 1.0)
    t_min = t_min.clamp(min=0) + 0.37 * 0.03
    ri_u, ts_u, _ = march_rays_torch(o, d, t_min, t_max, 0.03, 116)
    pts = o[ri_u] + (ts_u + 0.015)[:, None] * d[ri_u]
    keep = grid.occupied(pts, 1.0)
    ri_g, ts_g, _ = march_rays_torch(o, d, t_min, t_max, 0.03, 116, grid=grid, radius=1.0)
    assert 0 < ri_g.numel() < ri_u.numel() / 3
    assert torch.equal(ri_g, ri_u[keep])
    assert torch.allclose(ts_g, ts_u[keep], atol=1e-6, rtol=0)


def test_occupancy_grid_ema_and_threshold():
    grid = OccupancyGrid(resolution=4, threshold=0.01, ema_decay=0.5)
    half = lambda p: (p[:, :1] > 0).float() * 2.0  # noqa: E731  density 2 on x>0
    grid.update(half, radius=1.0, step=0, step_size=0.1)
    expected = torch.zeros(4, 4, 4)
    expected[2:] = 0.2
    assert torch.allclose(grid.occs[0], expected)
    assert torch.equal(grid.binaries[0], expected > 0)
    grid.update(lambda p: torch.zeros(p.shape[0], 1), radius=1.0, step=1, step_size=0.1)
    assert torch.allclose(grid.occs[0], expected * 0.5)
    # threshold is min(0.01, mean = 0.05) = 0.01: decayed cells stay occupied
    assert torch.equal(grid.binaries[0], expected > 0)
    faint = OccupancyGrid(resolution=4, threshold=0.5)
    faint.update(half, radius=1.0, step=0, step_size=0.1)  # mean 0.1 < 0.5 caps the threshold
    assert torch.equal(faint.binaries[0], expected > 0)


def _trained_grid_renderer(sphere, n_updates=3, **cfg):
    r = VolumeRenderer({"num_samples_per_ray": 128, "grid_resolution": 32, **cfg})
    g = torch.Generator().manual_seed(1)
    for step in range(n_updates):
        r.update_occupancy_grid(sphere, step, generator=g)
    return r.eval()


def test_grid_image_equals_uniform_with_fewer_samples():
    # a cube whose faces lie on cell boundaries: the grid is exact after one update, so the only
    # difference to uniform sampling is early stopping (transmittance < 1e-4)
    cube = ConstantDensityCube(sphere_radius=0.25, sigma=20.0)
    cams = orbit_cameras(2, 15.0, 1.8, 40.0, 24, 24)
    uniform = render(VolumeRenderer({"num_samples_per_ray": 128, "estimator": "uniform"}).eval(), cams, cube)
    grid_r = _trained_grid_renderer(cube, n_updates=1)
    grid = render(grid_r, cams, cube)
    assert grid_r.occupancy_grid.occupied_fraction() == pytest.approx((8 / 32) ** 3)
    assert uniform.opacity.max() > 0.99 and (uniform.opacity == 0).any()
    for key in ("opacity", "rgb", "depth"):
        assert (getattr(grid, key) - getattr(uniform, key)).abs().max() < 1e-3, key
    assert uniform.extras["num_samples"] >= 3 * grid.extras["num_samples"]


def test_grid_image_of_sphere_converges_to_uniform():
    # cells that the ball only grazes are found by random points over several updates
    sphere = ConstantDensitySphere(sphere_radius=0.25, sigma=20.0)
    cams = orbit_cameras(2, 15.0, 1.8, 40.0, 24, 24)
    uniform = render(VolumeRenderer({"num_samples_per_ray": 128, "estimator": "uniform"}).eval(), cams, sphere)
    errors = []
    for n_updates in (1, 20):
        grid = render(_trained_grid_renderer(sphere, n_updates=n_updates), cams, sphere)
        errors.append((grid.opacity - uniform.opacity).abs().mean().item())
        assert uniform.extras["num_samples"] >= 20 * grid.extras["num_samples"]
    assert errors[1] < 5e-4 and errors[1] < errors[0] / 10


def test_gradients_match_finite_differences():
    sphere = ConstantDensitySphere(sphere_radius=0.4, sigma=2.0).double()
    cams = orbit_cameras(1, 10.0, 2.0, 40.0, 8, 8, dtype=torch.float64)
    r = VolumeRenderer({"num_samples_per_ray": 64, "estimator": "uniform", "randomized": False}).train()
    weights = torch.linspace(0.5, 1.5, 8 * 8 * 3, dtype=torch.float64).reshape(1, 8, 8, 3)

    def loss():
        out = render(r, cams, sphere)
        return (out.rgb * weights).sum() + out.depth.sum()

    loss().backward()
    for p in (sphere.log_sigma, sphere.color_logit):
        assert p.grad is not None and p.grad.abs().max() > 1e-3
        fd = torch.zeros_like(p)
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += 1e-6
                up = loss()
                p.view(-1)[i] -= 2e-6
                down = loss()
                p.view(-1)[i] += 1e-6
            fd.view(-1)[i] = (up - down) / 2e-6
        assert torch.allclose(p.grad, fd, rtol=1e-5, atol=1e-7)


def test_grid_updates_on_schedule_while_training_only():
    sphere = ConstantDensitySphere(sphere_radius=0.3, sigma=10.0)
    cams = orbit_cameras(1, 0.0, 2.0, 40.0, 4, 4)
    r = VolumeRenderer({"num_samples_per_ray": 16, "grid_resolution": 8, "grid_update_every": 16})
    calls = []
    for step in (3, 3, 5, 16, 16, 17, 32):
        r.update_step(0, step)
        before = sphere.density_calls
        render(r.train(), cams, sphere)
        calls.append(sphere.density_calls > before)
    # steps 0, 16, 32…, once each: the step alone decides, so a resumed run updates as an uninterrupted one
    assert calls == [False, False, False, True, False, False, True]
    before = sphere.density_calls
    r.update_step(0, 48)
    with torch.no_grad():
        render(r.eval(), cams, sphere)  # eval: early-stop density pass only, no grid update
    assert sphere.density_calls == before + 1


def test_grid_state_round_trips_through_state_dict():
    sphere = ConstantDensitySphere(sphere_radius=0.3, sigma=10.0)
    trained = _trained_grid_renderer(sphere, n_updates=1)
    fresh = VolumeRenderer({"num_samples_per_ray": 128, "grid_resolution": 32}).eval()
    assert fresh.occupancy_grid.binaries.all()  # a fresh grid skips nothing
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.occupancy_grid.binaries, trained.occupancy_grid.binaries)
    cams = orbit_cameras(1, 0.0, 2.0, 40.0, 6, 6)
    a, b = render(trained, cams, sphere), render(fresh, cams, sphere)
    assert a.extras["num_samples"] == b.extras["num_samples"]
    assert torch.equal(a.rgb, b.rgb)


def test_chunked_rendering_equals_unchunked():
    sphere = ConstantDensitySphere(sphere_radius=0.5, sigma=4.0)
    cams = orbit_cameras(2, 20.0, 2.0, 40.0, 8, 8)
    whole = render(VolumeRenderer({"estimator": "uniform", "eval_chunk_size": 0}).eval(), cams, sphere)
    parts = render(VolumeRenderer({"estimator": "uniform", "eval_chunk_size": 37}).eval(), cams, sphere)
    assert torch.allclose(whole.rgb, parts.rgb, atol=1e-6)
    assert torch.equal(whole.extras["ray_indices"], parts.extras["ray_indices"])


def test_config_errors_are_user_errors():
    with pytest.raises(UserError, match="estimator"):
        VolumeRenderer({"estimator": "proposal"})
    with pytest.raises(UserError, match="implementation"):
        VolumeRenderer({"implementation": "cuda"})
    with pytest.raises(UserError, match="num_sample_per_ray|num_samples_per_ray"):
        VolumeRenderer({"num_sample_per_ray": 3})
    if not nerfacc_available():
        with pytest.raises(UserError, match=r"pip install -e \.\[cuda\]"):
            VolumeRenderer({"implementation": "nerfacc"})
        return
    r = VolumeRenderer({"implementation": "nerfacc"})
    with pytest.raises(UserError, match="needs CUDA"):
        render(r, orbit_cameras(1, 0.0, 2.0, 40.0, 2, 2), ConstantDensitySphere())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nerfacc backend needs CUDA")
@pytest.mark.parametrize("estimator", ["uniform", "occgrid"])
def test_nerfacc_matches_torch_twin(estimator):
    pytest.importorskip("nerfacc")
    results = {}
    for impl in ("torch", "nerfacc"):
        sphere = ConstantDensitySphere(sphere_radius=0.4, sigma=5.0).cuda()
        r = VolumeRenderer(
            {"implementation": impl, "estimator": estimator, "num_samples_per_ray": 128, "randomized": False}
        ).cuda()
        if estimator == "occgrid":
            r.update_occupancy_grid(sphere, 0, generator=torch.Generator("cuda").manual_seed(0))
        cams = orbit_cameras(2, 15.0, 2.0, 40.0, 32, 32, device="cuda")
        out = render(r.train(), cams, sphere)
        (out.rgb.sum() + out.depth.sum()).backward()
        results[impl] = (out, sphere.log_sigma.grad.clone(), sphere.color_logit.grad.clone())
    (a, ga_s, ga_c), (b, gb_s, gb_c) = results["torch"], results["nerfacc"]
    # same marching rule; float rounding at cell faces may flip a few samples
    assert abs(a.extras["num_samples"] - b.extras["num_samples"]) <= 0.005 * a.extras["num_samples"]
    for key in ("rgb", "opacity", "depth"):
        assert (getattr(a, key) - getattr(b, key)).abs().mean() < 1e-3, key
    assert torch.allclose(ga_s, gb_s, rtol=1e-3)
    assert torch.allclose(ga_c, gb_c, rtol=1e-3)
