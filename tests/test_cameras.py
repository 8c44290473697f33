"""Cameras and rays against hand-computed values."""

import math

import pytest
import torch

from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import RandomCameraSampler, make_cameras, orbit_cameras, spherical_to_position
from threestudio_like.prompt.views import view_names, view_prompt


def _one(elev, azim, dist, fovy, h, w):
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return make_cameras(t(elev), t(azim), t(dist), t(fovy), h, w)


def test_front_camera_frame_and_rays():
    # camera on +X at distance 2 looking at the origin, Z up: right = +Y, up = +Z, back = +X
    cam = _one(0, 0, 2, 90, 2, 2)
    c2w = cam.c2w[0]
    assert torch.allclose(c2w[:3, 3], torch.tensor([2.0, 0, 0]), atol=1e-6)
    assert torch.allclose(c2w[:3, 0], torch.tensor([0.0, 1, 0]), atol=1e-6)
    assert torch.allclose(c2w[:3, 1], torch.tensor([0.0, 0, 1]), atol=1e-6)
    assert torch.allclose(c2w[:3, 2], torch.tensor([1.0, 0, 0]), atol=1e-6)
    # 2x2 image, fovy 90° → focal = 1 px; pixel (0,0) centre at (0.5, 0.5): camera dir (-0.5, 0.5, -1)
    # world = right*(-0.5) + up*(0.5) + back*(-1) = (-1, -0.5, 0.5)
    expected = torch.tensor([-1.0, -0.5, 0.5]) / math.sqrt(1.5)
    assert torch.allclose(cam.rays_d[0, 0, 0], expected, atol=1e-6)
    assert torch.allclose(cam.rays_o[0, 1, 1], torch.tensor([2.0, 0, 0]), atol=1e-6)


def test_spherical_position_and_overhead():
    cam = _one(30, 90, 2, 60, 4, 4)
    e = math.radians(30)
    assert torch.allclose(cam.position[0], torch.tensor([0.0, 2 * math.cos(e), 2 * math.sin(e)]), atol=1e-6)
    top = _one(90, 0, 1, 60, 4, 4)  # looking straight down: falls back to +Y as up
    assert torch.isfinite(top.c2w).all()
    assert torch.allclose(top.c2w[0, :3, 2], torch.tensor([0.0, 0, 1]), atol=1e-6)


def test_mvp_projects_ray_points_to_their_pixel():
    cam = _one(20, 40, 2.5, 50, 6, 8)
    i, j = 1, 6
    p = cam.rays_o[0, i, j] + 1.7 * cam.rays_d[0, i, j]
    clip = cam.mvp[0] @ torch.cat([p, torch.ones(1)])
    ndc = clip[:2] / clip[3]
    # nvdiffrast convention: pixel (i,j) centre at ndc (2(j+.5)/W-1, 2(i+.5)/H-1),
    # row 0 = image top thanks to the y flip
    assert torch.allclose(ndc, torch.tensor([2 * (j + 0.5) / 8 - 1, 2 * (i + 0.5) / 6 - 1]), atol=1e-5)


def test_orbit_is_evenly_spaced_and_centered():
    cams = orbit_cameras(4, 15, 1.5, 60, 8, 8)
    assert torch.allclose(cams.azimuth, torch.tensor([0.0, 90, -180, -90]))
    centre = cams.rays_d[:, 3:5, 3:5].mean(dim=(1, 2))
    to_origin = torch.nn.functional.normalize(-cams.position, dim=-1)
    assert torch.allclose(torch.nn.functional.normalize(centre, dim=-1), to_origin, atol=1e-5)


