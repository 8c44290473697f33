"""``threestudio-like compare RUN_DIR… [--out compare.html]``: finished runs side by side on one
self-contained page (no network; images and videos inline as ``data:`` URIs).

Sections (in two columns on a wide window): the turntables in a grid (``video/turntable.mp4``,
with its first frame as the poster), the metrics of each run's ``eval.json`` with the best value
of each row marked (where a row has a better direction, :data:`BETTER`), the loss curves of the
runs' ``metrics.jsonl`` overlaid (one colour a run, inline SVG against the run's global step),
and the config keys whose values differ between the runs.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core.atomic import atomic_write_text
from ..core.config import to_container
from ..core.errors import CommandParser, UserError, exit_status
from ..core.metrics_log import read_metrics
from ..export.report import curve_series
from .run_eval import EVAL_FILE, load_run_config

COLORS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24", "#57606a")
"""Line colour of run k (cycled)."""
BETTER: dict[str, str] = {
    "clip_score": "higher",
    "clip_r_precision": "higher",
    "janus_margin": "higher",
    "image_clip_similarity": "higher",
    "reprojection_error_px": "lower",
    "reprojection_consistent_fraction": "higher",
    "components": "lower",
    "watertight": "higher",
    "ref_psnr": "higher",
    "ref_ssim": "higher",
    "ref_psnr_masked": "higher",
    "ref_ssim_masked": "higher",
    "ref_lpips": "lower",
    "gt_iou": "higher",
    "gt_chamfer": "lower",
    "gt_normal_consistency": "higher",
    "gt_fscore": "higher",
    "toy_shape.iou": "higher",
    "toy_shape.iou_margin": "higher",
    "toy_shape.iou_any_yaw": "higher",
    "toy_shape.iou_margin_any_yaw": "higher",
    "toy_shape.chamfer": "lower",
    "toy_shape.color_error": "lower",
}
"""Which way each metric is better; rows not listed are shown unmarked."""
IGNORED_CONFIG = ("output_dir", "resume")
"""Config keys that differ between any two runs by nature."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{padding:14px 24px;background:#24292f;color:#fff}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:12px;color:#c9d1d9}
section{padding:12px 24px}h2{font-size:16px;margin:8px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.grid figure{margin:0;background:#fff;border:1px solid #d0d7de;padding:6px}
.grid video,.grid img{width:100%;image-rendering:pixelated;background:#fff}
figcaption{font-size:12px;margin-top:4px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
td.best{background:#dafbe1;font-weight:600}td.best::after{content:" ★";color:#1a7f37}
td.differs{background:#fff8c5}
.curves{display:flex;flex-wrap:wrap;gap:12px}.curves figure{margin:0}
.note{font-size:12px;color:#57606a}
.columns{display:flex;flex-wrap:wrap;align-items:flex-start}.columns>div{flex:1 1 600px;min-width:0}
""".strip()


@dataclass
class RunSummary:
    """What the page shows of one run."""

    label: str
    """Short name on the page: ``A: <experiment>/<directory>``."""
    run_dir: Path
    config: dict[str, Any]
    """The flattened config: dotted keys → values."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """``eval.json``'s metrics ({} when the run was not evaluated)."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """``metrics.jsonl``."""

    @classmethod
    def load(cls, run_dir: Path, index: int) -> RunSummary:
        cfg = load_run_config(run_dir)
        label = f"{chr(ord('A') + index % 26)}: {cfg.get('experiment_name', '?')}/{run_dir.resolve().name}"
        records = read_metrics(run_dir / "metrics.jsonl")
        return cls(label, run_dir, flatten(to_container(cfg)), _eval_metrics(run_dir), records)


def _eval_metrics(run_dir: Path) -> dict[str, Any]:
    """The metrics of a run's ``eval.json`` ({} when it has none)."""
    path = run_dir / EVAL_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["metrics"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not an eval.json; write it again with `threestudio-like eval {run_dir}`") from None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → ``{"a.b.c": leaf}`` (lists are leaves)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def best_runs(values: Sequence[Any], better: Optional[str]) -> set[int]:
    """Indices of the best finite numbers of a row (all ties); none for an unmarked row, a row
    with fewer than two numbers or one where they are all equal."""
    numbers = {
        i: float(v)
        for i, v in enumerate(values)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    if better is None or len(set(numbers.values())) < 2:
        return set()
    target = max(numbers.values()) if better == "higher" else min(numbers.values())
    return {i for i, v in numbers.items() if v == target}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(json.dumps(value) if isinstance(value, (list, dict)) else str(value))


def metrics_table(runs: Sequence[RunSummary]) -> str:
    keys = list(dict.fromkeys(k for r in runs for k in r.metrics))
    head = "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
    rows = []
    for key in keys:
        values = [r.metrics.get(key) for r in runs]
        best = best_runs(values, BETTER.get(key))
        arrow = {"higher": " ↑", "lower": " ↓"}.get(BETTER.get(key, ""), "")
        cells = "".join(
            f'<td class="best">{_cell(v)}</td>' if i in best else f"<td>{_cell(v)}</td>" for i, v in enumerate(values)
        )
        rows.append(f'<tr data-key="{html.escape(key, quote=True)}"><td>{html.escape(key)}{arrow}</td>{cells}</tr>')
    return f'<table id="metrics-table"><tr><th>metric</th>{head}</tr>{"".join(rows)}</table>'


def config_differences(runs: Sequence[RunSummary]) -> tuple[list[str], int]:
    """(the config keys whose values differ between the runs, how many keys are the same)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config))
    keys = [k for k in keys if k.split(".")[0] not in IGNORED_CONFIG]
    missing = object()
    differ = [k for k in keys if len({json.dumps(r.config.get(k, missing), default=str) for r in runs}) > 1]
    return differ, len(keys) - len(differ)


def config_table(runs: Sequence[RunSummary]) -> str:
    differ, same = config_differences(runs)
    head = "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
    rows = "".join(
        f'<tr data-key="{html.escape(k, quote=True)}"><td>{html.escape(k)}</td>'
        + "".join(f'<td class="differs">{_cell(r.config.get(k))}</td>' for r in runs)
        + "</tr>"
        for k in differ
    )
    note = f'<p class="note">{len(differ)} keys differ; {same} are the same in every run.</p>'
    return f'{note}<table id="config-table"><tr><th>config key</th>{head}</tr>{rows}</table>'


def svg_overlay(
    curves: Sequence[tuple[str, Sequence[tuple[float, float]]]], width: int = 290, height: int = 160
) -> str:
    """An inline SVG with one polyline per (colour, [(x, y)]) on shared axes, min/max labelled."""
    left, right, top, bottom = 56, 8, 8, 22
    xs = [x for _, pts in curves for x, _ in pts]
    ys = [y for _, pts in curves for _, y in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - left - right) / (x1 - x0 if x1 > x0 else 1.0)
    sy = (height - top - bottom) / (y1 - y0 if y1 > y0 else 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="10" font-family="sans-serif">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
        'fill="#fff" stroke="#d0d7de"/>',
    ]
    for color, pts in curves:
        line = " ".join(f"{left + (x - x0) * sx:.2f},{height - bottom - (y - y0) * sy:.2f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{line}"/>')
    parts += [
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{y1:.4g}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{y0:.4g}</text>',
        f'<text x="{left}" y="{height - bottom + 12}">{x0:.6g}</text>',
        f'<text x="{width - right}" y="{height - bottom + 12}" text-anchor="end">{x1:.6g}</text>',
        "</svg>",
    ]
    return "".join(parts)


def loss_curves(runs: Sequence[RunSummary]) -> str:
    """One overlaid chart per loss key (``loss``, ``loss_*``) logged more than once by some run."""
    series = [curve_series(r.records)[0] for r in runs]
    keys = sorted({k for s in series for k in s if k.startswith("loss")})
    figures = []
    for key in keys:
        curves = [(COLORS[i % len(COLORS)], s[key]) for i, s in enumerate(series) if key in s]
        figures.append(
            f'<figure data-key="{html.escape(key, quote=True)}">{svg_overlay(curves)}'
            f"<figcaption>{html.escape(key)}</figcaption></figure>"
        )
    return f'<div class="curves">{"".join(figures)}</div>' if figures else '<p class="note">no loss curves logged</p>'


def _legend(runs: Sequence[RunSummary]) -> str:
    return " ".join(
        f'<span><span class="swatch" style="background:{COLORS[i % len(COLORS)]}"></span>{html.escape(r.label)}</span>'
        for i, r in enumerate(runs)
    )


def _turntable(run: RunSummary, index: int) -> str:
    video = run.run_dir / "video" / "turntable.mp4"
    caption = f'<figcaption><span class="swatch" style="background:{COLORS[index % len(COLORS)]}"></span>'
    caption += f"{html.escape(run.label)}</figcaption>"
    if not video.is_file():
        return f'<figure><p class="note">no video/turntable.mp4</p>{caption}</figure>'
    uri = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode("ascii")
    poster = _first_frame(video)
    poster_attr = f' poster="{poster}"' if poster else ""
    return f'<figure><video src="{uri}"{poster_attr} autoplay loop muted playsinline></video>{caption}</figure>'


def _first_frame(video: Path) -> Optional[str]:
    """The first frame as a PNG ``data:`` URI (None when it cannot be decoded)."""
    import imageio.v2 as imageio

    from ..export.image_io import png_bytes

    try:
        with imageio.get_reader(video, format="FFMPEG") as reader:
            frame = reader.get_data(0)
    except (OSError, RuntimeError, IndexError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(png_bytes(frame)).decode("ascii")


def render_compare(runs: Sequence[RunSummary], title: str = "threestudio-like compare") -> str:
    """The HTML text of the comparison page."""
    unevaluated = [r.label for r in runs if not r.metrics]
    note = (
        f'<p class="note">not evaluated (no {EVAL_FILE}; run <code>threestudio-like eval RUN_DIR</code>): '
        f"{html.escape(', '.join(unevaluated))}</p>"
        if unevaluated
        else ""
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
            f"<header><h1>{html.escape(title)}</h1><p>{len(runs)} runs: "
            f"{html.escape(' · '.join(str(r.run_dir) for r in runs))}</p></header>",
            '<main class="columns"><div>',
            '<section id="turntables"><h2>Turntables</h2><div class="grid">'
            + "".join(_turntable(r, i) for i, r in enumerate(runs))
            + "</div></section>",
            f'<section id="curves"><h2>Loss curves</h2><p>{_legend(runs)}</p>{loss_curves(runs)}</section>',
            f'<section id="config"><h2>Config differences</h2>{config_table(runs)}</section>',
            "</div><div>",
            f'<section id="metrics"><h2>Metrics (best per row ★)</h2>{note}{metrics_table(runs)}</section>',
            "</div></main></body></html>",
        ]
    )


def write_compare(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write the comparison page of ``run_dirs`` to ``out`` (atomically); returns its path."""
    runs = [RunSummary.load(Path(d), i) for i, d in enumerate(run_dirs)]
    return atomic_write_text(Path(out), render_compare(runs))


def parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="threestudio-like compare",
        description=(
            "Finished runs side by side on one self-contained HTML page: turntables, the metrics of their "
            "eval.json (best per row marked; run `threestudio-like eval RUN_DIR` first), loss curves overlaid, "
            "the config keys that differ. Definitions: docs/evaluation.md."
        ),
    )
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="finished runs' directories")
    p.add_argument("--out", metavar="HTML", default="compare.html", help="page to write (default: %(default)s)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command on ``argv`` (``sys.argv[1:]`` by default); the exit status."""
    return exit_status(run, argv)


def run(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    path = write_compare(args.run_dirs, args.out)
    print(f"compare: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    from ..core.interrupts import signals_handled

    with signals_handled():
        code = main()
    sys.exit(code)
