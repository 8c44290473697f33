"""Swapping the prior is one override: ``guidance=sds|vsd|ism`` in every text experiment, through
the real CLI under debug=smoke. The guidance's loss is weighted by its role (``loss.guidance``),
so no experiment names a weight per prior."""

import json
from pathlib import Path

import pytest
import yaml
from test_experiments import run_cli

ROOT = Path(__file__).resolve().parent.parent
TEXT_EXPERIMENTS = ("dreamfusion", "magic3d", "prolificdreamer")
GUIDANCES = {"sds": "ScoreDistillationGuidance", "vsd": "VariationalScoreDistillation", "ism": "IntervalScoreGuidance"}
NATIVE = {"dreamfusion": "sds", "magic3d": "sds", "prolificdreamer": "vsd"}  # run by test_experiments


@pytest.mark.slow
@pytest.mark.parametrize("experiment,guidance", [(e, g) for e in TEXT_EXPERIMENTS for g in GUIDANCES if NATIVE[e] != g])
def test_guidance_is_one_override(experiment, guidance, tmp_path):
    p = run_cli(
        f"experiment={experiment}",
        f"guidance={guidance}",
        "prompt=a hamburger",
        "debug=smoke",
        "export.enabled=false",
        "video.enabled=false",
        "output_dir=run",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "run"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["guidance"]["_target_"].endswith("." + GUIDANCES[guidance])
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    stages = list(dict.fromkeys(r["stage"] for r in records))
    assert stages == cfg["stages"]
    for stage in stages:
        logged = [r for r in records if r["stage"] == stage]
        assert all(r["loss_guidance"] > 0 for r in logged)
    # the prior fills the role in every stage that does not name its own (prolificdreamer's
    # geometry stage scores normals with SDS whatever the experiment-wide prior)
    lora = [r for r in records if "loss_lora" in r]
    assert bool(lora) == (guidance == "vsd")
    assert "toy-world score" not in p.stderr
