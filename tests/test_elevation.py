"""Elevation of a photo's view (issue 26 item 5): the silhouette consistency against views of a box
projected by a pinhole written here, the estimator with a stand-in prior that draws those exact
views (the answer is known), its view sampler against the pipeline's own DDIM loop, the shipped
toy prior end to end (deterministic), and ``preprocess --zero123/--elevation``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy.spatial import ConvexHull

from threestudio_like.cli import main
from threestudio_like.preprocess.elevation import ElevationEstimator
from threestudio_like.preprocess.visual_hull import (
    border_background,
    moment_transform,
    object_silhouette,
    silhouette_consistency,
    warp,
)
from threestudio_like.toyworld.priors import ASSETS

TINY_ZERO123 = str(ASSETS / "tiny-zero123")
TOY_ZERO123 = str(ASSETS / "toy-zero123")
HALF = (0.45, 0.25, 0.15)
"""Half sides of the box (x, y, z): no two equal, so that turning it changes its outline."""
DISTANCE, FOVY = 1.8, 45.0
RED = (0.85, 0.15, 0.15)


def box_silhouette(elevation: float, azimuth: float, size: int, supersample: int = 4) -> np.ndarray:
    """(size,size) coverage of the box seen from (elevation, azimuth) at DISTANCE/FOVY: its 8
    corners through a pinhole camera looking at the origin with +Z up (written independently of
    data/cameras.py), the convex hull of their projections filled, averaged over supersamples."""
    e, a = math.radians(elevation), math.radians(azimuth)
    position = DISTANCE * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    corners = np.array(
        [[sx * HALF[0], sy * HALF[1], sz * HALF[2]] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    )
    rel = corners - position
    depth = rel @ forward
    n = size * supersample
    focal = n / (2 * math.tan(math.radians(FOVY) / 2))
    u = n / 2 + focal * (rel @ right) / depth
    v = n / 2 - focal * (rel @ up) / depth
    points = np.stack([u, v], 1)
    hull = points[ConvexHull(points).vertices]
    img = Image.new("L", (n, n), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in hull], fill=255)
    return np.asarray(img, np.float32).reshape(size, supersample, size, supersample).mean((1, 3)) / 255.0


def box_image(elevation: float, azimuth: float, size: int) -> np.ndarray:
    """(size,size,3) the red box over white."""
    alpha = box_silhouette(elevation, azimuth, size)[..., None]
    return alpha * np.array(RED) + (1 - alpha)


VIEWS = [[0.0, 45.0], [0.0, -45.0], [0.0, 90.0], [0.0, -90.0], [20.0, 0.0], [-20.0, 0.0], [20.0, 90.0], [20.0, -90.0]]


def test_silhouettes_of_the_true_cameras_are_consistent_and_wrong_elevations_are_not():
    truth = 30.0
    sils = torch.tensor(np.stack([box_silhouette(truth + de, da, 32) for de, da in [[0.0, 0.0]] + VIEWS]))
    de, da = torch.tensor([0.0] + [v[0] for v in VIEWS]), torch.tensor([0.0] + [v[1] for v in VIEWS])
    scores = {
        e: float(silhouette_consistency(sils, e + de, da, DISTANCE, FOVY).mean()) for e in (0.0, 15.0, 30.0, 45.0)
    }
    assert scores[30.0] > 0.93, scores
    assert all(scores[30.0] > scores[e] + 0.02 for e in (0.0, 45.0)), scores
    assert scores[30.0] > scores[15.0], scores


def test_object_silhouette_is_the_distance_from_the_border_colour():
    rgb = torch.full((1, 3, 16, 16), 0.6)  # a grey background, not white
    rgb[:, :, 5:11, 5:11] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    sil = object_silhouette(rgb)[0]
    assert sil[7:9, 7:9].min() == 1.0 and sil[:3].max() == 0.0 and sil[:, :3].max() == 0.0


def test_object_silhouette_follows_a_shaded_backdrop():
    """A backdrop whose brightness sweeps 0.64 → 1.0 across the view (as the toy world's azimuth
    backdrop does) plus a vertical ramp: its own border median is ≥ 0.2 away from parts of it, and
    the silhouette is still exactly the object."""
    u = torch.linspace(0.0, 1.0, 24)
    v = torch.linspace(0.0, 1.0, 20)[:, None]
    backdrop = 0.64 + 0.36 * torch.cos(math.pi / 2 * u) ** 2 + 0.05 * v - 0.05
    rgb = backdrop.clamp(0.0, 1.0).expand(1, 3, 20, 24).clone()
    assert (border_background(rgb) - rgb).abs().max() < 0.01  # a sum of a row and a column profile
    rgb[:, :, 6:14, 8:18] = torch.tensor([0.85, 0.15, 0.15])[:, None, None]
    sil = object_silhouette(rgb)[0]
    outside = torch.ones(20, 24, dtype=torch.bool)
    outside[5:15, 7:19] = False  # the box blur reaches one pixel past the object
    assert sil[7:13, 9:17].min() == 1.0 and sil[outside].max() == 0.0


def disc(cx: float, cy: float, r: float, size: int = 32, supersample: int = 8) -> torch.Tensor:
    """(size,size) coverage of a disc centred at pixel coordinates (cx, cy) (pixel i spans [i, i+1))."""
    t = (torch.arange(size * supersample) + 0.5) / supersample
    inside = ((t[None, :] - cx) ** 2 + (t[:, None] - cy) ** 2 <= r**2).float()
    return inside.view(size, supersample, size, supersample).mean((1, 3))


def test_moment_transform_moves_and_scales_onto_the_target_at_any_resolution():
    """A disc of radius 4 at (10, 12) of a 32² frame onto one of radius 6 at (17.5, 15): the map,
    applied to the source at 32² or to the same disc at 64², gives the target's disc (its edge
    blurred by the resampling: compared at 0.5); an empty side gives the identity."""
    source, target = disc(10.0, 12.0, 4.0), disc(17.5, 15.0, 6.0)
    theta = moment_transform(source, target)
    moved = warp(source[None, None], theta)[0, 0]
    assert torch.equal(moved > 0.5, target > 0.5)
    moved_64 = warp(disc(20.0, 24.0, 8.0, size=64)[None, None], theta)[0, 0]  # the source's disc at 64²
    for image, (cx, cy, r) in [(moved, (17.5, 15.0, 6.0)), (moved_64, (35.0, 30.0, 12.0))]:
        xs = torch.arange(image.shape[0]) + 0.5
        assert abs(float((image.sum(0) * xs).sum() / image.sum()) - cx) < 0.05
        assert abs(float((image.sum(1) * xs).sum() / image.sum()) - cy) < 0.05
        assert abs(float(image.sum()) / (math.pi * r * r) - 1) < 0.02
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert torch.equal(moment_transform(source, torch.zeros(32, 32)), identity)


class ExactViews(ElevationEstimator):
    """A stand-in prior that draws the true views of the box seen at ``truth``: the elevation whose
    views agree with the input is known."""

    truth = 0.0
    drawn_for: list = []

    def draw_views(self, pipe, image, poses, reference_elevation):
        self.drawn_for.append(reference_elevation)
        views = [box_image(self.truth + de, da, pipe.image_size) for de, da in poses.tolist()]
        return torch.tensor(np.stack(views), dtype=torch.float32).permute(0, 3, 1, 2)[None]


class FakePipe:
    image_size = 32


def box_rgba(elevation: float, size: int = 32) -> np.ndarray:
    alpha = box_silhouette(elevation, 0.0, size)[..., None]
    return np.concatenate([np.broadcast_to(np.array(RED), (size, size, 3)), alpha], -1).astype(np.float32)


@pytest.mark.parametrize("truth", [0.0, 20.0, 40.0])
def test_exact_views_give_the_true_elevation(truth):
    est = ExactViews({"model": TINY_ZERO123, "distance": DISTANCE, "fovy_deg": FOVY, "step_deg": 10.0, "device": "cpu"})
    est.truth, est.drawn_for = truth, []
    result = est.estimate(FakePipe(), box_rgba(truth))
    assert result.elevation_deg == truth, result
    assert est.drawn_for == [-20.0]  # zero123's relative poses: the views are drawn once
    record = result.record()
    assert record["candidates_deg"] == [-20.0 + 10 * i for i in range(9)] and len(record["consistency"]) == 9
    assert float(result) == truth


@pytest.mark.parametrize("truth", [0.0, 20.0, 40.0])
def test_align_input_undoes_the_photo_framing(truth):
    """The box framed as ``preprocess`` frames a photo (its bounding box centred, filling 0.45 of
    the frame where its render fills about 0.6): the views (exact, as rendered) fit it worse at
    the truth (from 40°, better at 25°); moved onto the drawn view of itself (pose [0, 0], drawn
    first) the input fits them at the truth, and the estimate is the truth."""
    from threestudio_like.preprocess.framing import frame_object

    rgba = box_rgba(truth, 64)
    ys, xs = np.nonzero(rgba[..., 3] >= 0.5)
    framing = frame_object((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), 0.45, 64)
    framed = np.concatenate([framing.apply(rgba[..., :3], "bilinear"), framing.apply(rgba[..., 3:], "bilinear")], -1)
    settings = {"model": TINY_ZERO123, "distance": DISTANCE, "fovy_deg": FOVY, "device": "cpu"}
    est = ExactViews(settings)
    est.truth = truth
    unaligned = est.estimate(FakePipe(), framed)
    est = ExactViews({**settings, "align_input": True})
    est.truth, est.drawn_for = truth, []
    aligned = est.estimate(FakePipe(), framed)
    assert aligned.elevation_deg == truth, aligned
    at_truth = aligned.candidates_deg.index(truth)
    assert aligned.consistency[at_truth] > unaligned.consistency[at_truth] + 0.02, (aligned, unaligned)
    assert est.drawn_for == [-20.0, -20.0] and aligned.record()["align_input"] is True


def test_stable_zero123_draws_the_views_again_for_each_candidate():
    est = ExactViews({"model": TINY_ZERO123, "pose_embedding": "stable_zero123", "step_deg": 20.0, "device": "cpu"})
    est.drawn_for = []
    est.estimate(FakePipe(), box_rgba(0.0))
    assert est.drawn_for == [-20.0, 0.0, 20.0, 40.0, 60.0]


def draw_with_the_pipeline(start_from_background: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(draw_views' views, Zero123Pipeline.__call__'s from the same noise, started from pure noise
    or from the white image noised to the first timestep: √ᾱ·1 + √(1−ᾱ)·noise)."""
    from diffusers.utils.torch_utils import randn_tensor

    from threestudio_like.guidance.zero123_pipeline import Zero123Pipeline

    pipe = Zero123Pipeline.from_pretrained(TINY_ZERO123)
    pipe.set_progress_bar_config(disable=True)
    est = ElevationEstimator(
        {
            "model": TINY_ZERO123,
            "samples": 1,
            "steps": 4,
            "guidance_scale": 3.0,
            "device": "cpu",
            "start_from_background": start_from_background,
        }
    )
    image = torch.rand(1, 3, pipe.image_size, pipe.image_size, generator=torch.Generator().manual_seed(1))
    poses = torch.tensor(VIEWS)
    ours = est.draw_views(pipe, image, poses, 10.0)[0]
    side = pipe.unet.config.sample_size
    noise = randn_tensor((len(VIEWS), pipe.latent_channels, side, side), generator=torch.Generator().manual_seed(0))
    pipe.scheduler.set_timesteps(4)
    alpha_bar = pipe.scheduler.alphas_cumprod[pipe.scheduler.timesteps[0]]
    start = alpha_bar.sqrt() * 1.0 + (1 - alpha_bar).sqrt() * noise if start_from_background else noise
    theirs = pipe(
        image, elevation=poses[:, 0], azimuth=poses[:, 1], num_inference_steps=4, guidance_scale=3.0, latents=start
    ).images
    return ours, theirs


