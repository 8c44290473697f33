"""report.html: curves against the global step, table, sections, embedded GLB and video; copied
alone into an empty folder and rendered in headless Chromium (slow)."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from threestudio_like.export.mesh_export import export_mesh
from threestudio_like.export.report import curve_series, render_report, svg_curve, write_report
from threestudio_like.export.video import write_video
from threestudio_like.geometry.base import Mesh

RECORDS = (
    [{"stage": "coarse", "step": s, "global_step": s, "loss_sds": 1.0 / (s + 1), "lr": 0.01} for s in range(2, 11, 2)]
    + [
        {"stage": "refine", "step": s, "global_step": 10 + s, "loss_sds": 0.5 - 0.01 * s, "loss_normal": "nan"}
        for s in range(1, 6)
    ]
    + [{"stage": "export", "global_step": 15, "components": 1, "faces": 320}]
    + [{"stage": "eval", "global_step": 15, "iou": 0.875, "color": "red"}]
)


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


def test_curve_series_against_global_step_without_once_logged_metrics():
    series, starts = curve_series(RECORDS)
    assert starts == [(2.0, "coarse"), (11.0, "refine")]  # stages without curves (export, eval) unmarked
    assert [x for x, _ in series["loss_sds"]] == [2, 4, 6, 8, 10, 11, 12, 13, 14, 15]
    assert "loss_normal" not in series and "step" not in series and len(series["lr"]) == 5
    assert not {"iou", "components", "faces", "global_step", "time"} & set(series)  # logged once: table only


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
    assert "a &lt;b&gt;bold&lt;/b&gt; &amp; tiny cat" in text
    embedded = {
        "model/gltf-binary": tmp_path / "export" / "model.glb",
        "video/mp4": tmp_path / "video" / "turntable.mp4",
        "image/png": tmp_path / "sheet.png",
    }
    for mime, source in embedded.items():  # every file the page shows is inside it
        data = re.search(rf'src="data:{mime};base64,([^"]+)"', text).group(1)
        assert base64.b64decode(data) == source.read_bytes()
    page = re.sub(r"<script>.*?</script>", "", text, flags=re.S)  # the page's own tags, not the viewer's code
    assert re.findall(r'(?:src|href)="(?!data:)', page) == [] and "missing.png" not in text
    assert "customElements.define" in text  # viewer inlined
    table = re.search(r"<table>.*?</table>", text, re.S).group(0)
    assert "<th>coarse</th><th>refine</th><th>export</th><th>eval</th>" in table
    assert "<td>loss_sds</td><td>0.0909091</td><td>0.45</td><td></td><td></td>" in table  # last value per stage
    assert "<td>iou</td><td></td><td></td><td></td><td>0.875</td>" in table
    assert "<td>components</td><td></td><td></td><td>1</td><td></td>" in table
    keys = re.findall(r'<figure data-key="([^"]+)">', text)
    assert sorted(keys) == ["loss_sds", "lr"]  # no single-point charts
    assert "global step" in text


def test_report_without_inputs_has_no_sections(tmp_path):
    text = render_report(tmp_path)
    assert "<section" not in text and "customElements.define" not in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _chromium(page, out_dir, *args):
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-unsafe-swiftshader",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={out_dir / 'profile'}",
            "--virtual-time-budget=20000",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_copied_alone_shows_model_video_and_metrics_in_headless_chromium(tmp_path):
    """report.html copied alone into an empty folder (the run directory deleted): a magenta sphere
    in the GLB shows up as magenta pixels inside the viewer's box, a green turntable as green
    pixels below it (nothing else on the page has either colour), the metrics table is there;
    without the GLB and the video, neither colour appears."""
    run = tmp_path / "run"
    run.mkdir()
    _write_run(run, glb_color=(1.0, 0.0, 1.0))
    write_video(run / "video" / "turntable.mp4", [np.full((256, 256, 3), (0.0, 0.8, 0.0))] * 4, fps=4)
    alone = tmp_path / "alone"
    alone.mkdir()
    report = Path(shutil.copy(write_report(run), alone / "report.html"))
    shutil.rmtree(run)

    def screenshot(page, name):
        _chromium(page, tmp_path, "--window-size=800,1200", f"--screenshot={tmp_path / name}")
        img = np.asarray(Image.open(tmp_path / name).convert("RGB")).astype(int)
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        magenta = (r > 120) & (b > 120) & (g < 0.5 * np.minimum(r, b))
        green = (g > 120) & (r < 0.5 * g) & (b < 0.5 * g)
        return magenta, green

    magenta, green = screenshot(report, "with_model.png")
    assert magenta.sum() > 20000, magenta.sum()  # the sphere fills a good part of 640x480
    rows, cols = np.nonzero(magenta)
    assert rows.min() > 70 and rows.max() < 600 and cols.max() < 700  # inside the viewer, below the header
    assert green.sum() > 0.5 * 256 * 256, green.sum()  # the video's frame (its controls may cover the bottom)
    rows, cols = np.nonzero(green)
    assert rows.min() > 600 and cols.max() < 300  # below the viewer
    assert cols.max() - cols.min() >= 250 and rows.max() - rows.min() >= 150  # at its full 256² size
    dom = _chromium(report, tmp_path, "--dump-dom").stdout
    assert "<td>iou</td>" in dom and "<td>0.875</td>" in dom and 'data-key="loss_sds"' in dom

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text(json.dumps(RECORDS[0]) + "\n")
    magenta, green = screenshot(write_report(empty), "without_model.png")
    assert magenta.sum() == 0 and green.sum() == 0
