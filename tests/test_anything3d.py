"""``experiment=anything3d`` and the ``prepare:`` hook (issue 26 item 6): the staged inputs moved into
the run directory and the config pointed at them, given prompt/elevation taking precedence over
the caption/estimate, bad inputs refused with one ``error:`` line before anything is written, and
the whole experiment under ``debug=smoke``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from threestudio_like.cli import compose_config
from threestudio_like.core.errors import UserError
from threestudio_like.core.prepare import InputPreparer, PreparedInputs, stage_inputs

ROOT = Path(__file__).resolve().parent.parent


def write_photo(path: Path) -> Path:
    """A noisy grey RGB photo (no alpha) with a red rectangle."""
    rng = np.random.default_rng(0)
    img = (120 + 40 * rng.random((48, 64, 3))).astype(np.uint8)
    img[12:36, 20:44] = [220, 30, 30]
    Image.fromarray(img).save(path)
    return path


class FakePreparer(InputPreparer):
    """Writes ``note.txt`` (or fails) and sets ``image`` to it, ``prompt`` and ``reference.x``."""

    @dataclass
    class Config:
        text: str = "hello"
        fail: bool = False

    def __init__(self, cfg=None, where="prepare"):
        self.parse_config(cfg, where)

    def prepare(self, directory):
        assert list(directory.iterdir()) == []
        (directory / "note.txt").write_text(self.cfg.text)
        if self.cfg.fail:
            raise UserError("the fake preparer refuses")
        return PreparedInputs(files={"image": "note.txt"}, values={"prompt": self.cfg.text, "reference.x": 7})


def fake_config(**prepare):
    return OmegaConf.create(
        {
            "image": "photo.jpg",
            "prompt": "",
            "reference": {"x": 0},
            "echo": "${image}",
            "prepare": {"_target_": "test_anything3d.FakePreparer", "text": "${image}", **prepare},
        }
    )


def test_staged_inputs_move_into_the_run_and_the_config_follows(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    cfg = fake_config()
    with stage_inputs(cfg) as staged:
        staging = Path(cfg.image).parent
        assert staging.parent == tmp_path / "tmp" and (staging / "note.txt").read_text() == "photo.jpg"
        assert (cfg.prompt, cfg.reference.x, cfg.echo) == ("photo.jpg", 7, str(staging / "note.txt"))
        run = tmp_path / "run"
        run.mkdir()
        staged.move_into(run, cfg)
    assert cfg.image == str(run / "preprocess" / "note.txt") and (run / "preprocess" / "note.txt").is_file()
    assert cfg.prepare.text == "photo.jpg"  # the resolved entry: what the inputs were prepared from
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_refused_preparation_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    cfg = fake_config(fail=True)
    with pytest.raises(UserError, match="refuses"), stage_inputs(cfg):
        pass
    assert list((tmp_path / "tmp").iterdir()) == [] and cfg.image == "photo.jpg"


def test_resume_does_not_prepare_again():
    cfg = fake_config(fail=True)
    cfg.resume = "some/run"
    with stage_inputs(cfg) as staged:
        assert staged.directory is None and cfg.image == "photo.jpg"


def run_cli(*args, cwd, tmp=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **({"TMPDIR": str(tmp)} if tmp else {}))
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def smoke(tmp_path, *overrides):
    return compose_config(["experiment=anything3d", "debug=smoke", *overrides])


def test_the_elevation_prior_is_its_own_model_key():
    """``models.elevation`` chooses the estimator's prior: ``models.zero123`` unless set, the toy
    Stable Zero123 in ``toy_anything3d``, and under ``debug=smoke`` the tiny Zero123 like every
    other model."""
    assets = ROOT / "threestudio_like" / "assets"

    def prior(*overrides):
        return compose_config(list(overrides)).prepare.elevation.model

    assert prior("experiment=anything3d") == "kxic/zero123-xl-diffusers"
    assert prior("experiment=anything3d", "models.zero123=/z") == "/z"
    assert prior("experiment=anything3d", "models.zero123=/z", "models.elevation=/stable") == "/stable"
    assert prior("experiment=toy_anything3d") == str(assets / "toy-stable-zero123")
    assert prior("experiment=toy_anything3d", "debug=smoke") == str(assets / "tiny-zero123")


def test_the_caption_and_the_estimate_fill_the_config(tmp_path):
    photo = write_photo(tmp_path / "photo.png")
    cfg = smoke(tmp_path, f"image={photo}")
    with stage_inputs(cfg) as staged:
        record = json.loads((staged.directory / "photo_preprocess.json").read_text())
        assert cfg.image == str(staged.directory / "photo_rgba.png") and cfg.depth.endswith("photo_depth.npy")
        assert record["caption"] and cfg.prompt == record["caption"]
        assert record["elevation_note"] == "estimated" and cfg.reference.elevation_deg == record["elevation"]
        assert cfg.terms.ref.elevation_deg == record["elevation"]  # the reference term's camera follows
        assert record["models"]["sam"]["model"].endswith("tiny-sam") and record["mask_source"] == "sam"


def test_a_given_prompt_and_elevation_take_precedence(tmp_path):
    photo = write_photo(tmp_path / "photo.png")
    cfg = smoke(tmp_path, f"image={photo}", "prompt=a red box", "reference.elevation_deg=12", "point=[30,20]")
    with stage_inputs(cfg) as staged:
        record = json.loads((staged.directory / "photo_preprocess.json").read_text())
        assert cfg.prompt == "a red box" and cfg.reference.elevation_deg == 12
        assert record["caption"] is None and "blip" not in record["models"]  # BLIP not run
        assert (record["elevation"], record["elevation_note"]) == (12, "given")
        assert record["prompts"]["points"] == [[30.0, 20.0]]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["image={tmp}/nope.jpg"], "error: photo not found: {tmp}/nope.jpg"),
        (["image={photo}", "point=[1,2,3]"], "error: point= takes [X,Y] or [[X1,Y1],[X2,Y2],…] (photo pixels)"),
        (["image={photo}", "point=[500,20]"], "error: --point 500,20 is outside the photo"),
        (["image={photo}", "models.sam={blind}"], "error: segmentation found no object"),
        ([], "error: no photo to prepare the inputs from: add image=PHOTO"),
    ],
)
def test_bad_inputs_are_one_error_line_before_anything_is_written(tmp_path, overrides, message):
    from test_preprocess import _blind_sam

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    values = {"tmp": str(tmp_path), "photo": str(write_photo(inputs / "photo.png"))}
    if any("{blind}" in o for o in overrides):
        values["blind"] = _blind_sam({"sam": str(ROOT / "threestudio_like" / "assets" / "tiny-sam")}, inputs)
    staging = tmp_path / "tmp"
    staging.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    p = run_cli("experiment=anything3d", "debug=smoke", *[o.format(**values) for o in overrides], cwd=work, tmp=staging)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith(("preprocess: ", "Loading", "["))]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith(message.format(**values)), p.stderr
    assert list(work.iterdir()) == [] and list(staging.iterdir()) == []


@pytest.mark.slow
def test_anything3d_smoke_run_keeps_its_inputs_and_resumes_without_preparing(tmp_path):
    photo = write_photo(tmp_path / "photo.png")
    p = run_cli("experiment=anything3d", "debug=smoke", f"image={photo}", "output_dir=run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "run"
    record = json.loads((run / "preprocess" / "photo_preprocess.json").read_text())
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.image == "run/preprocess/photo_rgba.png" and saved.depth == "run/preprocess/photo_depth.npy"
    assert saved.prompt == record["caption"] and saved.reference.elevation_deg == record["elevation"]
    assert saved.prepare.photo == str(photo) and (run / "export" / "model.glb").is_file()
    p = run_cli("resume=run", "mode=export", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "preprocess: " not in p.stderr