def test_random_sampler_ranges_stratified_azimuth_and_progressive():
    s = RandomCameraSampler(
        {
            "batch_size": 4,
            "elevation_range": [0, 30],
            "camera_perturb": 0,
            "center_perturb": 0,
            "up_perturb": 0,
            "height": 8,
            "width": 8,
        }
    )
    g = torch.Generator().manual_seed(0)
    b = s.sample(generator=g)
    assert ((b.elevation >= 0) & (b.elevation <= 30)).all()
    sectors = ((b.azimuth + 180) // 90).long()
    assert sorted(sectors.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(b.position.norm(dim=-1), b.distance, atol=1e-5)
    p = RandomCameraSampler({"progressive_until": 100, "eval_elevation_deg": 15, "elevation_range": [-10, 90]})
    p.update_step(0, 0)
    assert p._ranges() == ((15.0, 15.0), (0.0, 0.0))
    p.update_step(0, 50)
    assert p._ranges() == ((2.5, 52.5), (-90.0, 90.0))


def test_scheduled_resolution():
    s = RandomCameraSampler({"height": {"milestones": [[0, 32], [10, 64]]}, "width": [0, 32, 64, 10]})
    s.update_step(0, 5)
    assert (s.height, s.width) == (32, 48)
    s.update_step(0, 10)
    assert s.sample().rays_d.shape == (1, 64, 64, 3)


def test_view_names():
    e = torch.tensor([0.0, 0, 0, 0, 70, 10])
    a = torch.tensor([0.0, 90, 180, -170, 0, -45])
    assert view_names(e, a) == ["front", "side", "back", "back", "overhead", "front"]
    assert view_prompt("a red cube", "side") == "a red cube, side view"


def _many(cfg, n_batches=200, batch=100, seed=0):
    """Elevations, positions, light positions of n_batches×batch sampled views (1×1 pixel)."""
    s = RandomCameraSampler({"height": 1, "width": 1, "batch_size": batch, **cfg})
    g = torch.Generator().manual_seed(seed)
    batches = [s.sample(generator=g) for _ in range(n_batches)]
    return [torch.stack([getattr(b, k) for b in batches]) for k in ("elevation", "position", "light_position")]


def test_elevation_sampling_in_degrees_on_the_sphere_and_mixed():
    e0, e1 = -10.0, 80.0
    s0, s1 = math.sin(math.radians(e0)), math.sin(math.radians(e1))
    cdf_degrees = lambda e: (e - e0) / (e1 - e0)  # noqa: E731
    cdf_sphere = lambda e: (math.sin(math.radians(e)) - s0) / (s1 - s0)  # noqa: E731
    for kind, cdf in (
        ("degrees", cdf_degrees),
        ("sphere", cdf_sphere),
        ("mixed", lambda e: 0.5 * cdf_degrees(e) + 0.5 * cdf_sphere(e)),
    ):
        (elev, _, _) = _many({"elevation_range": [e0, e1], "elevation_sampling": kind})
        assert elev.min() >= e0 - 1e-4 and elev.max() <= e1 + 1e-4
        for e in (10.0, 35.0, 60.0):  # empirical CDF of 20 000 draws within ±0.015
            assert (elev < e).float().mean().item() == pytest.approx(cdf(e), abs=0.015), (kind, e)
    # mixed picks one of the two per batch: a batch's mean elevation is near one of the two means
    (elev, _, _) = _many({"elevation_range": [e0, e1], "elevation_sampling": "mixed"}, n_batches=40, batch=1000)
    mean_sphere = math.degrees(sum(math.asin(s0 + (s1 - s0) * (k + 0.5) / 1000) for k in range(1000)) / 1000)
    near = [min(abs(m - 35.0), abs(m - mean_sphere)) for m in elev.mean(1).tolist()]
    assert max(near) < 3.0 and abs(mean_sphere - 35.0) > 8.0


def test_camera_jitter_uniform_or_normal():
    base = {"elevation_range": [20, 20], "azimuth_range": [30, 30], "distance_range": [2, 2], "camera_perturb": 0.1}
    ideal = spherical_to_position(torch.tensor([20.0]), torch.tensor([30.0]), torch.tensor([2.0]))
    for kind, std in (("uniform", 0.1 / math.sqrt(3)), ("normal", 0.1)):
        cfg = {**base, "camera_perturb_distribution": kind, "batch_uniform_azimuth": False}
        (_, pos, _) = _many(cfg, n_batches=50)
        jitter = (pos.reshape(-1, 3) - ideal).flatten()
        assert jitter.std().item() == pytest.approx(std, rel=0.05)
        if kind == "uniform":
            assert jitter.abs().max() <= 0.1 + 1e-6 and jitter.abs().max() > 0.099


def test_magic3d_light_within_60_degrees_of_the_camera_direction():
    cfg = {"light_sample_strategy": "magic3d", "light_distance_range": [0.8, 1.5], "elevation_range": [-10, 45]}
    (_, pos, light) = _many(cfg, n_batches=50)
    pos, light = pos.reshape(-1, 3), light.reshape(-1, 3)
    dist = light.norm(dim=-1)
    assert dist.min() >= 0.8 - 1e-5 and dist.max() <= 1.5 + 1e-5
    # light elevation e ~ U[30°, 90°] about the camera direction: cos(angle to it) = sin(e) ∈ [0.5, 1]
    cos = (torch.nn.functional.normalize(light, dim=-1) * torch.nn.functional.normalize(pos, dim=-1)).sum(-1)
    angle = torch.rad2deg(torch.acos(cos.clamp(-1, 1)))
    assert angle.max() <= 60.0 + 1e-3 and angle.max() > 59.0 and angle.min() < 3.0
    assert (cos < 0.75).float().mean().item() == pytest.approx(
        (math.asin(0.75) - math.pi / 6) / (math.pi / 3), abs=0.02
    )  # sin(e) < 0.75 ⇔ e < asin(0.75): uniform e
    # the azimuth about the camera axis is uniform: the light is as often left as right of the camera
    right = torch.linalg.cross(pos, torch.tensor([0.0, 0.0, 1.0]).expand_as(pos), dim=-1)
    assert ((light * right).sum(-1) > 0).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_resolution_schedule_switches_size_and_batch_together():
    s = RandomCameraSampler({"resolution_schedule": [[0, 8, 8, 3], [5, 16, 12, 2]], "height": 99, "batch_size": 7})
    assert (s.height, s.width, s.batch_size) == (8, 8, 3)
    s.update_step(0, 4)
    assert s.sample().rays_d.shape == (3, 8, 8, 3)
    s.update_step(0, 5)
    assert s.sample().rays_d.shape == (2, 16, 12, 3)
    for bad in ([[1, 8, 8, 1]], [[0, 8, 8, 1], [0, 16, 16, 1]], [[0, 8, 8]], [[0, 8, 0, 1]]):
        with pytest.raises(UserError, match="resolution_schedule"):
            RandomCameraSampler({"resolution_schedule": bad})
