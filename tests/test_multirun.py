"""Many prompts through Hydra's launcher plugins on this machine: submitit's local executor (the
same submitit that drives SLURM) and Ray (a local cluster). Two toy prompts at debug=smoke; each
job trains, exports and scores in its own run directory. Skipped where the plugin is not
installed (the ``launchers`` extra)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = {"a_red_cube": "a red cube", "a_blue_sphere": "a blue sphere"}


def installed(plugin: str) -> bool:
    """Whether Hydra's launcher plugin ``plugin`` imports (``hydra_plugins`` is absent with none)."""
    found = importlib.util.find_spec
    return found("hydra_plugins") is not None and found(f"hydra_plugins.{plugin}") is not None


def multirun(tmp_path: Path, *launcher: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = ["-m", "debug=smoke", "prompt=" + ",".join(PROMPTS.values()), f"outputs_root={tmp_path / 'out'}"]
    args += [f"hydra.sweep.dir={tmp_path / 'sweep'}", *launcher]
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def check_runs(tmp_path: Path) -> None:
    runs = sorted((tmp_path / "out" / "default").iterdir())
    assert sorted(r.name.split("@")[0] for r in runs) == sorted(PROMPTS)
    for run in runs:
        assert f"prompt: {PROMPTS[run.name.split('@')[0]]}" in (run / "config.yaml").read_text()
        assert (run / "export" / "model.obj").is_file() and (run / "ckpts" / "last.ckpt").is_file()
        assert '"stage": "eval"' in (run / "metrics.jsonl").read_text()


@pytest.mark.slow
@pytest.mark.skipif(
    not installed("hydra_submitit_launcher"),
    reason="hydra-submitit-launcher is not installed (pip install -e '.[launchers]')",
)
def test_submitit_local_multirun(tmp_path):
    p = multirun(tmp_path, "hydra/launcher=submitit_local")
    assert p.returncode == 0, p.stderr[-3000:]
    check_runs(tmp_path)
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2  # one submitit job each


@pytest.mark.slow
@pytest.mark.skipif(
    not installed("hydra_ray_launcher"),
    reason="hydra-ray-launcher is not installed (pip install -e '.[launchers]')",
)
def test_ray_multirun(tmp_path):
    ray_init = ["+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false"]
    p = multirun(tmp_path, "hydra/launcher=ray", *ray_init)
    assert p.returncode == 0, p.stderr[-3000:]
    check_runs(tmp_path)
    assert p.stderr.count("_run_job pid=") >= 2  # the jobs ran as Ray tasks
