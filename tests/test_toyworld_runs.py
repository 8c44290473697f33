"""Shortened toy runs through the CLI with the shipped toy priors must recover the shape: a
text-to-3D default run the prompted torus, a toy image-to-3D run the pictured cone (and, with
Gaussians as shipped, the pictured cube). Their IoU
against the true shape must be well above what the initial density blob scores (torus 0.26, cone
0.30 on the 64³ scoring grid; random occupancy ≤ 0.05 — benchmarks/bench_toy_baseline.py) and
above every other toy shape's by a margin."""

import json

import pytest
from test_experiments import ROOT, run_cli

BLOB_TORUS_IOU = 0.26


@pytest.mark.slow
def test_shortened_default_recovers_the_torus(tmp_path):
    p = run_cli(
        "prompt=a red torus",
        "stage.coarse.steps=300",
        "stage.refine.steps=20",
        "video.enabled=false",
        "output_dir=run",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    score = next(r for r in records if r["stage"] == "eval")
    assert score["toy_shape"] == "torus" and score["color"] == "red"
    assert score["iou"] >= BLOB_TORUS_IOU + 0.2, score
    assert score["iou_margin"] >= 0.1, score
    assert score["color_nearest"] == "red", score


BLOB_CONE_IOU = 0.30


@pytest.mark.slow
def test_shortened_toy_image_to_3d_recovers_the_cone(tmp_path):
    p = run_cli(
        "experiment=toy_zero123",
        "image=" + str(ROOT / "threestudio_like/assets/toy-images/yellow_cone.png"),
        "stage.coarse.steps=200",
        "stage.refine.steps=10",
        "video.enabled=false",
        "output_dir=run",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    score = next(r for r in records if r["stage"] == "eval")
    assert score["toy_shape"] == "cone" and score["color"] == "yellow"  # read from the file name
    assert score["iou"] >= BLOB_CONE_IOU + 0.25, score
    assert score["iou_margin"] >= 0.1, score


@pytest.mark.slow
def test_shortened_toy_photo_to_3d_recovers_the_cylinder(tmp_path):
    """One command from a shipped toy photo: the toy SAM, BLIP and depth models and the elevation
    estimate prepare it, then the toy image-to-3D stages. Scored against the photo's true shape
    (its file name), not the caption."""
    p = run_cli(
        "experiment=toy_anything3d",
        "image=" + str(ROOT / "threestudio_like/assets/toy-photos/red_cylinder.png"),
        "stage.coarse.steps=200",
        "stage.refine.steps=10",
        "video.enabled=false",
        "output_dir=run",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "run"
    record = json.loads((run / "preprocess" / "red_cylinder_preprocess.json").read_text())
    assert record["caption"] and record["elevation"] is not None
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    score = next(r for r in records if r["stage"] == "eval")
    assert score["toy_shape"] == "cylinder" and score["color"] == "red"
    assert score["iou"] >= 0.6 and score["iou_margin"] >= 0.1, score


@pytest.mark.slow
def test_toy_gaussians_image_recovers_the_cube(tmp_path):
    """DreamGaussian image-to-3D as shipped, on its default input (the red cube render): the toy
    Zero123 trained over the azimuth backdrop draws the cube's corners where its yaw puts them,
    so the cube wins over the sphere by the issue's margin (with the prior trained over white the
    sphere won: −0.003 at density 0.15, +0.065…+0.089 at 0.5…0.7; docs/gaussians.md)."""
    p = run_cli("experiment=toy_gaussians_image", "video.enabled=false", "output_dir=run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    score = next(r for r in records if r["stage"] == "eval")
    assert score["toy_shape"] == "cube" and score["color"] == "red"
    assert score["iou"] >= 0.8 and score["iou_margin"] >= 0.1, score