@pytest.mark.parametrize("start_from_background", [False, True])
def test_views_are_drawn_by_the_pipelines_ddim_sampler(start_from_background):
    """With a scheduler that does not clip, draw_views is Zero123Pipeline.__call__ (same start)."""
    ours, theirs = draw_with_the_pipeline(start_from_background)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_bad_settings_are_refused():
    from threestudio_like.core.errors import UserError

    with pytest.raises(UserError, match="reach a pole"):
        ElevationEstimator({"model": TINY_ZERO123, "elevation_range": [-20, 80]})
    with pytest.raises(UserError, match=r"elevation_range must be \[lowest, highest\]"):
        ElevationEstimator({"model": TINY_ZERO123, "elevation_range": [40, 10]})
    with pytest.raises(UserError, match=r"views must be a non-empty list"):
        ElevationEstimator({"model": TINY_ZERO123, "views": [[10.0]]})
    with pytest.raises(UserError, match="does not hold a Zero123"):
        ElevationEstimator({"model": str(ASSETS / "tiny-clip")})


def toy_render(elevation: float, shape: str = "mug") -> np.ndarray:
    from threestudio_like.data.cameras import make_cameras
    from threestudio_like.toyworld.dataset import render_toy

    cams = make_cameras(
        torch.tensor([elevation]), torch.zeros(1), torch.tensor([DISTANCE]), torch.tensor([FOVY]), 128, 128
    )
    rgb, alpha = render_toy(shape, "blue", cams, shading="albedo", supersample=2)
    fg = ((rgb - (1 - alpha)) / alpha.clamp(min=1e-6)).clamp(0, 1)
    return torch.cat([fg, alpha], -1)[0].numpy()


