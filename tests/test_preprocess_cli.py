"""``threestudio-like preprocess`` end to end with tiny models: the files and the json, the
framing against a known object, cut-outs without SAM, every bad input (one ``error:`` line,
exit 2, nothing written), ``python -m threestudio_like.preprocess``, and every command of
docs/preprocess.md.

Where a test needs SAM to find a known object (a random tiny SAM finds an arbitrary blob), a
stand-in ``SamSegmenter.segment`` returns the true mask; the tiny model is still loaded, and
the real SAM path is covered by the first test and by tests/test_preprocess.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from test_preprocess import disc, make_photo

from threestudio_like.cli import main
from threestudio_like.preprocess.masks import bounding_box, clean_mask
from threestudio_like.preprocess.segment import SamSegmenter, Segmentation

ROOT = Path(__file__).resolve().parent.parent
RED = (220, 30, 30)
RECT = (slice(15, 35), slice(25, 50))
"""Where make_photo puts its red rectangle (rows, columns): x 25…50, y 15…35."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny models and input files, outside the directories the runs write in."""
    from test_preprocess import _blind_sam
    from tiny_models import make_tiny_blip, make_tiny_depth, make_tiny_sam

    d = tmp_path_factory.mktemp("preprocess_cli")
    models = {
        "sam": make_tiny_sam(str(d / "sam")),
        "blip": make_tiny_blip(str(d / "blip")),
        "depth": make_tiny_depth(str(d / "depth")),
    }
    models["blind_sam"] = _blind_sam(models, d)
    inputs = d / "inputs"
    inputs.mkdir()
    Image.fromarray(make_photo()).save(inputs / "photo.png")
    rgba = np.dstack([make_photo(60, 80), np.where(disc(60, 80, 30, 25, 12), 255, 0).astype(np.uint8)])
    Image.fromarray(rgba).save(inputs / "cutout.png")
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (inputs / "notes.txt").write_text("not an image")
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(inputs / "int32.tif")
    (inputs / "junk.pth").write_bytes(b"not a checkpoint")
    (inputs / "a_file").write_text("x")
    return {**models, **{p.stem: str(p) for p in inputs.iterdir()}, "inputs": str(inputs)}


def tiny(setup, sam: str = "sam") -> list[str]:
    return ["--sam", setup[sam], "--blip", setup["blip"], "--depth", setup["depth"]]


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def true_object(monkeypatch, mask: np.ndarray) -> None:
    """SAM stand-in: ``segment`` returns ``mask`` whatever the prompts."""

    def segment(self, rgb, points=(), box=None):
        assert rgb.shape[:2] == mask.shape
        return Segmentation(mask=mask, predicted_iou=1.0, stability=1.0, prompt="points" if points else "automatic")

    monkeypatch.setattr(SamSegmenter, "segment", segment)


