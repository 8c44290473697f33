"""Cameras and rays against hand-computed values."""

import math

import torch

from threestudio_like.data.cameras import RandomCameraSampler, make_cameras, orbit_cameras
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
