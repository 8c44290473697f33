"""The CLI contract (DESIGN.md §4) with stand-in components: exit codes, error lines, run
directory layout, overrides, resume, multirun (Ctrl-C and SIGTERM: test_interrupts.py)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

FAKE_EXPERIMENT = """# @package _global_
defaults:
  - override /geometry: fake
  - override /renderer: fake
  - override /guidance: fake
  - override /material: no_material
  - override /prompt_processor: null
experiment_name: fake
requires: [prompt]
stages: [a, b]
data: {height: 4, width: 4, batch_size: 2, eval_height: 4, eval_width: 4, n_val_views: 2, n_test_views: 2}
loss: {guidance: 1.0}
optimizer: {lr: 0.05}
trainer: {progress: false, log_every: 1, ckpt_every: 0}
export: {enabled: false}
video: {n_views: 2}
stage:
  a: {steps: 5}
  b: {steps: 3, geometry_init: previous}
"""


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("configs")
    shutil.copytree(ROOT / "configs", d, dirs_exist_ok=True)
    (d / "experiment" / "fake.yaml").write_text(FAKE_EXPERIMENT)
    (d / "geometry" / "fake.yaml").write_text("_target_: fake_components.DirectionField\n")
    (d / "renderer" / "fake.yaml").write_text("_target_: fake_components.DirectionRenderer\n")
    (d / "guidance" / "fake.yaml").write_text("_target_: fake_components.NoisyTargetGuidance\n")
    return d


def launch(config_dir, *args, cwd=None, timeout=180, background=False):
    env = dict(
        os.environ,
        THREESTUDIO_LIKE_CONFIG_DIR=str(config_dir),
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        OMP_NUM_THREADS="1",
    )
    cmd = [sys.executable, str(ROOT / "launch.py"), *args]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[-1], lines[-1]


def test_run_writes_standard_layout(config_dir, tmp_path):
    p = launch(config_dir, "experiment=fake", "prompt=a red/../cube", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    runs = list((tmp_path / "outputs" / "fake").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("a_red_cube@")
    run = runs[0]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["prompt"] == "a red/../cube" and cfg["stage"]["a"]["steps"] == 5
    for f in ("ckpts/last.ckpt", "ckpts/a.ckpt", "ckpts/b.ckpt", "metrics.jsonl", "video/turntable.mp4"):
        assert (run / f).is_file(), f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # nothing written elsewhere
    estimate = p.stderr.split("memory estimate (cpu, ", 1)[1].splitlines()  # printed before training
    assert [line.split(":")[0].strip() for line in estimate[1:3]] == ["a", "b"] and "GiB = trained" in estimate[1]


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["experiment=nope", "prompt=x"], ["nope", "fake"]),
        (["experiment=fake", "prompt="], ["needs a text prompt"]),
        (["experiment=fake", "prompt=x", "stage.a.stepz=3"], ["stage.a.stepz"]),
        (["experiment=fake", "prompt=x", "geometry.widht=3"], ["geometry.widht", "width"]),
        (["experiment=fake", "prompt=x", "stages=[a,zzz]"], ["unknown stage 'zzz'"]),
        (["experiment=fake", "prompt=x", "mode=fly"], ["mode must be"]),
        (["experiment=fake", "prompt=x", "resume=/nonexistent/run"], ["config.yaml not found"]),
        (
            ["experiment=fake", "prompt=x", "trainer.device=cuda:0"]
            if not __import__("torch").cuda.is_available()
            else ["experiment=nope"],
            ["CUDA" if not __import__("torch").cuda.is_available() else "nope"],
        ),
    ],
)
def test_bad_input_is_one_error_line_exit_2(config_dir, tmp_path, args, fragments):
    p = launch(config_dir, *args, cwd=tmp_path)
    assert_user_error(p, *fragments)
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))


def test_component_field_missing_from_yaml_can_be_overridden(config_dir, tmp_path):
    # `width` is a DirectionField field not written in geometry/fake.yaml: no '+' needed
    p = launch(config_dir, "experiment=fake", "prompt=x", "geometry.width=8", "output_dir=run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["geometry"]["width"] == 8


def test_resume_corrupt_checkpoint_is_user_error(config_dir, tmp_path):
    assert launch(config_dir, "experiment=fake", "prompt=x", "output_dir=run", cwd=tmp_path).returncode == 0
    (tmp_path / "run" / "ckpts" / "last.ckpt").write_bytes(b"garbage")
    assert_user_error(launch(config_dir, "resume=run", cwd=tmp_path), "corrupt")


def test_resume_continues_with_more_steps(config_dir, tmp_path):
    assert launch(config_dir, "experiment=fake", "prompt=x", "output_dir=run", cwd=tmp_path).returncode == 0
    p = launch(config_dir, "resume=run", "stage.b.steps=6", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    import json

    steps = [
        json.loads(ln)["step"]
        for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if json.loads(ln)["stage"] == "b"
    ]
    assert steps == [1, 2, 3, 4, 5, 6]  # b had finished at 3 and continued to 6 from its checkpoint


def test_start_stage_restarts_a_finished_run_at_that_stage(config_dir, tmp_path):
    assert launch(config_dir, "experiment=fake", "prompt=x", "output_dir=run", cwd=tmp_path).returncode == 0
    a_ckpt = (tmp_path / "run" / "ckpts" / "a.ckpt").read_bytes()
    p = launch(config_dir, "resume=run", "start_stage=b", "stage.b.steps=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    import json

    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    b_steps = [r["step"] for r in records if r["stage"] == "b"]
    assert b_steps == [1, 2, 3, 1, 2]  # b's first 3 steps, then b again from its start (not from its checkpoint)
    assert (tmp_path / "run" / "ckpts" / "a.ckpt").read_bytes() == a_ckpt  # stage a is loaded, not retrained


def test_multirun_fans_out_prompts(config_dir, tmp_path):
    p = launch(
        config_dir, "-m", "experiment=fake", "prompt=a cube,a ball", "stage.a.steps=2", "stage.b.steps=1", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    names = sorted(d.name.split("@")[0] for d in (tmp_path / "outputs" / "fake").iterdir())
    assert names == ["a_ball", "a_cube"]
