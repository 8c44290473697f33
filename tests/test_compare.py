"""``threestudio-like compare RUN_DIR…`` (issue 28, item 2): one self-contained page with the
turntables, the metrics with the best per row marked, the loss curves overlaid and the config
differences — checked on run directories written here with known contents."""

import json
import re

import numpy as np
import pytest
import yaml

from threestudio_like.cli import main
from threestudio_like.eval.compare import best_runs, config_differences, flatten
from threestudio_like.export.video import write_video


def _run(root, name, config, metrics=None, losses=(), video=True):
    d = root / name
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (d / "eval.json").write_text(json.dumps({"metrics": metrics, "skipped": {}}))
    records = [{"stage": "coarse", "step": i, "loss": v, "loss_sds": v / 2, "global_step": i} for i, v in losses]
    records.append({"stage": "eval", "toy_shape": "cube", "iou": 0.5, "global_step": len(losses)})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if video:
        frames = [np.full((16, 16, 3), 40 * k, dtype=np.uint8) for k in range(4)]
        write_video(d / "video" / "turntable.mp4", frames, fps=4)
    return d


@pytest.fixture
def runs(tmp_path):
    base = {"experiment_name": "default", "seed": 0, "stage": {"coarse": {"steps": 3, "lr": 0.01}}, "output_dir": "a"}
    other = {**base, "seed": 1, "stage": {"coarse": {"steps": 3, "lr": 0.02}}, "output_dir": "b", "extra": [1, 2]}
    a = _run(
        tmp_path,
        "a",
        base,
        {"clip_score": 0.31, "reprojection_error_px": 0.4, "faces": 100, "toy_shape.toy_shape": "cube"},
        losses=[(1, 3.0), (2, 2.0), (3, 1.0)],
    )
    b = _run(
        tmp_path,
        "b",
        other,
        {"clip_score": 0.25, "reprojection_error_px": 0.2, "faces": 300, "toy_shape.toy_shape": "cube"},
        losses=[(1, 4.0), (2, 1.5), (3, 0.5)],
        video=False,
    )
    c = _run(tmp_path, "c", base)  # not evaluated
    return a, b, c


def test_best_per_row_follows_the_direction():
    assert best_runs([0.3, 0.5, None], "higher") == {1}
    assert best_runs([0.3, 0.5, 0.3], "lower") == {0, 2}
    assert best_runs([0.3, 0.5], None) == set()
    assert best_runs([1, 1], "lower") == set()  # all equal: nothing to mark
    assert best_runs([0.3, float("nan"), "x"], "higher") == set()  # one number


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}


def test_compare_page(runs, tmp_path, capsys):
    out = tmp_path / "page" / "compare.html"
    out.parent.mkdir()
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    page = out.read_text()
    # self-contained: nothing fetched from elsewhere, the turntable inline (and its first frame as poster)
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert page.count('src="data:video/mp4;base64,') == 2 and 'poster="data:image/png;base64,' in page
    assert "no video/turntable.mp4" in page
    # the metrics table: best marked per row by its direction, unmarked rows and text untouched
    table = page.split('id="metrics-table"')[1].split("</table>")[0]
    rows = dict(re.findall(r'<tr data-key="([^"]+)">(.*?)</tr>', table))
    best = {k: [i for i, cell in enumerate(re.findall(r"<td[^>]*>", v)[1:]) if "best" in cell] for k, v in rows.items()}
    assert best == {"clip_score": [0], "reprojection_error_px": [1], "faces": [], "toy_shape.toy_shape": []}
    assert "not evaluated" in page and "C: default/c" in page
    # one overlaid chart per loss key, one line per run that logged it
    charts = dict(re.findall(r'<figure data-key="(loss[^"]*)">(.*?)</figure>', page))
    assert sorted(charts) == ["loss", "loss_sds"]
    assert all(chart.count("<polyline") == 2 for chart in charts.values())
    # the config keys that differ (output_dir is ignored); a key one run lacks differs
    config = page.split('id="config-table"')[1].split("</table>")[0]
    assert sorted(re.findall(r'<tr data-key="([^"]+)">', config)) == ["extra", "seed", "stage.coarse.lr"]
    assert "compare: wrote" in capsys.readouterr().err


def test_config_differences_of_loaded_runs(runs):
    from threestudio_like.eval.compare import RunSummary

    loaded = [RunSummary.load(r, i) for i, r in enumerate(runs)]
    differ, same = config_differences(loaded)
    assert sorted(differ) == ["extra", "seed", "stage.coarse.lr"] and same == 2  # experiment_name, steps


def test_compare_of_a_missing_run_is_an_error_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()
    assert main(["compare"]) == 2
    capsys.readouterr()
    broken = _run(tmp_path, "broken", {"seed": 0}, video=False)
    (broken / "eval.json").write_text("{")
    assert main(["compare", str(broken), "--out", str(tmp_path / "x.html")]) == 2
    assert "eval.json" in capsys.readouterr().err
