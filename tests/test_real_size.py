"""Real-size random checkpoints (tools/random_checkpoints.py), the real-size benchmark and the GPU
check's CPU dry run. Architectures are checked against the published parameter counts of the
real checkpoints, built on the meta device (nothing computed or written but configs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import random_checkpoints as rc  # noqa: E402

PUBLISHED = {  # parameter counts of the real checkpoints' weight files
    ("sd21-base", "unet"): 865_910_724,
    ("sd21-base", "vae"): 83_653_863,
    ("sd21-base", "text_encoder"): 340_387_840,
    ("clip-b32", "."): 151_277_313,
    ("clip-l14", "."): 427_616_513,
    ("depth-anything-small", "."): 24_785_089,
    # SD 2.1's UNet + MVDream's camera_embed: Linear(16, 1280), SiLU, Linear(1280, 1280)
    ("mvdream", "."): 865_910_724 + (16 * 1280 + 1280) + (1280 * 1280 + 1280),
}


@pytest.fixture
def counted(monkeypatch):
    """Builders run on the meta device; ``save_pretrained`` of a model records its parameter count
    under its folder instead of writing weights."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    counts: dict[str, int] = {}

    def record(self, path, *args, **kwargs):
        counts[str(path)] = sum(p.numel() for p in self.parameters())
        Path(path).mkdir(parents=True, exist_ok=True)
        self.config.to_json_file(os.path.join(path, "config.json")) if isinstance(self, PreTrainedModel) else (
            self.save_config(path)
        )

    monkeypatch.setattr(ModelMixin, "save_pretrained", record)
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", record)
    with torch.device("meta"):
        yield counts


@pytest.mark.slow
def test_architectures_have_the_published_parameter_counts(counted, tmp_path):
    for name in ("sd21-base", "clip-b32", "clip-l14", "depth-anything-small", "mvdream"):
        rc.MODELS[name][1](tmp_path / name, tmp_path)
    for (name, folder), n in PUBLISHED.items():
        assert counted[str((tmp_path / name / folder).resolve()) if folder != "." else str(tmp_path / name)] == n, (
            name,
            folder,
        )


@pytest.mark.slow
def test_zero123_layouts_are_recognised(counted, tmp_path):
    from threestudio_like.guidance.pretrained import pretrained_kind_of
    from threestudio_like.guidance.zero123_pipeline import CCProjection

    rc.build_zero123_xl(tmp_path / "xl")
    rc.build_stable_zero123(tmp_path / "stable", tmp_path / "missing")
    for folder, sub in (("xl", "cc_projection"), ("stable", "clip_camera_projection")):
        assert pretrained_kind_of(str(tmp_path / folder)) == "zero123"
        with torch.device("cpu"):
            proj = CCProjection.load_checkpoint(str(tmp_path / folder / sub))
        assert tuple(proj.proj.weight.shape) == (768, 772)
    assert counted[str(tmp_path / "xl" / "unet")] == 859_532_484  # SD 1.x UNet with 8 input channels


def test_byte_tokenizer_spells_any_text(tmp_path):
    from transformers import CLIPTokenizer

    rc.write_clip_tokenizer(tmp_path)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    text = "a DSLR photo of a café's crème brûlée, 50% off!"
    ids = tok(text).input_ids
    assert len(ids) == len(text.replace(" ", "").encode()) + 2 and max(ids) < rc.CLIP_VOCAB
    assert tok.unk_token_id not in ids[1:-1]
    # decoding puts a space between CLIP's pre-tokenized pieces (words, digits, punctuation)
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")


@pytest.mark.slow
def test_hub_id_resolves_through_the_random_cache(tmp_path):
    rc.build(tmp_path / "cache", ["depth-anything-small"])
    code = (
        "import numpy as np; from threestudio_like.preprocess.depth import DepthEstimator; "
        "d = DepthEstimator({'model': 'LiheYoung/depth-anything-small-hf', 'device': 'cpu'}); "
        "print(d.disparity(np.zeros((40, 60, 3), np.uint8)).shape)"
    )
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().endswith("(40, 60)")


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    """DEVICE=cpu: the parity tests skip, the benchmark runs one tiny experiment through export,
    the toy default runs at debug=smoke, `make -n test`; one JSON on the last line."""
    env = dict(os.environ, DEVICE="cpu", PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(tmp_path)], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    parity = result["parity"]  # 7 tests, some parametrized
    assert parity["passed"] == 0 and parity["skipped"] >= 7 and parity["failed"] == [] and parity["rc"] == 0
    run = result["real_size"]["experiments"]["dreamfusion"]
    assert run["exported"] and run["stages"]["nerf"]["steps"] == 2
    stage = run["stages"]["nerf"]
    assert stage["s_per_step"] > 0 and stage["peak_rss_gib"] > 0 and stage["estimate_gib"] > 0
    assert stage["gflop_per_step"] > 0 and stage["projected_ms_H100"] <= stage["projected_ms_A100"]
    assert result["toy"]["rc"] == 0 and 0.0 <= result["toy"]["iou"] <= 1.0
    assert result["make_test"]["rc"] == 0
