"""``threestudio-like eval RUN_DIR …`` (also ``python -m threestudio_like.eval``): score a finished
run, write ``RUN_DIR/eval.json``, print a table.

A bad RUN_DIR, ground-truth file, prompt file or flag is one ``error:`` line and exit status 2;
a score that cannot be computed (no CLIP model, no ``lpips`` package) is skipped with a one-line
note on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..core.errors import CommandParser, exit_status
from ..core.transformers_output import quiet_transformers

DESCRIPTION = """\
Score a finished run (RUN_DIR: the directory a run wrote) and write RUN_DIR/eval.json.

The final model is rendered on a fixed orbit: N views evenly spaced in azimuth from the front
(0°), 15° above the horizon, at the run's evaluation distance and field of view. Scores: CLIP
score, CLIP R-precision and the Janus indicator (prompted runs), CLIP similarity of the views to
the input image and PSNR/SSIM/LPIPS at the input view (image-to-3D), depth-reprojection
consistency of neighbouring views, the exported mesh's statistics, IoU/Chamfer/normal
consistency/F-score against --gt, and the evaluators the run's experiment lists (the toy shape
score). Definitions: docs/evaluation.md."""

EXAMPLES = """\
examples:
  threestudio-like eval outputs/default/a_red_cube@20261204-120000
  threestudio-like eval RUN_DIR --clip openai/clip-vit-base-patch32 --views 24
  threestudio-like eval RUN_DIR --gt chair.obj --tau 0.02
then: threestudio-like compare RUN_DIR1 RUN_DIR2 --out compare.html"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"takes a whole number of at least 2, got '{text}'")
    return value


def _distance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"takes a positive distance, got '{text}'")
    return value


def parser() -> argparse.ArgumentParser:
    from .run_eval import EvalOptions

    defaults = EvalOptions()
    p = CommandParser(
        prog="threestudio-like eval",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=26, width=100),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's directory")
    p.add_argument("--gt", metavar="MESH", help="ground-truth mesh (OBJ, PLY, GLB …) for IoU, Chamfer, F-score")
    p.add_argument(
        "--gt-up-axis",
        choices=["+Y", "+Z"],
        default=defaults.gt_up_axis,
        help="up axis of the --gt file (default: %(default)s, as the OBJ exports)",
    )
    p.add_argument(
        "--tau", metavar="D", type=_distance, default=defaults.tau, help="F-score distance (default: %(default)s)"
    )
    p.add_argument("--clip", metavar="MODEL", help="CLIP model: a directory or a cached hub id (default: the run's)")
    p.add_argument(
        "--views", metavar="N", type=_positive, default=defaults.views, help="orbit views (default: %(default)s)"
    )
    p.add_argument("--size", metavar="PX", type=_positive, help="orbit image side (default: the run's eval size)")
    p.add_argument("--prompts", metavar="FILE", help="prompt set for R-precision, one a line (default: shipped)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the run's trainer.device)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command on ``argv`` (``sys.argv[1:]`` by default); the exit status."""
    return exit_status(run, argv)


def run(argv: list[str]) -> None:
    from .run_eval import EVAL_FILE, EvalOptions, evaluate_run_dir, format_table

    args = parser().parse_args(argv)
    options = EvalOptions(
        gt=args.gt,
        gt_up_axis=args.gt_up_axis,
        clip=args.clip,
        views=args.views,
        size=args.size or 0,
        prompts=args.prompts,
        tau=args.tau,
        device=args.device,
    )
    quiet_transformers()
    report = evaluate_run_dir(args.run_dir, options, note=lambda line: print(f"eval: {line}", file=sys.stderr))
    print(format_table(report))
    print(f"eval: wrote {args.run_dir.rstrip('/')}/{EVAL_FILE}", file=sys.stderr)