def test_end_to_end_with_tiny_models(setup, tmp_path, capsys):
    """Real tiny SAM with a point prompt: every file, consistent with each other and the json."""
    from transformers import SamModel, SamProcessor

    out = tmp_path / "out"
    # no edge refinement: the object's box below is compared with SAM's own mask's
    argv = ["preprocess", setup["photo"], "--point", "30,20", "--out", str(out), "--edge-radius", "0", *tiny(setup)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err and all(line.startswith("preprocess: ") for line in err.splitlines()), err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"photo_{s}" for s in ("rgba.png", "mask.png", "depth.npy", "depth.png", "caption.txt", "preprocess.json")
    )

    rgba, mask = read_png(out / "photo_rgba.png"), read_png(out / "photo_mask.png")
    depth, preview = np.load(out / "photo_depth.npy"), read_png(out / "photo_depth.png")
    record = json.loads((out / "photo_preprocess.json").read_text())
    assert rgba.shape == (256, 256, 4) and mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 255}
    assert depth.shape == (256, 256) and depth.dtype == np.float32 and preview.dtype == np.uint16
    assert np.array_equal(preview, np.round(depth * 65535).astype(np.uint16))
    obj = mask == 255
    assert depth[~obj].max() == 0 and depth[obj].min() == 0 and depth[obj].max() == 1 and depth[obj].std() > 0.05
    assert rgba[..., 3][obj].min() > 0  # feathering softens the edge, not the inside
    assert (out / "photo_caption.txt").read_text() == record["caption"] + "\n"

    # the object's box is that of transformers' own SAM mask for the prompt, averaged with the
    # mirrored photo's for the mirrored prompt (x 30 → 70 − 1 − 30), cleaned
    processor, model = SamProcessor.from_pretrained(setup["sam"]), SamModel.from_pretrained(setup["sam"])

    def sam_pass(image, x):
        inputs = processor(images=image, input_points=[[[x, 20]]], input_labels=[[[1]]], return_tensors="pt")
        with torch.no_grad():
            sam_out = model(**inputs)
        sizes = inputs["original_sizes"], inputs["reshaped_input_sizes"]
        return processor.post_process_masks(sam_out.pred_masks, *sizes, binarize=False)[0][0], sam_out.iou_scores[0, 0]

    (logits, iou), (m_logits, m_iou) = sam_pass(make_photo(), 30), sam_pass(make_photo()[:, ::-1].copy(), 39)
    best = int((iou + m_iou).argmax())
    reference = clean_mask(((logits[best] + m_logits[best].flip(-1)) > 0).numpy())
    assert reference.any(), "the tiny SAM finds nothing at this prompt: choose another point"
    assert record["object_box"] == list(bounding_box(reference))
    x0, y0, x1, y1 = record["crop_box"]
    assert (
        x1 - x0
        == pytest.approx(y1 - y0)
        == pytest.approx(max(np.subtract(record["object_box"][2:], record["object_box"][:2])) / 0.8)
    )
    assert record["photo"] == str(Path(setup["photo"]).resolve()) and record["photo_size"] == [70, 50]
    assert record["mask_source"] == "sam" and record["prompts"] == {
        "mode": "points",
        "points": [[30.0, 20.0]],
        "box": None,
    }
    assert (record["size"], record["fill"], record["elevation"]) == (256, 0.8, None)
    assert "reference.elevation_deg" in record["elevation_note"]
    assert {k: v["model"] for k, v in record["models"].items()} == {
        "sam": setup["sam"],
        "blip": setup["blip"],
        "depth": setup["depth"],
    }
    assert record["files"]["rgba"] == "photo_rgba.png" and record["depth"]["kind"] == "disparity"


@pytest.mark.parametrize("fill, size", [(0.8, 256), (0.5, 96)])
def test_the_object_is_recentred_to_fill_the_frame(setup, tmp_path, monkeypatch, fill, size):
    """The red rectangle (25×20 px, centre (37.5, 25)) → centred, its width fill × size, red inside."""
    truth = np.zeros((50, 70), bool)
    truth[RECT] = True
    true_object(monkeypatch, truth)
    args = ["preprocess", setup["photo"], "--out", str(tmp_path), "--fill", str(fill), "--size", str(size)]
    assert main([*args, *tiny(setup)]) == 0
    rgba = read_png(tmp_path / "photo_rgba.png")
    mask = read_png(tmp_path / "photo_mask.png") == 255
    x0, y0, x1, y1 = bounding_box(mask)
    assert abs((x0 + x1) / 2 - size / 2) <= 1 and abs((y0 + y1) / 2 - size / 2) <= 1
    assert abs((x1 - x0) - fill * size) <= 2 and abs((y1 - y0) - fill * size * 20 / 25) <= 2
    scale = fill * size / 25  # output pixels per photo pixel
    inset = int(np.ceil(3 * scale)) + 1  # Lanczos rings for 3 photo pixels
    core = rgba[y0 + inset : y1 - inset, x0 + inset : x1 - inset]
    assert np.abs(core[..., :3].astype(int) - RED).max() <= 3 and core[..., 3].min() >= 250
    near = ndimage.binary_dilation(mask, iterations=int(np.ceil(scale)) + 4)  # the soft edge: a photo pixel + feather
    assert rgba[..., 3][~near].max() == 0
    record = json.loads((tmp_path / "photo_preprocess.json").read_text())
    assert record["object_box"] == [25, 15, 50, 35] and record["prompts"]["mode"] == "automatic"