def test_the_toy_prior_estimate_is_deterministic():
    """The shipped toy Zero123 end to end (how close it gets: benchmarks/bench_elevation.py)."""
    cfg = {"model": TOY_ZERO123, "distance": DISTANCE, "fovy_deg": FOVY, "steps": 6, "samples": 1, "device": "cpu"}
    rgba = toy_render(30.0)
    first, second = ElevationEstimator(cfg)(rgba), ElevationEstimator(cfg)(rgba)
    assert first.consistency == second.consistency and first.elevation_deg == second.elevation_deg
    assert first.elevation_deg in first.candidates_deg and 0.3 < max(first.consistency) <= 1.0


@pytest.mark.slow
def test_toy_anything3d_estimates_with_the_toy_stable_zero123_and_follows_the_elevation():
    """experiment=toy_anything3d's estimator: the shipped toy Stable Zero123 (its pose embedding
    from the folder's name), the views drawn for each candidate from the input aligned to its own
    view. A cylinder rendered from 0° and from 45°, framed as that experiment frames a photo: the
    second is put at least 20° higher (the estimates follow the truth; how closely, and that a mug
    does not: docs/preprocess.md, *Elevation*)."""
    from omegaconf import OmegaConf

    from threestudio_like.cli import compose_config
    from threestudio_like.preprocess.framing import frame_object
    from threestudio_like.preprocess.masks import bounding_box

    cfg = compose_config(["experiment=toy_anything3d"])
    settings = OmegaConf.to_container(cfg.prepare.elevation, resolve=True)
    assert settings["model"] == str(ASSETS / "toy-stable-zero123") and settings["align_input"]
    # 4 candidates, not 15 (each drawing is seeded alike, so the others would not change their scores)
    estimator = ElevationEstimator({**settings, "device": "cpu", "elevation_range": [0.0, 45.0], "step_deg": 15.0})
    assert estimator.pose_kind == "stable_zero123"
    assert (settings["distance"], settings["fovy_deg"]) == (DISTANCE, FOVY)
    estimates = []
    for elevation in (0.0, 45.0):
        rgba = toy_render(elevation, "cylinder")
        framing = frame_object(bounding_box(rgba[..., 3] >= 0.5), cfg.prepare.preprocess.fill, 128)
        estimates.append(estimator(np.clip(framing.apply(rgba, "bilinear"), 0.0, 1.0)).elevation_deg)
    assert estimates[1] - estimates[0] >= 20.0, estimates


