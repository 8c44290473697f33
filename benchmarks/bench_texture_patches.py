"""Whitish patches in the exported texture of toy-world runs (issue 24 item 3); prints one JSON object.

For each run directory: the exported ``export/model.obj`` and its albedo PNG are sampled at
``--samples`` surface points spread uniformly by area (fixed seed); a point is *whitish* when its
texture colour has an HSV saturation ``(max − min) / max`` below ``--saturation`` (every toy colour
has saturation 1; the backdrop and white have 0). Reported: the whitish share of the whole surface
and of its down-facing part (face normal at more than 30° below the horizontal, ``n·up < −0.5``,
in the run's +Z-up world: the base the training cameras, at −10…60° elevation, see only at grazing
angles), with the run's toy-world score from ``metrics.jsonl`` (IoU, margin against the best other
shape, colour error of the mean surface albedo).

Usage::

    python benchmarks/bench_texture_patches.py RUN_DIR [RUN_DIR …]
    python benchmarks/bench_texture_patches.py --run --out /tmp/patches [--prompts "a red cube" …] [--set key=value …]

``--run`` trains ``python launch.py prompt=… output_dir=OUT/<shape>`` for every prompt (default:
the five default prompts; one ≈ 4 min with one thread on a CPU) with the ``--set`` overrides,
then measures the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from threestudio_like.export.axes import UP_AXES, from_up_axis
from threestudio_like.toyworld.shapes import parse_prompt

PROMPTS = ("a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a blue torus")
"""The default experiment's five toy prompts."""
ROOT = Path(__file__).resolve().parents[1]


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """``(positions (V,3), uvs (T,2), faces (F,3), uv faces (F,3), up axis)`` of a triangle OBJ
    written by the export (``f v/vt/vn``; the up axis from its ``# up_axis:`` header comment)."""
    v, vt, f, ft, up = [], [], [], [], "+Z"
    for line in path.read_text().splitlines():
        head, _, rest = line.partition(" ")
        if head == "v":
            v.append([float(x) for x in rest.split()])
        elif head == "vt":
            vt.append([float(x) for x in rest.split()[:2]])
        elif head == "f":
            corners = [c.split("/") for c in rest.split()]
            f.append([int(c[0]) - 1 for c in corners])
            ft.append([int(c[1]) - 1 for c in corners])
        elif line.startswith("# up_axis:"):
            up = rest.split()[1]
    if up not in UP_AXES:
        raise ValueError(f"{path}: unknown up axis {up!r}")
    return np.array(v), np.array(vt), np.array(f), np.array(ft), up


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of (N,3) colours in [0,1] (0 for black)."""
    hi, lo = rgb.max(1), rgb.min(1)
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-12), 0.0)


def texture_samples(obj: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(colour (n,3) in [0,1], world face normal (n,3))`` at ``n`` area-uniform surface points
    of an exported OBJ, the colour read bilinearly from its albedo map (``v`` up)."""
    v, vt, f, ft, up = read_obj(obj)
    world = from_up_axis(torch.from_numpy(v), up).numpy()
    a, b, c = (world[f[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    area = np.linalg.norm(cross, axis=1)
    normal = cross / np.maximum(area[:, None], 1e-20)
    rng = np.random.default_rng(seed)
    face = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], 1)  # uniform barycentrics
    uv = (w[:, :, None] * vt[ft[face]]).sum(1)
    texture = np.asarray(Image.open(obj.with_name(f"{obj.stem}_albedo.png")).convert("RGB"), dtype=np.float32) / 255
    grid = torch.from_numpy(np.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1]], 1)).float()[None, None]
    image = torch.from_numpy(texture).permute(2, 0, 1)[None]
    color = torch.nn.functional.grid_sample(image, grid, mode="bilinear", align_corners=False)
    return color[0, :, 0].T.numpy().astype(np.float64), normal[face]


def eval_record(run: Path) -> dict:
    """The last ``eval`` record of a run's ``metrics.jsonl`` ({} when it has none)."""
    record: dict = {}
    path = run / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("stage") == "eval":
                record = row
    return record


def measure(run: Path, samples: int, threshold: float) -> dict:
    color, normal = texture_samples(run / "export" / "model.obj", samples)
    whitish = saturation(color) < threshold
    down = normal[:, 2] < -0.5
    score = eval_record(run)
    return {
        "run": str(run),
        "prompt": score.get("color", "") + " " + score.get("toy_shape", ""),
        "whitish": float(whitish.mean()),
        "whitish_down": float(whitish[down].mean()) if down.any() else 0.0,
        "down_fraction": float(down.mean()),
        "color_error": score.get("color_error"),
        "iou": score.get("iou"),
        "iou_margin": score.get("iou_margin"),
        "best_other_shape": score.get("best_other_shape"),
    }


def train(prompts: list[str], out: Path, overrides: list[str]) -> list[Path]:
    runs = []
    for prompt in prompts:
        parsed = parse_prompt(prompt)
        run = out / (parsed[0].name if parsed else prompt.replace(" ", "_"))
        command = [sys.executable, "launch.py", f"prompt={prompt}", f"output_dir={run}", "trainer.progress=false"]
        subprocess.run(command + overrides, cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories to measure")
    parser.add_argument("--run", action="store_true", help="train the prompts first (into --out)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_texture_patches"))
    parser.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    parser.add_argument("--samples", type=int, default=40000, help="surface samples per run")
    parser.add_argument("--saturation", type=float, default=0.5, help="whitish below this HSV saturation")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of the runs")
    args = parser.parse_args()
    runs = list(args.runs) + (train(args.prompts, args.out, args.set) if args.run else [])
    if not runs:
        parser.error("give run directories or --run")
    rows = [measure(run, args.samples, args.saturation) for run in runs]
    print(json.dumps({"saturation_below": args.saturation, "samples": args.samples, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
