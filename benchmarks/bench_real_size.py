"""Real-size end-to-end check: every experiment with random-weight real architectures, on CPU.

Each experiment runs in its own process (``--child``) through the CLI's ``run`` — all stages, at
their real resolutions and samples per ray, ``--steps`` steps per stage (2), then validation,
export and a 4-view turntable — with the checkpoints of ``tools/random_checkpoints.py`` found
through ``HF_HUB_CACHE`` (built first if missing). Per stage it reports:

* ``s_per_step`` — wall time of the last step (the first is a warm-up and is FLOP-counted);
* ``peak_rss_gib`` — the process's largest resident set while the stage ran (sampled every 20 ms),
  each stage after the first trained again alone in a fresh process from the earlier stages'
  checkpoints (``--same-process``: all in the run's one process, where a stage's figure includes
  what the earlier ones left in the heap; kept as ``peak_rss_in_run_gib``);
* ``estimate_gib`` — the memory estimate (``systems/memory_estimate.py``) made before the run, and its
  ratio to the measured peak;
* ``gflop_per_step`` and ``projected_ms_A100/H100`` — the first step's FLOPs
  (``torch.utils.flop_counter``) over 40 % of the bf16 dense peak (A100 312, H100 989 TFLOP/s),
  as ``benchmarks/bench_guidance.py`` projects.

Prints one JSON object. ``--tiny`` runs the shipped tiny models at ``debug=smoke`` sizes (what the
slow test runs). Usage:
``python benchmarks/bench_real_size.py [--experiments dreamfusion zero123 ...] [--steps 2] [--tiny]
[--set KEY=VALUE ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = (
    "dreamfusion",
    "magic3d",
    "prolificdreamer",
    "zero123",
    "makeit3d",
    "dreamgaussian",
    "dreamgaussian_image",
    "anything3d",
    "mvdream",
)
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0}
UTILISATION = 0.4
MODELS = {  # the preprocessing models of the random cache (the config's defaults are larger ones)
    "models.sam": "facebook/sam-vit-base",
    "models.blip": "Salesforce/blip-image-captioning-base",
    "models.depth": "LiheYoung/depth-anything-small-hf",
}


def inputs(experiment: str, folder: Path) -> list[str]:
    """The experiment's inputs: a prompt, an RGBA object image (256², a red square on
    transparent), a depth map (Make-It-3D), a photo (Anything-3D)."""
    import numpy as np
    import yaml
    from PIL import Image

    img = np.zeros((256, 256, 4), np.uint8)
    img[64:192, 64:192] = [220, 30, 30, 255]
    Image.fromarray(img).save(folder / "obj.png")
    yy, xx = np.mgrid[0:256, 0:256]
    np.save(folder / "obj_depth.npy", (1.0 / (1.0 + np.hypot(xx - 128, yy - 128) / 128)).astype(np.float32))
    Image.fromarray(img[..., :3]).save(folder / "photo.png")
    requires = yaml.safe_load((ROOT / "configs" / "experiment" / f"{experiment}.yaml").read_text()).get("requires", [])
    given = {"prompt": "prompt=a red cube", "image": f"image={folder / 'obj.png'}"}
    args = [given[r] for r in requires if r in given]
    if experiment == "makeit3d":
        args.append(f"depth={folder / 'obj_depth.npy'}")
    if experiment == "anything3d":
        args = [a for a in args if not a.startswith("image=")] + [f"image={folder / 'photo.png'}"]
    return args or [given["prompt"]]


class RssSampler(threading.Thread):
    """The process's largest resident set per stage (``stage`` set by the caller)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stage = "setup"
        self.peak: dict[str, int] = {}

    def run(self) -> None:
        while True:
            with open("/proc/self/status") as f:
                rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            self.peak[self.stage] = max(self.peak.get(self.stage, 0), rss)
            time.sleep(0.02)


class StageMeasured(Exception):
    """Ends a ``--only-stage`` child once its stage has trained."""