# ---- threestudio-like preprocess --zero123 / --elevation ------------------------------------------
@pytest.fixture
def cutout(tmp_path):
    path = tmp_path / "in" / "box.png"
    path.parent.mkdir()
    Image.fromarray(np.round(box_rgba(20.0, 64) * 255).astype(np.uint8)).save(path)
    return path


def run_preprocess(cutout, out, *flags, capsys):
    code = main(["preprocess", str(cutout), "--no-caption", "--no-depth", "--out", str(out), "--size", "64", *flags])
    return code, capsys.readouterr().err


def test_given_elevation_is_recorded(cutout, tmp_path, capsys):
    code, err = run_preprocess(cutout, tmp_path / "out", "--elevation", "12.5", "--zero123", "unused", capsys=capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "box_preprocess.json").read_text())
    assert (record["elevation"], record["elevation_note"], record["elevation_estimate"]) == (12.5, "given", None)


def test_zero123_flag_estimates_the_elevation(cutout, tmp_path, capsys):
    code, err = run_preprocess(cutout, tmp_path / "out", "--zero123", TINY_ZERO123, "--device", "cpu", capsys=capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "box_preprocess.json").read_text())
    details = record["elevation_estimate"]
    assert record["elevation_note"] == "estimated" and record["elevation"] in details["candidates_deg"]
    assert details["model"] == TINY_ZERO123 and len(details["consistency"]) == len(details["candidates_deg"]) == 17
    assert record["elevation"] == details["candidates_deg"][int(np.argmax(details["consistency"]))]
    assert f"elevation: {record['elevation']:g}° (estimated)" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--zero123", "nobody/no-such-zero123"], "--zero123: pretrained model 'nobody/no-such-zero123' is neither"),
        (["--zero123", str(ASSETS / "tiny-clip")], f"--zero123 '{ASSETS / 'tiny-clip'}' does not hold a Zero123"),
        (["--elevation", "95"], "elevation_deg must be > -90 and < 90, got 95.0"),
    ],
)
def test_bad_elevation_flags_are_one_error_line_and_write_nothing(cutout, tmp_path, capsys, flags, message):
    code, err = run_preprocess(cutout, tmp_path / "out", *flags, capsys=capsys)
    lines = [ln for ln in err.splitlines() if not ln.startswith("preprocess: ")]
    assert code == 2 and lines == [f"error: {lines[0][7:]}"] and lines[0][7:].startswith(message), err
    assert not (tmp_path / "out").exists()