def test_a_cutout_needs_no_sam(setup, tmp_path):
    """A photo whose alpha cuts out a disc: no SAM (a missing --sam is no error), the disc framed."""
    args = ["preprocess", setup["cutout"], "--out", str(tmp_path), "--no-caption", "--no-depth", "--size", "64"]
    assert main([*args, "--sam", str(tmp_path / "no-such-sam")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cutout_mask.png",
        "cutout_preprocess.json",
        "cutout_rgba.png",
    ]
    record = json.loads((tmp_path / "cutout_preprocess.json").read_text())
    assert record["mask_source"] == "alpha" and record["models"] == {} and record["prompts"] is None
    assert record["caption"] is None and record["depth"] is None
    assert record["object_box"] == list(bounding_box(disc(60, 80, 30, 25, 12)))
    mask = read_png(tmp_path / "cutout_mask.png") == 255
    x0, y0, x1, y1 = bounding_box(mask)
    assert abs((x0 + x1) / 2 - 32) <= 1 and abs((x1 - x0) - 0.8 * 64) <= 2
    assert main([*args, "--segment", "--sam", str(tmp_path / "no-such-sam")]) == 2  # asked for SAM: it must exist


def test_an_elevation_estimator_plugs_in(setup, tmp_path, monkeypatch):
    """The pipeline calls ``estimate_elevation`` with the framed RGBA and records its answer."""
    from threestudio_like.preprocess.pipeline import PhotoPreprocessor

    truth = np.zeros((50, 70), bool)
    truth[RECT] = True
    true_object(monkeypatch, truth)
    seen = []
    cfg = {"size": 64, "caption": False, "depth": False, "segmenter": {"model": setup["sam"], "device": "cpu"}}
    result = PhotoPreprocessor(cfg, log=lambda m: None, estimate_elevation=lambda rgba: seen.append(rgba) or 12.5).run(
        setup["photo"], tmp_path
    )
    assert len(seen) == 1 and seen[0].shape == (64, 64, 4) and seen[0].min() >= 0 and seen[0].max() <= 1
    record = json.loads(result.files["record"].read_text())
    assert record["elevation"] == 12.5 and record["elevation_note"] == "estimated"


def test_python_dash_m_runs_the_same_command(setup, tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "threestudio_like.preprocess",
            str(tmp_path / "missing.jpg"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode == 2 and p.stderr.strip() == f"error: photo not found: {tmp_path / 'missing.jpg'}"
    assert list(tmp_path.iterdir()) == []


def test_help_names_every_flag(capsys):
    from threestudio_like.preprocess.cli import main as preprocess_main

    assert preprocess_main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--point",
        "--box",
        "--out",
        "--sam",
        "--blip",
        "--depth",
        "--no-caption",
        "--no-depth",
        "--fill",
        "--size",
        "--segment",
        "--device",
        "facebook/sam-vit-huge",
        "Salesforce/blip-image-captioning-large",
        "Intel/dpt-hybrid-midas",
    ):
        assert flag in out, flag


# (arguments after `preprocess`, start of the message after "error: "); {name} = a setup path
BAD_INPUTS = {
    "no photo": ([], "preprocess: the following arguments are required: PHOTO"),
    "missing photo": (["{inputs}/nope.jpg"], "photo not found: {inputs}/nope.jpg"),
    "a directory": (["{inputs}"], "photo {inputs} is not a file"),
    "corrupt photo": (["{corrupt}"], "cannot read photo {corrupt}"),
    "not an image": (["{notes}"], "cannot read photo {notes}"),
    "32-bit integer photo": (["{int32}"], "photo {int32} is a 32-bit integer image"),
    "point outside": (["{photo}", "--point", "70,10"], "--point 70,10 is outside the photo (the photo is 70×50"),
    "negative point": (["{photo}", "--point=-1,10"], "--point -1,10 is outside the photo"),
    "point not x,y": (["{photo}", "--point", "12"], "preprocess: argument --point: takes X,Y"),
    "box outside": (["{photo}", "--box", "10,10,80,40"], "--box 10,10,80,40 is outside the photo"),
    "empty box": (["{photo}", "--box", "30,10,20,40"], "--box 30,10,20,40 is empty"),
    "nothing found (automatic)": (["{photo}", "@blind"], "segmentation found no object"),
    "nothing found (point)": (["{photo}", "--point", "30,20", "@blind"], "segmentation found nothing in {photo}"),
    "missing SAM directory": (["{photo}", "--sam", "{inputs}/nowhere"], "--sam: pretrained model directory"),
    "missing SAM checkpoint": (
        ["{photo}", "--sam", "{inputs}/sam_vit_b_01ec64.pth"],
        "--sam: SAM checkpoint not found",
    ),
    "corrupt SAM checkpoint": (["{photo}", "--sam", "{junk}"], "--sam: cannot read {junk} as a segment-anything"),
    "model of the wrong kind": (["{photo}", "--depth", "{blip}"], "--depth '{blip}' holds a 'blip' model"),
    "hub model not in the cache": (
        ["{photo}", "--blip", "nobody/no-such-blip"],
        "--blip: pretrained model 'nobody/no-such-blip'",
    ),
    "fill out of range": (["{photo}", "--fill", "1.5"], "fill must be > 0 and <= 1, got 1.5"),
    "size too small": (["{photo}", "--size", "8"], "size must be >= 16, got 8"),
    "unknown device": (["{photo}", "--device", "tpu9"], "--sam: cannot parse device 'tpu9'"),
    "unknown flag": (["{photo}", "--frobnicate"], "preprocess: unrecognized arguments: --frobnicate"),
    "output directory under a file": (["{photo}", "--out", "{a_file}/out"], "cannot create the output directory"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_writes_nothing(name, setup, tmp_path, monkeypatch, capsys):
    words, message = BAD_INPUTS[name]
    sam = "blind_sam" if "@blind" in words else "sam"
    words = [w.format(**setup) for w in words if w != "@blind"]
    out = [] if any(w.startswith("--out") for w in words) else ["--out", str(tmp_path / "out")]
    defaults = tiny(setup, sam)
    models = [w for flag, model in zip(defaults[::2], defaults[1::2]) if flag not in words for w in (flag, model)]
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in Path(setup["inputs"]).rglob("*")}
    code = main(["preprocess", *words, *out, *models])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("preprocess: ")]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    assert lines[0][len("error: ") :].startswith(message.format(**setup)), lines[0]
    assert list(tmp_path.iterdir()) == [], "a refused run wrote something"
    assert {p: p.stat().st_mtime_ns for p in Path(setup["inputs"]).rglob("*")} == before


def test_the_docs_table_lists_exactly_these_inputs():
    lines = (ROOT / "docs" / "preprocess.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| preprocess input | example | what you get |")
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    rows = [ln.split("|")[1].strip() for ln in lines[start + 2 : end]]
    assert rows == list(BAD_INPUTS)


# ---- the docs' commands ------------------------------------------------------------------
def test_every_documented_preprocess_command_runs(setup, tmp_path, monkeypatch):
    """docs/preprocess.md's `python -m threestudio_like.preprocess …` commands, with the tiny models
    in place of the real ones and a photo of the documented name (800×600, one object)."""
    from test_docs_commands import commands

    photo = np.full((600, 800, 3), 150, np.uint8)
    photo[150:450, 250:550] = RED
    truth = np.zeros((600, 800), bool)
    truth[150:450, 250:550] = True
    true_object(monkeypatch, truth)
    inputs = tmp_path / "docs"
    inputs.mkdir()
    Image.fromarray(photo).save(inputs / "chair.jpg")
    Image.fromarray(np.dstack([photo, np.where(truth, 255, 0).astype(np.uint8)])).save(inputs / "cutout.png")
    monkeypatch.chdir(inputs)
    substitutes = {"--sam": setup["sam"], "--blip": setup["blip"], "--depth": setup["depth"]}
    ran = 0
    for cmd in commands(ROOT / "docs" / "preprocess.md"):
        for words in cmd.simple_commands():
            if words[:3] != ["python", "-m", "threestudio_like.preprocess"]:
                continue
            args = words[3:]
            for flag, model in substitutes.items():
                if flag in args:
                    args[args.index(flag) + 1] = model
                else:
                    args += [flag, model]
            assert main(["preprocess", *args]) == 0, f"{cmd.where}: {cmd.text}"
            stem = Path(args[0]).stem
            out = Path(args[args.index("--out") + 1]) if "--out" in args else Path(".")
            record = json.loads((out / f"{stem}_preprocess.json").read_text())
            assert (out / record["files"]["rgba"]).is_file(), cmd.where
            ran += 1
    assert ran >= 4
