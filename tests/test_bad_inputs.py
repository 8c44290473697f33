"""Every row of docs/bad-inputs.md is a CLI call here: bad input gets exit status 2, one line
``error: …`` on stderr that says what was wrong, no traceback, and a refused run writes nothing
(the working directory is unchanged). The calls go through ``cli.main`` in this process (the
function the console script and launch.py call), with the stand-in experiment of test_cli where
the input does not need a real one; test_cli.py and test_interrupts.py run the same paths in
subprocesses."""

import errno
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import FAKE_EXPERIMENT

from threestudio_like.cli import main

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "threestudio_like" / "assets"
DOC = ROOT / "docs" / "bad-inputs.md"
FAKE = ["experiment=fake", "prompt=x"]
IMAGE = ["experiment=toy_zero123", "debug=smoke"]


def _inputs(d: Path) -> dict[str, str]:
    """Input files, written once into ``d`` (outside the directory the runs write in)."""
    from PIL import Image

    d.mkdir(exist_ok=True)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = [220, 30, 30, 255]
    Image.fromarray(rgba).save(d / "ok.png")
    Image.fromarray(rgba[..., :3]).save(d / "rgb.png")
    Image.fromarray(rgba[..., 0]).save(d / "grey.png")
    empty = rgba.copy()
    empty[..., 3] = 0
    Image.fromarray(empty).save(d / "empty_alpha.png")
    Image.fromarray(rgba[..., :3]).convert("CMYK").save(d / "cmyk.jpg")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    np.save(d / "depth_wrong.npy", np.ones((32, 48), np.float32))
    np.save(d / "depth_3ch.npy", np.ones((32, 32, 3), np.float32))
    (d / "a_file").write_text("x")
    return {p.stem: str(p) for p in d.iterdir()}


def _runs(d: Path) -> dict[str, str]:
    """Run directories to resume (made by the fake experiment), one per kind of damage."""
    runs = {}
    for name in ("finished", "corrupt", "truncated", "foreign", "no_a"):
        assert main([*FAKE, f"output_dir={d / name}"]) == 0
        runs[f"run_{name}"] = str(d / name)
    last = d / "corrupt" / "ckpts" / "last.ckpt"
    last.write_bytes(b"garbage")
    last = d / "truncated" / "ckpts" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    torch.save({"weights": torch.zeros(3)}, d / "foreign" / "ckpts" / "last.ckpt")
    (d / "no_a" / "ckpts" / "a.ckpt").unlink()
    (d / "noconfig").mkdir()
    runs["run_noconfig"] = str(d / "noconfig")
    return runs


