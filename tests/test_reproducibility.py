"""The same command with the same seed gives bit-identical checkpoints at 2 threads on CPU, and an
interrupted + resumed run equals the uninterrupted one (the embedded default under debug=smoke:
dense-grid NeRF + volume renderer, then DMTet + rasterizer — the paths whose index backward sums
colliding rows in thread order unless torch's deterministic algorithms are on)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ARGS = (
    "debug=smoke",
    "limits.max_steps=8",
    "trainer.log_every=1",
    "export.enabled=false",
    "video.enabled=false",
    "evaluators=[]",
)


def _launch(*args, cwd, threads=2, background=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    resume = any(a.startswith("resume=") for a in args)
    cmd = [sys.executable, str(ROOT / "launch.py"), *(() if resume else ARGS), *args]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _differences(a, b, path=""):
    """Paths of the tensors (and other leaves) that differ between two checkpoint payloads."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        return [d for k in a for d in _differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, torch.Tensor):
        return [] if torch.equal(a, b) else [path]
    return [] if a == b else [path]


def _load(run, stage):
    payload = torch.load(run / "ckpts" / f"{stage}.ckpt", weights_only=True)
    return {k: payload[k] for k in ("state", "optimizer", "global_step")}


@pytest.mark.slow
def test_same_command_same_checkpoints_and_resume_equals_uninterrupted(tmp_path):
    for run in ("a", "b"):
        p = _launch(f"output_dir={run}", cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
    for stage in ("coarse", "refine"):
        assert _differences(_load(tmp_path / "a", stage), _load(tmp_path / "b", stage)) == [], stage

    proc = _launch("output_dir=c", cwd=tmp_path, background=True)
    metrics = tmp_path / "c" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "checkpoint saved" in err, err[-3000:]
    p = _launch("resume=c", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for stage in ("coarse", "refine"):
        assert _differences(_load(tmp_path / "a", stage), _load(tmp_path / "c", stage)) == [], stage


@pytest.mark.slow
def test_deterministic_off_is_a_choice(tmp_path):
    """trainer.deterministic=false runs (the CUDA default); the config refuses a non-boolean."""
    p = _launch("output_dir=x", "trainer.deterministic=false", "limits.max_steps=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    p = _launch("output_dir=y", "trainer.deterministic=maybe", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: trainer.deterministic")
    assert not (tmp_path / "y").exists()
