"""``report.html`` for a run directory: one self-contained file, no network.

Sections (each only when its input exists): interactive 3-D view of the GLB (the vendored
``viewer/model-viewer-umd.min.js`` inlined, the GLB embedded as a ``data:`` URI), the turntable
video (embedded as a ``data:`` URI too, so the page still shows everything when copied alone),
extra images (``data:`` URIs as well), a table of the last value of every scalar per stage (the final
eval and export records, logged once, appear only there), curves of the scalars logged more than
once in a stage (inline SVG against the run's ``global_step``, stage starts dashed), and the
resolved ``config.yaml``.
"""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import os
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core.atomic import atomic_write_text
from ..core.metrics_log import read_metrics

VIEWER_JS = "model-viewer-umd.min.js"
NOT_METRICS = ("stage", "epoch", "global_step", "time")
"""Record keys that are bookkeeping, not metrics (``step`` is kept: the table shows each stage's last)."""

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
    """Scalars of ``metrics.jsonl`` logged more than once in a stage, as ``{key: [(x, value)]}``
    with ``x`` the record's ``global_step`` (its index when it has none), and the stage starts
    ``[(x, name)]``. A key logged once per stage (the final eval, the export) has no curve."""
    points: dict[tuple[str, str], list[tuple[float, float]]] = {}
    starts: list[tuple[float, str]] = []
    for index, rec in enumerate(records):
        stage = str(rec.get("stage", ""))
        step = _number(rec.get("global_step"))
        x = step if step is not None else float(index)
        if not starts or starts[-1][1] != stage:
            starts.append((x, stage))
        for key, value in rec.items():
            v = _number(value)
            if key not in NOT_METRICS and key != "step" and v is not None:
                points.setdefault((stage, key), []).append((x, v))
    series: dict[str, list[tuple[float, float]]] = {}
    for (_, key), pts in points.items():
        if len(pts) > 1:
            series.setdefault(key, []).extend(pts)
    curved = {stage for (stage, _), pts in points.items() if len(pts) > 1}
    return series, [(x, name) for x, name in starts if name in curved]


def svg_curve(
    points: Sequence[tuple[float, float]],
    stage_starts: Sequence[tuple[float, str]] = (),
    width: int = 320,
    height: int = 170,
    x_label: str = "global step",
) -> str:
    """An inline SVG line chart of ``points`` [(x, y)] with min/max labels on both axes."""
    left, right, top, bottom = 56, 8, 8, 32
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
        f'<text x="{left}" y="{height - bottom + 12}">{x0:.6g}</text>',
        f'<text x="{width - right}" y="{height - bottom + 12}" text-anchor="end">{x1:.6g}</text>',
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - 4}" text-anchor="middle" '
        f'fill="#57606a">{html.escape(x_label)}</text>',
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
            if key not in NOT_METRICS and v is not None:
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


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


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
        out.append(
            f'<section id="model"><h2>3-D model ({_rel(glb_path, run_dir)})</h2>'
            f'<model-viewer id="viewer" src="{_data_uri(glb_path, "model/gltf-binary")}" '
            'alt="exported model" camera-controls touch-action="pan-y" shadow-intensity="0" '
            'interaction-prompt="none"></model-viewer></section>'
        )
    if video_path is not None:
        out.append(
            f'<section id="turntable"><h2>Turntable ({_rel(video_path, run_dir)})</h2>'
            f'<video src="{_data_uri(video_path, "video/mp4")}" controls autoplay loop muted playsinline></video>'
            "</section>"
        )
    shots = [p for p in (run_dir / Path(i) for i in images) if p.is_file()]
    if shots:
        out.append(
            '<section id="images"><h2>Images</h2>'
            + "".join(
                f'<figure><img class="shot" src="{_data_uri(p, mimetypes.guess_type(p.name)[0] or "image/png")}" '
                f'alt="{_rel(p, run_dir)}">'
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
        if ordered:
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
