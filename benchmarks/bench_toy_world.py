"""The toy world end to end: run full experiments through the CLI (``launch.py``) and collect
each run's ground-truth score (the ``"stage": "eval"`` record of ``metrics.jsonl``) and wall time.

    python benchmarks/bench_toy_world.py                       # default text-to-3D, five shapes
    python benchmarks/bench_toy_world.py --prompts "a red cube" -- guidance=vsd
    python benchmarks/bench_toy_world.py --images red_cube blue_sphere   # toy_zero123

Runs ``--jobs`` at a time (one torch thread each). Prints one JSON object: per run the IoU
against the true shape, the best other shape and its IoU, the margin, Chamfer, colour error,
seconds; and the summary (min IoU, min margin, max seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("a blue sphere", "a red cube", "a green cylinder", "a yellow cone", "a red torus")


def run_one(args: list[str], out_dir: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args, f"output_dir={out_dir}"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = round(time.time() - t0, 1)
    if proc.returncode != 0:
        return {"args": args, "error": proc.stderr.strip().splitlines()[-1:], "seconds": seconds}
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    score = next(r for r in records if r.get("stage") == "eval")
    keep = (
        "toy_shape",
        "iou",
        "best_other_shape",
        "iou_best_other",
        "iou_margin",
        "iou_any_yaw",
        "best_other_any_yaw",
        "iou_best_other_any_yaw",
        "iou_margin_any_yaw",
        "chamfer",
        "color",
        "color_error",
        "color_nearest",
    )
    return {
        "args": args,
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in score.items() if k in keep},
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", nargs="*", default=None, help="text-to-3D prompts (default: five shapes)")
    parser.add_argument(
        "--images",
        nargs="*",
        default=None,
        help="toy render names (assets/toy-images/<name>.png) for experiment=toy_zero123",
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--keep", default=None, help="keep the run directories under this folder (run0, run1, …)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run (after --)")
    a = parser.parse_args()
    if a.images:
        assets = ROOT / "threestudio_like" / "assets" / "toy-images"
        runs = [["experiment=toy_zero123", f"image={assets / (name + '.png')}", *a.overrides] for name in a.images]
    else:
        runs = [[f"prompt={p}", *a.overrides] for p in (a.prompts or SHAPES)]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(a.keep or tmp)
        with ThreadPoolExecutor(a.jobs) as pool:
            results = list(pool.map(lambda ir: run_one(ir[1], base / f"run{ir[0]}", a.threads), enumerate(runs)))
    ok = [r for r in results if "iou" in r]
    summary = {"runs": len(results), "failed": len(results) - len(ok)}
    if ok:
        summary.update(
            min_iou=min(r["iou"] for r in ok),
            min_margin=min(r["iou_margin"] for r in ok),
            max_seconds=max(r["seconds"] for r in ok),
        )
    print(json.dumps({"results": results, "summary": summary}))


if __name__ == "__main__":
    main()
