"""Soak: 30 consecutive runs, each interrupted at a random moment (SIGINT or SIGTERM, from start-up
to the end) and resumed until it finishes. Every run ends with exit 0, 130 or 143 (or dies silently
by the signal when it arrives before the interpreter runs a line of ours) and no traceback, every
finished run equals its uninterrupted twin checkpoint for checkpoint, and nothing is left
outside the run directories."""

import random
import signal
import time

import pytest
import torch
from test_cli import config_dir, launch  # noqa: F401  (fixture)

ARGS = ("experiment=fake", "prompt=x", "stage.a.steps=150", "stage.b.steps=50", "trainer.ckpt_every=25")
RUNS = 30


def _state(run):
    payload = torch.load(run / "ckpts" / "b.ckpt", weights_only=True)
    return payload["state"], payload["optimizer"], payload["global_step"]


def _equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.slow
def test_interrupted_runs_resume_to_their_uninterrupted_twin(config_dir, tmp_path):  # noqa: F811
    assert launch(config_dir, *ARGS, "output_dir=twin", cwd=tmp_path).returncode == 0
    twin = _state(tmp_path / "twin")
    rng = random.Random(0)
    for i in range(RUNS):
        run = f"run{i:02d}"
        proc = launch(config_dir, *ARGS, f"output_dir={run}", cwd=tmp_path, background=True)
        time.sleep(rng.uniform(0.2, 3.5))
        sig = rng.choice((signal.SIGINT, signal.SIGTERM))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        # -sig: killed before the interpreter ran a line of ours (no handler yet): silent, nothing written
        assert proc.returncode in (0, 128 + sig, -sig), err
        assert "Traceback" not in err, err
        for _ in range(3):  # resume until finished (a fresh start when interrupted before writing)
            if (tmp_path / run / "ckpts" / "b.ckpt").exists():
                break
            started = (tmp_path / run / "config.yaml").exists()
            p = launch(config_dir, *((f"resume={run}",) if started else (*ARGS, f"output_dir={run}")), cwd=tmp_path)
            assert p.returncode == 0, p.stderr
        assert _equal(_state(tmp_path / run), twin), run
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["twin"] + [f"run{i:02d}" for i in range(RUNS)])