def child(
    experiment: str, steps: int, tiny: bool, device: str, out: Path, extra: list[str], only: str | None = None
) -> dict[str, Any]:
    """Run one experiment in this process; returns its per-stage figures. ``only``: train that stage
    alone, from the earlier stages' checkpoints already in ``out/run_<only>/ckpts``, and stop."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from threestudio_like import cli
    from threestudio_like.core import trainer as trainer_module
    from threestudio_like.systems.memory_estimate import MemoryEstimate, memory_estimates

    run = out / (f"run_{only}" if only else "run")
    overrides = [f"experiment={experiment}", f"trainer.device={device}"]
    overrides += ["trainer.progress=false", "trainer.ckpt_every=0", "video.n_views=4", f"output_dir={run}"]
    overrides += [f"start_stage={only}"] if only else []
    if tiny:
        overrides += ["debug=smoke", f"limits.max_steps={steps}"]
    else:
        overrides += [f"+limits.max_steps={steps}"] + [f"{k}={v}" for k, v in MODELS.items()]
    overrides += inputs(experiment, out) + extra
    cfg = cli.compose_config(overrides)
    estimates: dict[str, int] = {}
    validate = cli.validate

    def validate_and_estimate(cfg: Any) -> None:  # where the run has its inputs (a `prepare:` step's too)
        validate(cfg)
        estimates.update(
            {e.stage: e.total for e in memory_estimates(cfg, torch.device(device)) if isinstance(e, MemoryEstimate)}
        )

    cli.validate = validate_and_estimate
    sampler = RssSampler()
    sampler.start()
    stages: dict[str, dict[str, Any]] = {}
    original_step, original_stage = trainer_module.Trainer._step, trainer_module.Trainer._train_stage

    def train_stage(self: Any, system: Any, index: int, payload: Any) -> None:
        sampler.stage = self.names[index]
        stages[sampler.stage] = {"steps": 0}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        original_stage(self, system, index, payload)
        if self.device.type == "cuda":
            stages[self.names[index]]["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        sampler.stage = "finishing"
        if only:
            raise StageMeasured

    def step(self: Any, run: Any, bar: Any) -> None:
        row = stages[run.name]
        started = time.perf_counter()
        if row["steps"] == 0:
            with FlopCounterMode(display=False) as counter:
                original_step(self, run, bar)
            row["gflop_per_step"] = round(counter.get_total_flops() / 1e9, 3)
        else:
            original_step(self, run, bar)
        row["s_per_step"] = round(time.perf_counter() - started, 2)
        row["steps"] += 1

    trainer_module.Trainer._step, trainer_module.Trainer._train_stage = step, train_stage
    started = time.perf_counter()
    try:
        run_dir = cli.run(cfg)
    except StageMeasured:
        run_dir = run
    for name, row in stages.items():
        peak = sampler.peak.get(name, 0)
        row["peak_rss_gib"] = round(peak / 2**30, 2)
        estimate = estimates.get(name)  # none for a stage built from the trained previous one
        row["estimate_gib"] = None if estimate is None else round(estimate / 2**30, 2)
        row["estimate_over_peak"] = None if estimate is None else round(estimate / max(peak, 1), 3)
        for gpu, peak_tflops in PEAK_TFLOPS.items():
            row[f"projected_ms_{gpu}"] = round(row.get("gflop_per_step", 0) / (UTILISATION * peak_tflops), 4)
    exported = (run_dir / "export" / "model.glb").is_file() and (run_dir / "export" / "model.obj").is_file()
    return {
        "stages": stages,
        "exported": exported,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_finishing_gib": round(sampler.peak.get("finishing", 0) / 2**30, 2),
    }


def run_child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """A child's figures, or its exit status and last error line."""
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode == 0:
        return json.loads(p.stdout.strip().splitlines()[-1])
    errors = [ln for ln in p.stderr.splitlines() if "Error" in ln or ln.startswith("error:")]
    return {"rc": p.returncode, "error": errors[-1:] or p.stderr.splitlines()[-1:]}


def remeasure_later_stages(figures: dict[str, Any], cmd: list[str], env: dict[str, str], out: Path) -> None:
    """Each stage after the first trained again in a process of its own, from the earlier stages'
    checkpoints of the full run: its peak RSS, not what the earlier stages left in the process's
    heap (a CPU process rarely gives freed memory back; on a GPU torch's allocator reuses it).
    The full run's figure stays as ``peak_rss_in_run_gib``."""
    names = list(figures["stages"])
    for k, name in enumerate(names[1:], start=1):
        ckpts = out / f"run_{name}" / "ckpts"
        ckpts.mkdir(parents=True)
        for earlier in names[:k]:
            os.link(out / "run" / "ckpts" / f"{earlier}.ckpt", ckpts / f"{earlier}.ckpt")
        alone = run_child(cmd + ["--only-stage", name], env)
        row = figures["stages"][name]
        if "stages" not in alone:
            row["alone"] = alone
            continue
        row["peak_rss_in_run_gib"] = row["peak_rss_gib"]
        for key in ("peak_rss_gib", "estimate_gib", "estimate_over_peak"):
            row[key] = alone["stages"][name][key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--steps", type=int, default=2, help="steps per stage (≥ 2: the first is a warm-up)")
    parser.add_argument("--tiny", action="store_true", help="the shipped tiny models at debug=smoke sizes")
    parser.add_argument("--device", default="cpu", help="trainer.device of the runs (cpu, cuda)")
    parser.add_argument("--cache", type=Path, default=None, help="tools/random_checkpoints.py's cache")
    parser.add_argument("--set", nargs="*", default=[], help="more overrides for every run (KEY=VALUE)")
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="measure every stage in the experiment's one process (default: each later stage again alone)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only-stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = child(args.child, args.steps, args.tiny, args.device, args.out, args.set, args.only_stage)
        print(json.dumps(figures))
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not args.tiny:
        sys.path.insert(0, str(ROOT / "tools"))
        from random_checkpoints import DEFAULT_CACHE, build

        cache = args.cache or DEFAULT_CACHE
        build(cache, [])
        env["HF_HUB_CACHE"] = str(cache)
    result: dict[str, Any] = {"steps_per_stage": args.steps, "tiny": args.tiny, "device": args.device, "set": args.set}
    result["experiments"] = {}
    for experiment in args.experiments:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--child", experiment, "--out", tmp, "--steps", str(args.steps)]
            cmd += ["--device", args.device, "--set", *args.set] + (["--tiny"] if args.tiny else [])
            figures = run_child(cmd, env)
            if not args.same_process and "stages" in figures:
                remeasure_later_stages(figures, cmd, env, Path(tmp))
        result["experiments"][experiment] = figures
        print(f"{experiment}: {json.dumps(figures)}", file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
