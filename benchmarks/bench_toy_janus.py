"""The Janus probe: does the toy mug get its handle, on its back? The single-view toy SD default
(``python launch.py prompt="a red mug" seed=S``) against the toy multi-view prior
(``experiment=toy_mvdream``), full runs through the CLI, one at a time.

    python benchmarks/bench_toy_janus.py --work-dir /tmp/janus            # seeds 0–2, both priors
    python benchmarks/bench_toy_janus.py --work-dir /tmp/janus --shapes   # + five shapes, seed 0, toy_mvdream

Per run: the final mesh's IoU against the mug and against the cylinder, the margin mug −
cylinder (the toy-shape score, ``metrics.jsonl``'s eval record), and its handle
(:func:`~threestudio_like.eval.toy_handle.mesh_handle`: azimuth, volume, concentration) against
the true one (:data:`~threestudio_like.toyworld.shapes.MUG_HANDLE_AZIMUTH_DEG`). A run is a
**hit** when the margin is ≥ 0.05 and the handle is within 45° of the truth. A finished run
already in ``--work-dir/<experiment>_seed<S>`` is scored again, not rerun. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_toy_world import SHAPES, run_one

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from threestudio_like.eval.run_eval import load_final_system, load_run_config  # noqa: E402
from threestudio_like.eval.toy_handle import azimuth_error, mesh_handle  # noqa: E402
from threestudio_like.toyworld.shapes import MUG_HANDLE_AZIMUTH_DEG  # noqa: E402

PROMPT = "a red mug"
MIN_MARGIN = 0.05
"""The target's least IoU margin of the mug over the cylinder."""
MAX_AZIMUTH_ERROR = 45.0
"""The target's largest handle azimuth error (degrees)."""


def eval_record(run_dir: Path) -> dict | None:
    """The toy-shape score of a finished run (None when it has none)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return next((r for r in records if r.get("stage") == "eval"), None)


def run(experiment: str, prompt: str, seed: int, run_dir: Path, threads: int) -> dict:
    """Run (unless finished) and score one run."""
    seconds = None
    if eval_record(run_dir) is None:
        result = run_one([f"experiment={experiment}", f"prompt={prompt}", f"seed={seed}"], run_dir, threads)
        if "error" in result:
            return {"experiment": experiment, "prompt": prompt, "seed": seed, **result}
        seconds = result["seconds"]
    score = eval_record(run_dir)
    out = {
        "experiment": experiment,
        "prompt": prompt,
        "seed": seed,
        "iou": round(score["iou"], 3),
        "best_other_shape": score["best_other_shape"],
        "iou_margin": round(score["iou_margin"], 3),
        "seconds": seconds,
    }
    if score["toy_shape"] == "mug":
        system = load_final_system(run_dir, load_run_config(run_dir))
        handle = mesh_handle(system.geometry.isosurface())
        error = azimuth_error(handle["handle_azimuth"], MUG_HANDLE_AZIMUTH_DEG)
        margin = score["iou_mug"] - score["iou_cylinder"]
        out.update(
            iou_cylinder=round(score["iou_cylinder"], 3),
            margin_over_cylinder=round(margin, 3),
            handle_azimuth=None if handle["handle_azimuth"] is None else round(handle["handle_azimuth"], 1),
            handle_azimuth_error=None if error is None else round(error, 1),
            handle_volume=round(handle["handle_volume"], 4),
            handle_concentration=round(handle["handle_concentration"], 3),
            hit=bool(margin >= MIN_MARGIN and error is not None and abs(error) <= MAX_AZIMUTH_ERROR),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, help="run directories (<experiment>_seed<S>), kept")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="*", default=["default", "toy_mvdream"])
    parser.add_argument("--shapes", action="store_true", help="also the five default prompts, seed 0, toy_mvdream")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    a = parser.parse_args()
    base = Path(a.work_dir)
    results = [run(e, PROMPT, s, base / f"{e}_seed{s}", a.threads) for s in a.seeds for e in a.experiments]
    if a.shapes:
        results += [run("toy_mvdream", p, 0, base / f"toy_mvdream_{p.replace(' ', '_')}", a.threads) for p in SHAPES]
    summary = {
        e: {
            "hits": sum(bool(r.get("hit")) for r in results if r["experiment"] == e and r["prompt"] == PROMPT),
            "runs": sum(r["experiment"] == e and r["prompt"] == PROMPT for r in results),
        }
        for e in a.experiments
    }
    print(json.dumps({"results": results, "summary": summary}))


if __name__ == "__main__":
    main()
