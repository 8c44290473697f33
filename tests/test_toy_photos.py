"""The toy photos (``toyworld/photos.py``) and the shipped toy SAM, BLIP and depth models.

The generator is checked against independent answers: the object's mask against the toy
dataset's own renderer (``render_toy``) placed where the photo says, a sphere's depth against the
ray–sphere distance, the truth files against the photo. The shipped models run through
``threestudio-like preprocess`` on a shipped photo (the command docs/toy-world.md gives) and are
scored against that photo's truths; each training script runs two steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from threestudio_like.cli import main
from threestudio_like.data.cameras import make_cameras
from threestudio_like.preprocess.framing import Framing
from threestudio_like.toyworld.dataset import render_toy
from threestudio_like.toyworld.photos import CAMERA_DISTANCE, CAMERA_FOVY, ToyPhotoConfig, ToyPhotoMaker, write_photos
from threestudio_like.toyworld.priors import ASSETS

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ASSETS / "toy-photos"


@pytest.fixture(scope="module")
def maker():
    return ToyPhotoMaker()


def rendered_mask(photo, size: int) -> np.ndarray:
    """The object's coverage ≥ 0.5 by the toy dataset's renderer, pasted at the photo's frame."""
    x0, y0, side = photo.frame
    supersample = ToyPhotoConfig().supersample
    cams = make_cameras(
        torch.tensor([photo.elevation]),
        torch.tensor([photo.azimuth]),
        torch.tensor([CAMERA_DISTANCE]),
        torch.tensor([CAMERA_FOVY]),
        side * supersample,
        side * supersample,
    )
    _, alpha = render_toy(photo.shape, photo.color, cams, "albedo", supersample=supersample)
    canvas = np.zeros((size + 2 * side, size + 2 * side), bool)
    canvas[y0 + side : y0 + 2 * side, x0 + side : x0 + 2 * side] = alpha[0, ..., 0].numpy() >= 0.5
    return canvas[side : side + size, side : side + size]


def test_the_mask_is_where_the_object_was_rendered(maker):
    for seed in range(4):
        photo = maker.photo(seed)
        assert photo.mask.sum() > 100
        assert (photo.mask == rendered_mask(photo, photo.rgb.shape[0])).all(), seed


def test_truths_agree_with_the_photo(maker):
    for seed in range(6):
        p = maker.photo(seed)
        ys, xs = np.nonzero(p.mask)
        assert p.object_box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert p.mask[p.point[1], p.point[0]]
        assert p.caption == f"a {p.color} {p.shape}"
        assert ((p.depth > 0) == p.mask).all()
        assert not (p.distractor_mask & p.mask).any()
        assert p.distractor is not None or not p.distractor_mask.any()
        n = p.rgb.shape[0]
        assert p.object_box[0] >= 1 and p.object_box[1] >= 1 and p.object_box[2] <= n - 1 and p.object_box[3] <= n - 1
        if p.distractor_mask.any():  # farther from the centre than the object
            dy, dx = np.nonzero(p.distractor_mask)
            assert (
                np.abs([dx.mean() - n / 2, dy.mean() - n / 2]).max()
                > np.abs([xs.mean() - n / 2, ys.mean() - n / 2]).max()
            )


def test_a_spheres_depth_is_the_distance_to_the_sphere(maker):
    """On the ray through the frame's centre the sphere (radius 0.45 at the origin) is 1.8 − 0.45 away."""
    photo = next(p for p in map(maker.photo, range(200)) if p.shape == "sphere")
    x0, y0, side = photo.frame
    c = side // 2
    off_axis = c + 0.5 - side / 2  # pixel (c, c)'s centre from the optical axis, in pixels, along x and y
    offset = math.hypot(off_axis, off_axis) / (side / 2) * math.tan(math.radians(CAMERA_FOVY / 2))
    ray = np.array([1.0, offset]) / math.hypot(1.0, offset)
    b = CAMERA_DISTANCE * ray[0]
    expected = b - math.sqrt(b * b - (CAMERA_DISTANCE**2 - 0.45**2))
    assert photo.depth[y0 + c, x0 + c] == pytest.approx(expected, abs=0.01)


def test_photos_are_deterministic_from_their_seed():
    a, b = ToyPhotoMaker().photo(7), ToyPhotoMaker().photo(7)
    assert (a.rgb == b.rgb).all() and (a.mask == b.mask).all() and (a.depth == b.depth).all()
    assert a.truth() == b.truth()
    c = ToyPhotoMaker().photo(8)
    assert not (a.rgb == c.rgb).all()


