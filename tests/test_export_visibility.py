"""Which texels the training views saw, and the fill of the unseen ones, against ground truth:
analytic ray casting on spheres, and a box whose underside no camera sees."""

import numpy as np
import pytest
import torch
import trimesh

from threestudio_like.export.bake import bake_textures
from threestudio_like.export.uv_atlas import uv_unwrap
from threestudio_like.export.visibility import fill_from_seen, seen_points, training_viewpoints
from threestudio_like.geometry.base import Mesh
from threestudio_like.ops.rasterize import Rasterizer


def _sphere(center, radius, subdiv=4) -> trimesh.Trimesh:
    tm = trimesh.creation.icosphere(subdiv, radius=radius)
    tm.apply_translation(center)
    return tm


def test_training_viewpoints_cover_the_ranges():
    views = training_viewpoints((-10, 60), (-180, 180), 2.0, 45.0, resolution=64, n_elevations=3, n_azimuths=4)
    assert views.mvp.shape == (12, 4, 4) and views.resolution == 64
    pos = views.position.double().numpy()
    assert np.allclose(np.linalg.norm(pos, axis=1), 2.0, atol=1e-5)
    elevation = np.degrees(np.arcsin(pos[:, 2] / 2.0))
    azimuth = np.degrees(np.arctan2(pos[:, 1], pos[:, 0]))
    assert np.allclose(sorted(set(np.round(elevation, 3))), [-10, 25, 60])
    assert np.allclose(sorted(set(np.round(azimuth, 3) % 360)), [0, 90, 180, 270])  # 360° not repeated
    # each camera looks at the origin: the origin projects to the image centre
    centre = torch.einsum("bij,j->bi", views.mvp.double(), torch.tensor([0.0, 0, 0, 1], dtype=torch.float64))
    assert torch.allclose(centre[:, :2] / centre[:, 3:], torch.zeros(12, 2, dtype=torch.float64), atol=1e-6)


def test_seen_points_match_ray_casting_with_occlusion():
    """Two spheres on the X axis, one camera on +X: a vertex of the far sphere is seen iff it faces
    the camera (at less than arccos(min_cos)) and the segment to the camera misses the near sphere."""
    near, far = _sphere((0.6, 0, 0), 0.4), _sphere((-0.6, 0.25, 0), 0.5)
    both = trimesh.util.concatenate([near, far])
    mesh = Mesh(torch.tensor(both.vertices, dtype=torch.float32), torch.tensor(both.faces))
    views = training_viewpoints((0, 0), (0, 0), 4.0, 40.0, resolution=256, n_elevations=1, n_azimuths=1)
    cam = views.position[0].double().numpy()
    p = far.vertices
    n = (p - np.array([-0.6, 0.25, 0])) / 0.5
    to_cam = cam - p
    dist = np.linalg.norm(to_cam, axis=1)
    cos = (n * to_cam).sum(1) / dist
    # closest approach of each segment p → camera to the near sphere's centre
    c = np.array([0.6, 0, 0])
    t = np.clip(((c - p) * to_cam).sum(1) / dist**2, 0, 1)
    miss = np.linalg.norm(p + t[:, None] * to_cam - c, axis=1)
    truth = (cos > 0.25) & (miss > 0.4)
    clear = (np.abs(cos - 0.25) > 0.03) & (np.abs(miss - 0.4) > 0.02)  # away from both boundaries
    got = seen_points(
        mesh,
        torch.tensor(p, dtype=torch.float32),
        torch.tensor(n, dtype=torch.float32),
        views,
        Rasterizer("torch"),
        min_cos=0.25,
    ).numpy()
    assert truth[clear].sum() > 50 and (~truth[clear] & (cos[clear] > 0.25)).sum() > 50  # both cases occur
    assert np.array_equal(got[clear], truth[clear])


def test_fill_from_seen_takes_nearest_seen_values():
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [10, 0, 0], [0.1, 0, 0], [9, 0, 0]])
    values = torch.tensor([[1.0], [1.0], [5.0], [99.0], [99.0]])
    seen = torch.tensor([True, True, True, False, False])
    out = fill_from_seen(values, points, seen, k=2)
    assert torch.equal(out[:3], values[:3])
    # inverse-distance weights of the two nearest seen points
    assert out[3, 0] == pytest.approx(1.0)  # both neighbours hold 1
    w = np.array([1 / 1.0, 1 / 8.0])  # (10,0,0) at 1, (1,0,0) at 8
    assert out[4, 0] == pytest.approx(float((w * [5.0, 1.0]).sum() / w.sum()), rel=1e-6)
    assert torch.equal(fill_from_seen(values, points, torch.zeros(5, dtype=torch.bool)), values)


def test_bake_fills_the_underside_no_view_saw():
    """The appearance field holds a stray white on the box's underside, which the cameras (all
    above the box) never see: the bake replaces it by the colour of the seen surface nearby
    (red sides), and leaves every seen texel as the field gives it. Without views (the old bake)
    the underside stays white."""
    box = trimesh.creation.box((1.0, 1.0, 1.0)).subdivide().subdivide()
    mesh = uv_unwrap(Mesh(torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces)), 128, 2)
    red, green, white = torch.tensor([0.8, 0.1, 0.1]), torch.tensor([0.1, 0.8, 0.1]), torch.ones(3)

    def appearance(p):
        colour = torch.where((p[:, 2:] > 0.499), green, red)
        return {"albedo": torch.where(p[:, 2:] < -0.499, white, colour)}

    views = training_viewpoints((10, 60), (-180, 180), 3.0, 40.0, resolution=128)
    baked = bake_textures(mesh, appearance, 128, dilate_px=2, rasterizer=Rasterizer("torch"), views=views)
    plain = bake_textures(mesh, appearance, 128, dilate_px=2, rasterizer=Rasterizer("torch"))
    from threestudio_like.export.bake import uv_surface_points

    texel, points, _ = uv_surface_points(mesh, 128, Rasterizer("torch"))
    bottom = points[:, 2] < -0.499
    seen = baked.seen.reshape(-1)[texel]
    assert not seen[bottom].any() and seen[~bottom].all()  # ground truth: only the underside is hidden
    albedo, old = baked.albedo.reshape(-1, 3)[texel], plain.albedo.reshape(-1, 3)[texel]
    assert torch.allclose(albedo[bottom], red.expand(int(bottom.sum()), 3), atol=1e-6)
    assert torch.allclose(old[bottom], white.expand(int(bottom.sum()), 3))  # the stray colour, unfilled
    assert torch.equal(albedo[~bottom], old[~bottom])