# (input, as the docs table names it) → (arguments, start of the error message after "error: ")
CASES = {
    "unknown experiment": (
        ["experiment=nope", "prompt=x"],
        "unknown experiment 'nope'; experiments: anything3d, default,",
    ),
    "unknown config key (typo)": ([*FAKE, "trainer.log_evry=1"], "unknown config key 'trainer.log_evry'"),
    "unknown key of a component": ([*FAKE, "stage.a.stepz=5"], "unknown config key 'stage.a.stepz'"),
    "empty prompt": (["experiment=fake", "prompt="], "experiment 'fake' needs a text prompt"),
    "whitespace prompt": (["experiment=fake", "prompt='   '"], "experiment 'fake' needs a text prompt"),
    "`seed=abc`": ([*FAKE, "seed=abc"], "seed must be a non-negative integer, got 'abc'"),
    "`seed=1.5`": ([*FAKE, "seed=1.5"], "seed must be a non-negative integer, got 1.5"),
    "`seed=-1`": ([*FAKE, "seed=-1"], "seed must be a non-negative integer, got -1"),
    "negative steps": ([*FAKE, "stage.a.steps=-5"], "stage.a.steps must be >= 0, got -5"),
    "zero render height": ([*FAKE, "data.height=0"], "stage.a.data.height must be > 0"),
    "non-numeric guidance scale": (
        ["experiment=default", "debug=smoke", "guidance.guidance_scale=abc"],
        "stage.coarse.guidance.guidance_scale must be a number or a schedule",
    ),
    "probability outside [0, 1]": (
        ["experiment=default", "debug=smoke", "renderer.grid_ema_decay=1.5"],
        "stage.coarse.renderer.grid_ema_decay must be >= 0 and <= 1, got 1.5",
    ),
    "unknown choice": ([*FAKE, "trainer.precision=fp8"], "trainer.precision must be one of 32|bf16|16-mixed"),
    "wrong type": ([*FAKE, "trainer.log_every=often"], "trainer.log_every"),
    "negative texture size": ([*FAKE, "export.texture_size=-1"], "export.texture_size must be"),
    "unknown mode": ([*FAKE, "mode=train2"], "mode must be one of train, export, test"),
    "missing model": (
        ["experiment=default", "debug=smoke", "models.sd={inputs}/nowhere"],
        "stage.coarse.guidance: pretrained model directory",
    ),
    "model of the wrong kind (Zero123 as `models.sd`)": (
        ["experiment=default", "debug=smoke", f"models.sd={ASSETS / 'tiny-zero123'}"],
        "stage.coarse.guidance.pretrained_model_name_or_path",
    ),
    "missing MVDream weights": (
        ["experiment=mvdream", "debug=smoke", "prompt=x", "models.mvdream={inputs}/sd-v2.1-base-4view.pt"],
        "stage.nerf.guidance.multiview_unet: MVDream's weights",
    ),
    "image-to-3D without `image=`": (
        ["experiment=toy_zero123", "debug=smoke", "image=null"],
        "experiment 'toy_zero123' needs an input image",
    ),
    "missing image file": ([*IMAGE, "image={inputs}/nope.png"], "image not found"),
    "corrupt image": ([*IMAGE, "image={corrupt}"], "cannot read image"),
    "RGB image without alpha": ([*IMAGE, "image={rgb}"], "image {rgb} has no alpha channel"),
    "grayscale image without alpha": ([*IMAGE, "image={grey}"], "image {grey} has no alpha channel"),
    "CMYK JPEG (read as RGB, so no alpha)": ([*IMAGE, "image={cmyk}"], "image {cmyk} has no alpha channel"),
    "image with an empty alpha channel": ([*IMAGE, "image={empty_alpha}"], "image {empty_alpha} is fully transparent"),
    "depth map of another size": ([*IMAGE, "image={ok}", "depth={depth_wrong}"], "depth map {depth_wrong} is 32×48"),
    "depth map that is not 2-D": ([*IMAGE, "image={ok}", "depth={depth_3ch}"], "depth map {depth_3ch} must be a 2-D"),
    "output directory that cannot be created": ([*FAKE, "output_dir=/proc/x"], "cannot write the run directory"),
    "output directory under a file": ([*FAKE, "output_dir={a_file}/run"], "cannot create the run directory"),
    "`resume=` a directory that is no run": (["resume={run_noconfig}"], "resume={run_noconfig}"),
    "`resume=` a corrupt checkpoint": (["resume={run_corrupt}"], "checkpoint {run_corrupt}/ckpts/last.ckpt is corrupt"),
    "`resume=` a truncated checkpoint": (
        ["resume={run_truncated}"],
        "checkpoint {run_truncated}/ckpts/last.ckpt is corrupt",
    ),
    "`resume=` a foreign checkpoint": (["resume={run_foreign}"], "checkpoint {run_foreign}/ckpts/last.ckpt is not a"),
    "`resume=` with another experiment": (
        ["resume={run_finished}", "experiment=default"],
        "cannot change 'experiment' when resuming",
    ),
    "`resume=` a finished run": (["resume={run_finished}"], "run {run_finished} has finished all its stages"),
    "`start_stage=` that is no stage": (["resume={run_finished}", "start_stage=c"], "start_stage 'c' is not one of"),
    "`start_stage=` after a stage without a checkpoint": (
        ["resume={run_no_a}", "start_stage=b"],
        "checkpoint not found: {run_no_a}/ckpts/a.ckpt",
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THREESTUDIO_LIKE_CONFIG_DIR", str(_config_dir(d / "configs")))
        return {
            **_inputs(d / "inputs"),
            "inputs": str(d / "inputs"),
            **_runs(d / "runs"),
            "configs": str(d / "configs"),
        }


def _config_dir(d: Path) -> Path:
    import shutil

    shutil.copytree(ROOT / "configs", d)
    (d / "experiment" / "fake.yaml").write_text(FAKE_EXPERIMENT)
    (d / "geometry" / "fake.yaml").write_text("_target_: fake_components.DirectionField\n")
    (d / "renderer" / "fake.yaml").write_text("_target_: fake_components.DirectionRenderer\n")
    (d / "guidance" / "fake.yaml").write_text("_target_: fake_components.NoisyTargetGuidance\n")
    return d


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_error_line_and_writes_nothing(name, files, tmp_path, monkeypatch, capsys):
    args, message = CASES[name]
    monkeypatch.setenv("THREESTUDIO_LIKE_CONFIG_DIR", files["configs"])
    monkeypatch.chdir(tmp_path)
    runs_before = {p: p.stat().st_mtime_ns for p in Path(files["inputs"]).parent.rglob("*")}
    code = main([a.format(**files) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    assert lines[0][len("error: ") :].startswith(message.format(**files)), lines[0]
    assert list(tmp_path.iterdir()) == [], "a refused run wrote into the working directory"
    after = {p: p.stat().st_mtime_ns for p in Path(files["inputs"]).parent.rglob("*")}
    assert after == runs_before, "a refused run changed an existing run or input"


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """ENOSPC while writing ``last.ckpt``: a UserError naming the checkpoint and resume=, the
    previous file intact, no temp file left."""
    from threestudio_like.core import atomic, checkpoint
    from threestudio_like.core.errors import UserError

    path = checkpoint.save_checkpoint(tmp_path / "run" / "ckpts" / "last.ckpt", {"step": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(UserError, match=re.escape(f"cannot write checkpoint {path} (No space left on device)")):
        checkpoint.save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_not_enough_free_disk_is_refused_before_the_run(tmp_path, monkeypatch, capsys, files):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2 << 20, 0, 2 << 20))
    monkeypatch.setenv("THREESTUDIO_LIKE_CONFIG_DIR", files["configs"])
    monkeypatch.chdir(tmp_path)
    assert main([*FAKE, "output_dir=run"]) == 2
    assert "not enough free disk for this run" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_second_run_into_the_same_directory_is_refused_while_the_first_runs(tmp_path, files):
    import signal
    import time

    from test_cli import launch

    first = launch(files["configs"], *FAKE, "output_dir=run", "stage.a.steps=100000", cwd=tmp_path, background=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not metrics.exists():
        time.sleep(0.05)
    second = launch(files["configs"], *FAKE, "output_dir=run", cwd=tmp_path)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        "error: run directory run is in use by another run; wait for it or choose another output_dir"
    )


def test_out_of_memory_saves_the_run_and_names_the_settings(files, tmp_path, monkeypatch, capsys):
    import fake_components

    calls = {"n": 0}
    original = fake_components.NoisyTargetGuidance.forward

    def forward(self, rgb, cameras=None, prompt=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, rgb, cameras, prompt)

    monkeypatch.setattr(fake_components.NoisyTargetGuidance, "forward", forward)
    monkeypatch.setenv("THREESTUDIO_LIKE_CONFIG_DIR", files["configs"])
    monkeypatch.chdir(tmp_path)
    assert main([*FAKE, "output_dir=run"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: out of memory in stage a at step 3; the run is saved at run/ckpts/last.ckpt")
    for setting in ("data.batch_size", "renderer.num_samples_per_ray", "guidance.half_precision", "resume=run"):
        assert setting in line
    assert torch.load(tmp_path / "run" / "ckpts" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_the_docs_table_lists_exactly_these_inputs():
    lines = DOC.read_text().splitlines()
    start = lines.index("| input | example | what you get |")
    table = lines[start + 2 : lines.index("", start)]
    rows = [ln.split("|")[1].strip() for ln in table]
    assert rows == list(CASES) + [
        "disk full while writing a checkpoint",
        "not enough free disk",
        "a second run into the same directory at the same time",
        "out of GPU memory",
    ]