def test_written_truths_match_the_photos(tmp_path, maker):
    paths = write_photos(tmp_path, seeds=(3, 4))
    truths = json.loads((tmp_path / "truth.json").read_text())
    assert sorted(truths) == sorted(p.name for p in paths)
    for seed in (3, 4):
        photo = maker.photo(seed)
        t = truths[f"{photo.color}_{photo.shape}.png"]
        assert t["seed"] == seed and t["caption"] == photo.caption and t["elevation"] == photo.elevation
        assert (np.asarray(Image.open(tmp_path / f"{photo.color}_{photo.shape}.png")) == photo.rgb).all()
        assert ((np.asarray(Image.open(tmp_path / t["mask"])) > 127) == photo.mask).all()
        depth = np.asarray(Image.open(tmp_path / t["depth"])).astype(np.float32) * t["depth_unit"]
        assert np.abs(depth - photo.depth).max() <= t["depth_unit"]


# ---- the shipped photos and models -----------------------------------------------------------
def documented_command() -> list[str]:
    """The preprocess command docs/toy-world.md gives for a shipped toy photo (its words after the program)."""
    from test_docs_commands import commands

    for cmd in commands(ROOT / "docs" / "toy-world.md"):
        for words in cmd.simple_commands():
            if words[:3] == ["python", "-m", "threestudio_like.preprocess"] and "--sam" in words:
                return words[3:]
    raise AssertionError("docs/toy-world.md gives no preprocess command with the toy models")


def test_the_shipped_assets_fit_the_budget():
    """Issue 26: every shipped asset together within 20 MB; each photo model within 3 MB."""
    size = lambda folder: sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())  # noqa: E731
    assert size(ASSETS) <= 20e6
    for model in ("toy-sam", "toy-blip", "toy-depth"):
        assert size(ASSETS / model) <= 3 * 2**20, model


def test_the_shipped_photos_are_the_generators():
    truths = json.loads((PHOTOS / "truth.json").read_text())
    assert 3 <= len(truths) <= 5
    maker = ToyPhotoMaker()
    for name, t in truths.items():
        photo = maker.photo(t["seed"])
        assert name == f"{photo.color}_{photo.shape}.png" and t["caption"] == photo.caption
        assert ((np.asarray(Image.open(PHOTOS / t["mask"])) > 127) == photo.mask).mean() > 0.995


def test_preprocess_with_the_shipped_models_finds_the_truth(tmp_path):
    """The documented command (automatic segmentation: no prompt) on a shipped photo."""
    args = documented_command()
    photo_path = ROOT / args[0]
    truths = json.loads((PHOTOS / "truth.json").read_text())
    truth = truths[photo_path.name]
    out = tmp_path / "out"
    args = [a if i == 0 or args[i - 1] != "--out" else str(out) for i, a in enumerate(args)]
    assert main(["preprocess", str(photo_path), *args[1:]]) == 0
    stem = photo_path.stem
    record = json.loads((out / f"{stem}_preprocess.json").read_text())
    framing = Framing(tuple(record["crop_box"]), record["size"])
    true_mask = np.asarray(Image.open(PHOTOS / truth["mask"])) > 127
    coverage = framing.apply(true_mask.astype(np.float32), "bilinear")
    mask = np.asarray(Image.open(out / f"{stem}_mask.png")) > 127
    assert (mask & (coverage >= 0.5)).sum() / (mask | (coverage >= 0.5)).sum() >= 0.85

    assert set(record["caption"].split()) >= {truth["color"], truth["shape"]}

    depth = np.asarray(Image.open(PHOTOS / truth["depth"])).astype(np.float32) * truth["depth_unit"]
    disparity = framing.apply(np.where(true_mask, 1.0 / np.maximum(depth, 1e-6), 0.0), "bilinear")
    where = mask & (coverage > 0.999)
    predicted = np.load(out / f"{stem}_depth.npy")[where]
    assert np.corrcoef(predicted, disparity[where] / coverage[where])[0, 1] >= 0.8


# ---- the training scripts ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_sam", "train_blip", "train_depth"])
def test_training_script_runs_and_saves_a_loadable_model(script, tmp_path):
    import importlib

    from safetensors.torch import load_file

    from threestudio_like.preprocess.caption import Captioner
    from threestudio_like.preprocess.depth import DepthEstimator
    from threestudio_like.preprocess.segment import SamSegmenter

    module = importlib.import_module(f"threestudio_like.toyworld.{script}")
    out = tmp_path / "model"
    args = ["--work-dir", str(tmp_path / "work"), "--out", str(out), "--steps", "2", "--n-photos", "4"]
    summary = module.main([*args, "--batch-size", "2", "--threads", "1"])
    assert summary["steps"] == 2
    load = {"train_sam": SamSegmenter, "train_blip": Captioner, "train_depth": DepthEstimator}[script]
    load({"model": str(out), "device": "cpu"})  # the preprocessing's own loader
    assert sum(f.stat().st_size for f in out.iterdir()) <= 3 * 2**20

    # --init-from continues from the saved weights: a step at learning rate 0 saves them unchanged
    again = tmp_path / "again"
    args = ["--work-dir", str(tmp_path / "work2"), "--out", str(again), "--steps", "1", "--n-photos", "4"]
    module.main([*args, "--batch-size", "2", "--threads", "1", "--init-from", str(out), "--lr", "0"])
    first, second = (load_file(str(d / "model.safetensors")) for d in (out, again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
