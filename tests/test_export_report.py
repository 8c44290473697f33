"""report.html: curves, table, sections, embedded GLB; rendered in headless Chromium (slow)."""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from threestudio_like.export.mesh_export import export_mesh
from threestudio_like.export.report import curve_series, render_report, svg_curve, write_report
from threestudio_like.export.video import write_video
from threestudio_like.geometry.base import Mesh

RECORDS = [{"stage": "coarse", "step": s, "loss_sds": 1.0 / (s + 1), "lr": 0.01} for s in range(0, 11, 2)] + [
    {"stage": "refine", "step": s, "loss_sds": 0.5 - 0.01 * s, "loss_normal": "nan"} for s in range(0, 6)
]


def _write_run(run_dir, glb_color=None):
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    (run_dir / "config.yaml").write_text("system:\n  prompt: a <b>bold</b> & tiny cat\n")
    if glb_color is not None:
        tm = trimesh.creation.icosphere(3)
        mesh = Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces))
        color = torch.tensor(glb_color)
        export_mesh(
            mesh,
            lambda p: {"albedo": color.expand(len(p), 3)},
            run_dir / "export",
            {"formats": ["glb"], "texture_size": 32},
        )


def test_curve_series_lays_stages_end_to_end():
    series, starts = curve_series(RECORDS)
    assert starts == [(0.0, "coarse"), (10.0, "refine")]
    xs = [x for x, _ in series["loss_sds"]]
    assert xs == [0, 2, 4, 6, 8, 10] + [10, 11, 12, 13, 14, 15]
    assert "loss_normal" not in series and "step" not in series and len(series["lr"]) == 6


def test_svg_polyline_encodes_values():
    pts = [(0.0, 3.0), (1.0, 1.0), (2.0, 2.0), (4.0, 0.5)]
    svg = svg_curve(pts, width=300, height=150)
    coords = np.array([[float(v) for v in p.split(",")] for p in re.search(r'points="([^"]+)"', svg).group(1).split()])
    # x linear in x, y linear in value with the largest value on top
    assert np.allclose(np.diff(coords[:, 0]) / np.diff([p[0] for p in pts]), (coords[-1, 0] - coords[0, 0]) / 4)
    ys = np.array([p[1] for p in pts])
    slope = np.polyfit(ys, coords[:, 1], 1)
    assert slope[0] < 0 and np.allclose(np.polyval(slope, ys), coords[:, 1], atol=0.02)
    assert coords[:, 1].min() == coords[0, 1] and coords[:, 1].max() == coords[3, 1]


def test_report_sections_and_self_contained(tmp_path):
    _write_run(tmp_path, glb_color=(0.2, 0.4, 0.6))
    write_video(tmp_path / "video" / "turntable.mp4", [np.zeros((16, 16, 3))] * 2, fps=2)
    Image.new("RGB", (8, 8)).save(tmp_path / "sheet.png")
    path = write_report(tmp_path, title="cat run", images=["sheet.png", "missing.png"])
    text = path.read_text()
    for section in ("model", "turntable", "images", "metrics", "curves", "config"):
        assert f'id="{section}"' in text
    assert 'src="video/turntable.mp4"' in text and 'src="sheet.png"' in text and "missing.png" not in text
    assert "a &lt;b&gt;bold&lt;/b&gt; &amp; tiny cat" in text
    glb = re.search(r'src="data:model/gltf-binary;base64,([^"]+)"', text).group(1)
    assert base64.b64decode(glb) == (tmp_path / "export" / "model.glb").read_bytes()
    assert re.search(r"<(script|link|img|video)[^>]+(src|href)=\"https?:", text) is None  # no network
    assert "customElements.define" in text  # viewer inlined
    table = re.search(r"<table>.*?</table>", text, re.S).group(0)
    assert "<td>loss_sds</td><td>0.0909091</td><td>0.45</td>" in table  # last value per stage


def test_report_without_inputs_has_no_sections(tmp_path):
    text = render_report(tmp_path)
    assert "<section" not in text and "customElements.define" not in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_model_in_headless_chromium(tmp_path):
    """A magenta sphere in the GLB must show up as magenta pixels inside the viewer's box
    (nothing else on the page is magenta); without the GLB, no magenta at all."""
    run = tmp_path / "run"
    run.mkdir()
    _write_run(run, glb_color=(1.0, 0.0, 1.0))
    report = write_report(run)

    def screenshot(page, name):
        shot = tmp_path / name
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-unsafe-swiftshader",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=800,700",
                "--virtual-time-budget=20000",
                f"--screenshot={shot}",
                page.as_uri(),
            ],
            capture_output=True,
            timeout=180,
            check=True,
        )
        return np.asarray(Image.open(shot).convert("RGB")).astype(int)

    img = screenshot(report, "with_model.png")
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    magenta = (r > 120) & (b > 120) & (g < 0.5 * np.minimum(r, b))
    assert magenta.sum() > 20000, magenta.sum()  # the sphere fills a good part of 640x480
    rows, cols = np.nonzero(magenta)
    assert rows.min() > 70 and cols.max() < 700  # inside the viewer, below the header

    (run / "export" / "model.glb").unlink()
    blank = screenshot(write_report(run), "without_model.png")
    r, g, b = blank[..., 0], blank[..., 1], blank[..., 2]
    assert ((r > 120) & (b > 120) & (g < 0.5 * np.minimum(r, b))).sum() == 0
