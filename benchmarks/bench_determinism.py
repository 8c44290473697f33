"""What ``trainer.deterministic`` costs: training steps of the embedded default's two stages
(dense-grid NeRF + volume renderer, DMTet + rasterizer, the toy SD prior) with torch's
deterministic algorithms on and off, interleaved in one process so machine load hits both alike.

    python benchmarks/bench_determinism.py [--steps 20] [--threads 2]

Prints one JSON object: milliseconds per step for each stage and setting, and the ratio on/off.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from threestudio_like.cli import compose_config
from threestudio_like.core.stages import resolve_stage, stage_names
from threestudio_like.systems.score_distillation import ScoreDistillationSystem


def step_seconds(system: ScoreDistillationSystem, optimizer: torch.optim.Optimizer, steps: int, on: bool) -> float:
    torch.use_deterministic_algorithms(on, warn_only=True)
    start = time.perf_counter()
    for i in range(steps):
        loss = system.training_step(i)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved on/off rounds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_config([])
    result: dict = {"threads": args.threads, "steps": args.steps, "rounds": args.rounds, "stages": {}}
    for name in stage_names(cfg):
        stage = dict(resolve_stage(cfg, name), geometry_init="scratch")
        stage.pop("_target_", None)
        torch.manual_seed(0)
        system = ScoreDistillationSystem(stage, where=f"stage.{name}")
        system.setup_guidance()
        optimizer, _ = system.configure_optimizer()
        step_seconds(system, optimizer, 2, False)  # warm-up
        times = {True: [], False: []}
        for _ in range(args.rounds):
            for on in (True, False):
                times[on].append(step_seconds(system, optimizer, args.steps, on))
        on_ms, off_ms = (1000 * min(times[k]) for k in (True, False))
        result["stages"][name] = {
            "deterministic_ms": round(on_ms, 1),
            "default_ms": round(off_ms, 1),
            "ratio": round(on_ms / off_ms, 3),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
