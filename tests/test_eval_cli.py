"""``threestudio-like eval RUN_DIR`` on finished smoke runs (issue 28, items 1 and 4): eval.json and
the table, the toy shape scores beside the general ones, geometry against a ground truth, the
reference-view scores of an image run, a missing CLIP model and LPIPS skipped with a note, and the
``error:`` line for what is not a finished run."""

import json
import shutil
from pathlib import Path

import pytest
import trimesh
from test_experiments import run_cli

from threestudio_like.cli import main
from threestudio_like.eval.run_eval import EVAL_FILE
from threestudio_like.export.axes import to_up_axis
from threestudio_like.export.mesh_ops import decimate
from threestudio_like.toyworld.shapes import SHAPES

TOY_IMAGE = "threestudio_like/assets/toy-images/red_cube.png"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A smoke run of the embedded default (prompt "a red cube"; its config lists the toy shape
    evaluator and the shipped tiny CLIP as models.clip)."""
    d = tmp_path_factory.mktemp("toy")
    p = run_cli("debug=smoke", "output_dir=run", cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    return d / "run"


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A smoke run of toy Zero123 (image-to-3D, a reference-view term), no evaluators."""
    d = tmp_path_factory.mktemp("image")
    image = Path(__file__).resolve().parent.parent / TOY_IMAGE
    p = run_cli("experiment=toy_zero123", f"image={image}", "debug=smoke", "evaluators=[]", "output_dir=run", cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    return d / "run"


def _eval_records(run):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["stage"] == "eval"]


@pytest.mark.slow
def test_eval_of_a_toy_run_with_a_ground_truth(toy_run, tmp_path, capsys):
    """The toy cube (decimated, written +Y up as our OBJ exports are) as the ground truth: the IoU
    against it agrees with the toy evaluator's analytic IoU against the same shape."""
    cube = decimate(SHAPES["cube"].mesh(), 1500)
    gt = tmp_path / "cube.obj"
    trimesh.Trimesh(to_up_axis(cube.v_pos, "+Y").numpy(), cube.t_pos_idx.numpy(), process=False).export(gt)
    assert main(["eval", str(toy_run), "--views", "4", "--gt", str(gt)]) == 0
    out, err = capsys.readouterr()
    report = json.loads((toy_run / EVAL_FILE).read_text())
    m = report["metrics"]
    assert report["orbit"] == {
        "n_views": 4,
        "distance": 2.0,
        "fovy_deg": 45.0,
        "height": 32,
        "width": 32,
        "elevation_deg": 15.0,
    }
    # the toy shape scores beside the general ones, equal to the run's own final evaluation
    (logged,) = _eval_records(toy_run)
    assert m["toy_shape.iou"] == pytest.approx(logged["iou"]) and m["toy_shape.toy_shape"] == "cube"
    for key in ("clip_score", "clip_r_precision", "janus_margin", "reprojection_error_px", "faces", "watertight"):
        assert key in m, key
        assert key in out  # the table
    assert -1 <= m["clip_score"] <= 1 and m["clip_r_precision_prompts"] == 155
    assert m["janus_margin"] == pytest.approx(m["janus_back_similarity"] - m["janus_front_similarity"])
    assert m["gt_iou"] == pytest.approx(logged["iou"], abs=0.05)
    assert m["gt_chamfer"] == pytest.approx(logged["chamfer"], abs=0.01)
    assert 0 < m["gt_fscore"] <= 1 and 0 < m["gt_normal_consistency"] <= 1
    assert m["texture_width"] == m["texture_height"] == 64  # debug=smoke's export.texture_size
    assert "Traceback" not in err


@pytest.mark.slow
def test_eval_of_an_image_run_without_clip_or_lpips(image_run, capsys):
    assert main(["eval", str(image_run), "--views", "4", "--clip", str(image_run / "no-such-model")]) == 0
    out, err = capsys.readouterr()
    report = json.loads((image_run / EVAL_FILE).read_text())
    m = report["metrics"]
    for key in ("ref_psnr", "ref_ssim", "ref_psnr_masked", "ref_ssim_masked"):
        assert key in m and key in out
    assert 0 < m["ref_ssim"] <= 1 and m["ref_psnr"] > 0
    assert not any(k.startswith(("clip", "janus", "image_clip", "toy_shape")) for k in m)
    assert set(report["skipped"]) == {"clip", "ref_lpips"}
    notes = [line for line in err.splitlines() if "skipped" in line]
    assert len(notes) == 2 and any("no-such-model" in n for n in notes) and any("lpips" in n for n in notes)
    assert "Traceback" not in err


def test_eval_of_what_is_not_a_run_is_an_error_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["eval", str(tmp_path)]) == 2  # a directory without config.yaml
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.yaml" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", str(tmp_path), "--views", "0"]) == 2
    assert "--views" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("seed: 0\n")  # checked before the run is loaded
    for flag in ("--gt", "--prompts"):
        assert main(["eval", str(tmp_path), flag, str(tmp_path / "missing.file")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag}: no file") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / EVAL_FILE).exists()


@pytest.mark.slow
def test_eval_of_a_run_without_checkpoints_is_an_error_line(toy_run, tmp_path, capsys):
    shutil.copy(toy_run / "config.yaml", tmp_path / "config.yaml")
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint not found") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / EVAL_FILE).exists()


def test_eval_and_compare_answer_help(capsys):
    for command in ("eval", "compare"):
        assert main([command, "--help"]) == 0
        assert f"threestudio-like {command}" in capsys.readouterr().out
