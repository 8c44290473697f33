"""``report.html`` for a run directory: one self-contained page, no network.

Sections (each only when its input exists): interactive 3-D view of the GLB (the vendored
``viewer/model-viewer-umd.min.js`` inlined, the GLB embedded as a ``data:`` URI so that the page
also works from ``file://``), turntable video and images (relative paths), final metrics per stage,
curves of every logged scalar from ``metrics.jsonl`` (inline SVG; stages laid end to end on the
step axis), and the resolved ``config.yaml``.
"""

from __future__ import annotations

import base64
import html
import math
import os
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core.atomic import atomic_write_text
from ..core.metrics_log import read_metrics

VIEWER_JS = "model-viewer-umd.min.js"
NOT_CURVES = ("step", "stage", "epoch", "global_step")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{padding:14px 24px;background:#24292f;color:#fff}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:12px;color:#c9d1d9}
section{padding:12px 24px}h2{font-size:16px;margin:8px 0}
model-viewer{width:640px;height:480px;background:#ffffff;border:1px solid #d0d7de}
model-viewer::part(default-progress-bar){display:none}
video,img.shot{max-width:640px;border:1px solid #d0d7de;background:#fff}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.curves{display:flex;flex-wrap:wrap;gap:12px}.curves figure{margin:0}
figcaption{font-size:12px;text-align:center}
pre{background:#fff;border:1px solid #d0d7de;padding:8px;font-size:12px;overflow:auto;max-height:480px}
""".strip()


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def curve_series(
    records: Sequence[dict[str, Any]],
) -> tuple[dict[str, list[tuple[float, float]]], list[tuple[float, str]]]:
    """Scalars of ``metrics.jsonl`` as ``{key: [(x, value)]}`` and the stage starts ``[(x, name)]``.

    ``x`` is the record's ``step`` plus the last step of all earlier stages, so stages that each
    count from 0 follow each other on one axis; records without ``step`` use their index.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    starts: list[tuple[float, str]] = []
    offset, stage_max, stage = 0.0, 0.0, None
    for index, rec in enumerate(records):
        name = str(rec.get("stage", ""))
        if name != stage:
            if stage is not None:
                offset += stage_max
            stage, stage_max = name, 0.0
            starts.append((offset, name))
        step = _number(rec.get("step"))
        local = step if step is not None else float(index)
        stage_max = max(stage_max, local)
        for key, value in rec.items():
            v = _number(value)
            if key not in NOT_CURVES and v is not None:
                series.setdefault(key, []).append((offset + local, v))
    return series, starts


def svg_curve(
    points: Sequence[tuple[float, float]],
    stage_starts: Sequence[tuple[float, str]] = (),
    width: int = 320,
    height: int = 160,
) -> str:
    """An inline SVG line chart of ``points`` [(x, y)] with min/max labels on both axes."""
    left, right, top, bottom = 56, 8, 8, 22
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    sx = (width - left - right) / (x1 - x0 if x1 > x0 else 1.0)
    sy = (height - top - bottom) / (y1 - y0 if y1 > y0 else 1.0)

    def px(x: float) -> float:
        return left + (x - x0) * sx

    def py(y: float) -> float:
        return height - bottom - (y - y0) * sy

    line = " ".join(f"{px(x):.2f},{py(y):.2f}" for x, y in points)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="10" font-family="sans-serif">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
        'fill="#fff" stroke="#d0d7de"/>',
    ]
    for x, name in stage_starts:
        if x0 < x <= x1:
            parts.append(
                f'<line x1="{px(x):.2f}" y1="{top}" x2="{px(x):.2f}" y2="{height - bottom}" '
                f'stroke="#999" stroke-dasharray="3,3"><title>{html.escape(name)}</title></line>'
            )
    parts += [
        f'<polyline fill="none" stroke="#0969da" stroke-width="1.5" points="{line}"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{y1:.4g}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{y0:.4g}</text>',
        f'<text x="{left}" y="{height - 6}">{x0:.6g}</text>',
        f'<text x="{width - right}" y="{height - 6}" text-anchor="end">{x1:.6g}</text>',
        "</svg>",
    ]
    return "".join(parts)


def _metrics_table(records: Sequence[dict[str, Any]]) -> str:
    """Last value of every scalar per stage."""
    last: dict[str, dict[str, float]] = {}
    for rec in records:
        row = last.setdefault(str(rec.get("stage", "")), {})
        for key, value in rec.items():
            v = _number(value)
            if key not in ("stage", "epoch") and v is not None:
                row[key] = v
    stages = list(last)
    keys = sorted({k for row in last.values() for k in row}, key=lambda k: (k != "step", k))
    head = "".join(f"<th>{html.escape(s or '(run)')}</th>" for s in stages)
    body = "".join(
        f"<tr><td>{html.escape(k)}</td>"
        + "".join(f"<td>{last[s][k]:.6g}</td>" if k in last[s] else "<td></td>" for s in stages)
        + "</tr>"
        for k in keys
    )
    return f"<table><tr><th>final value</th>{head}</tr>{body}</table>"


def _rel(path: Path, run_dir: Path) -> str:
    return html.escape(Path(os.path.relpath(path, run_dir)).as_posix(), quote=True)


def _viewer_js() -> str:
    return resources.files("threestudio_like.export").joinpath("viewer", VIEWER_JS).read_text(encoding="utf-8")


def render_report(
    run_dir: str | Path,
    title: Optional[str] = None,
    glb: Optional[str | Path] = None,
    video: Optional[str | Path] = None,
    metrics: Optional[str | Path] = None,
    config: Optional[str | Path] = None,
    images: Sequence[str | Path] = (),
) -> str:
    """The HTML text of the report. Paths default to the run directory layout
    (``export/model.glb``, ``video/turntable.mp4``, ``metrics.jsonl``, ``config.yaml``);
    relative paths are taken relative to ``run_dir``; missing files drop their section."""
    run_dir = Path(run_dir)

    def locate(given: Optional[str | Path], default: str) -> Optional[Path]:
        path = run_dir / (given if given is not None else default)
        return path if path.is_file() else None

    glb_path, video_path = locate(glb, "export/model.glb"), locate(video, "video/turntable.mp4")
    metrics_path, config_path = locate(metrics, "metrics.jsonl"), locate(config, "config.yaml")
    title = title or run_dir.resolve().name
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
    ]
    if glb_path is not None:
        out.append(f"<script>{_viewer_js()}</script>")
    out += [
        "</head><body>",
        f"<header><h1>{html.escape(title)}</h1>",
        f"<p>report written {datetime.now().strftime('%Y-%m-%d %H:%M:%S')}</p></header>",
    ]
    if glb_path is not None:
        data = base64.b64encode(glb_path.read_bytes()).decode("ascii")
        out.append(
            f'<section id="model"><h2>3-D model ({_rel(glb_path, run_dir)})</h2>'
            f'<model-viewer id="viewer" src="data:model/gltf-binary;base64,{data}" '
            'alt="exported model" camera-controls touch-action="pan-y" shadow-intensity="0" '
            'interaction-prompt="none"></model-viewer></section>'
        )
    if video_path is not None:
        out.append(
            f'<section id="turntable"><h2>Turntable</h2><video src="{_rel(video_path, run_dir)}" '
            "controls autoplay loop muted playsinline></video></section>"
        )
    shots = [p for p in (run_dir / Path(i) for i in images) if p.is_file()]
    if shots:
        out.append(
            '<section id="images"><h2>Images</h2>'
            + "".join(
                f'<figure><img class="shot" src="{_rel(p, run_dir)}" alt="{_rel(p, run_dir)}">'
                f"<figcaption>{_rel(p, run_dir)}</figcaption></figure>"
                for p in shots
            )
            + "</section>"
        )
    records = read_metrics(metrics_path) if metrics_path is not None else []
    if records:
        series, starts = curve_series(records)
        out.append(f'<section id="metrics"><h2>Metrics</h2>{_metrics_table(records)}</section>')
        ordered = sorted(series, key=lambda k: (not k.startswith("loss"), k))
        out.append(
            '<section id="curves"><h2>Curves</h2><div class="curves">'
            + "".join(
                f'<figure data-key="{html.escape(k, quote=True)}">{svg_curve(series[k], starts)}'
                f"<figcaption>{html.escape(k)}</figcaption></figure>"
                for k in ordered
            )
            + "</div></section>"
        )
    if config_path is not None:
        out.append(
            f'<section id="config"><h2>Resolved config</h2>'
            f"<pre>{html.escape(config_path.read_text(encoding='utf-8'))}</pre></section>"
        )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir: str | Path, **kwargs: Any) -> Path:
    """Write :func:`render_report` to ``<run_dir>/report.html`` (atomically); returns its path."""
    return atomic_write_text(Path(run_dir) / "report.html", render_report(run_dir, **kwargs))
