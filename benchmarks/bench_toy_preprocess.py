"""The toy preprocessing models on held-out toy photos. Prints JSON.

For ``--photos`` toy photos (``threestudio_like.toyworld.photos``) of a seed the models were not
trained on (they are trained on seed 0), through the code ``threestudio-like preprocess`` runs:

- **mask IoU, point prompt**: SAM with the photo's interior point, the mask cleaned as
  ``preprocess`` cleans it (largest component, holes filled), against the true mask, at the
  photo's resolution (``_uncleaned``: SAM's mask as it comes; the cleanup fills a torus's hole);
- **mask IoU, automatic**: the same without a prompt (``preprocess``'s automatic mode);
- **caption**: ``preprocess`` run on the photo (PNG) with the point: whether its caption names
  the true shape and colour (and whether it is exactly ``"a <colour> <shape>"``);
- **depth**: the Pearson correlation of that run's disparity (``<name>_depth.npy``) with the true
  disparity (1 / the renderer's depth) brought into the same frame (the record's crop box), over
  the pixels of both the output mask and the true mask's interior;
- **elevation** (with ``--elevation``): the absolute error of the elevation estimated as
  ``experiment=toy_anything3d`` estimates it (automatic segmentation, the object framed with
  that experiment's ``prepare.preprocess.fill``,
  :class:`~threestudio_like.preprocess.elevation.ElevationEstimator` with that experiment's
  ``prepare.elevation`` settings, its reference camera's distance and FOV included; ``--zero123
  DIR`` another prior, ``--estimator`` other settings), against the photo's true elevation; and
  how far the estimates follow the truth: their least-squares slope on it (1: unbiased, 0: a
  constant) and their Pearson correlation with it.

Targets (issue 26): IoU ≥ 0.9 (point) and ≥ 0.85 (automatic), captions ≥ 90 %, depth r ≥ 0.9,
elevation within 10°.
``--single-pass`` turns off the test-time mirror averaging of SAM's prompted masks and of the
depth (``flip_average``, on by default) to measure what it adds.

Usage: ``python benchmarks/bench_toy_preprocess.py [--photos 100] [--first 0] [--seed 1] [--sam DIR]
[--blip DIR] [--depth DIR] [--elevation] [--zero123 DIR] [--estimator KEY=VALUE ...] [--single-pass]
[--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_elevation import add_estimator_flag, estimator_settings
from omegaconf import OmegaConf
from PIL import Image

from threestudio_like.cli import compose_config
from threestudio_like.preprocess.elevation import ElevationEstimator
from threestudio_like.preprocess.framing import Framing
from threestudio_like.preprocess.masks import clean_mask
from threestudio_like.preprocess.pipeline import PhotoPreprocessor
from threestudio_like.preprocess.segment import SamSegmenter
from threestudio_like.toyworld.photos import ToyPhoto, ToyPhotoMaker
from threestudio_like.toyworld.priors import ASSETS
from threestudio_like.toyworld.shapes import SHAPES


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / max(1e-12, np.sqrt((x * x).sum() * (y * y).sum())))


def depth_correlation(photo: ToyPhoto, disparity: np.ndarray, mask: np.ndarray, record: dict) -> float:
    """r of the output ``disparity`` (S,S) with the truth framed by the record's crop box, over the
    output ``mask`` and the framed true mask's interior."""
    framing = Framing(tuple(record["crop_box"]), record["size"])
    coverage = framing.apply(photo.mask.astype(np.float32), "bilinear")
    truth = framing.apply(np.where(photo.mask, 1.0 / np.maximum(photo.depth, 1e-6), 0.0), "bilinear")
    where = mask & (coverage > 0.999)
    return pearson(disparity[where], truth[where] / coverage[where])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument(
        "--first", type=int, default=0, help="index of the first photo (to split a run across processes)"
    )
    parser.add_argument("--seed", type=int, default=1, help="photo i is drawn from seed·1,000,000 + i (training: 0)")
    parser.add_argument("--sam", default=str(ASSETS / "toy-sam"))
    parser.add_argument("--blip", default=str(ASSETS / "toy-blip"))
    parser.add_argument("--depth", default=str(ASSETS / "toy-depth"))
    parser.add_argument(
        "--elevation", action="store_true", help="also estimate the elevation as experiment=toy_anything3d does"
    )
    parser.add_argument("--zero123", help="estimate the elevation with this toy Zero123 instead (implies --elevation)")
    add_estimator_flag(parser)
    parser.add_argument("--single-pass", action="store_true", help="no mirror averaging (SAM's prompts, depth)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    overrides = estimator_settings(args)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    maker = ToyPhotoMaker()
    flip = not args.single_pass
    segmenter = SamSegmenter({"model": args.sam, "device": "cpu", "flip_average": flip})
    preprocessor = PhotoPreprocessor(
        {
            "segmenter": {"model": args.sam, "device": "cpu", "flip_average": flip},
            "captioner": {"model": args.blip, "device": "cpu"},
            "depth_estimator": {"model": args.depth, "device": "cpu", "flip_average": flip},
        },
        log=lambda line: None,
    )
    elevation_preprocessor, estimator = None, {}
    if args.elevation or args.zero123:
        prior = [f"models.elevation={args.zero123}"] if args.zero123 else []
        prepare = compose_config(["experiment=toy_anything3d", "trainer.device=cpu", *prior]).prepare
        estimator = OmegaConf.to_container(prepare.elevation, resolve=True) | overrides
        elevation_preprocessor = PhotoPreprocessor(
            {
                "fill": prepare.preprocess.fill,
                "caption": False,
                "depth": False,
                "segmenter": {"model": args.sam, "device": "cpu", "flip_average": flip},
            },
            log=lambda line: None,
            estimate_elevation=ElevationEstimator(estimator),
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.first, args.first + args.photos):
            photo = maker.photo(args.seed * 1_000_000 + i)
            point = [(float(photo.point[0]), float(photo.point[1]))]
            point_raw, auto_raw = segmenter.segment(photo.rgb, point).mask, segmenter.segment(photo.rgb).mask
            path = Path(tmp) / f"photo{i}.png"
            Image.fromarray(photo.rgb).save(path)
            result = preprocessor.run(path, Path(tmp) / "out", point)
            words = result.record["caption"].split()
            out_mask = np.asarray(Image.open(result.files["mask"])) > 127
            disparity = np.load(result.files["depth"])
            elevation = {}
            if elevation_preprocessor is not None:
                estimate = elevation_preprocessor.run(path, Path(tmp) / "elevation").record["elevation"]
                elevation = {
                    "elevation": photo.elevation,
                    "estimate": estimate,
                    "elevation_error": abs(estimate - photo.elevation),
                }
            rows.append(
                {
                    "shape": photo.shape,
                    "iou_point": iou(clean_mask(point_raw), photo.mask),
                    "iou_auto": iou(clean_mask(auto_raw), photo.mask),
                    "iou_point_raw": iou(point_raw, photo.mask),
                    "iou_auto_raw": iou(auto_raw, photo.mask),
                    "caption": result.record["caption"],
                    "truth": photo.caption,
                    "shape_right": photo.shape in words,
                    "color_right": photo.color in words,
                    "exact": result.record["caption"] == photo.caption,
                    "depth_r": depth_correlation(photo, disparity, out_mask, result.record),
                    **elevation,
                }
            )

    def mean(key: str, subset: list[dict]) -> float:
        return round(float(np.mean([r[key] for r in subset])), 4)

    both = [dict(r, right=r["shape_right"] and r["color_right"]) for r in rows]
    elevation_summary = {}
    if elevation_preprocessor is not None:
        truths = np.array([r["elevation"] for r in rows])
        estimates = np.array([r["estimate"] for r in rows], dtype=float)
        elevation_summary = {
            "estimator": estimator,
            "elevation_mae_deg": mean("elevation_error", rows),
            "elevation_mae_mean_guess_deg": round(float(np.mean(np.abs(truths - truths.mean()))), 2),
            # how much of the truth's spread the estimates follow: slope 1 unbiased, 0 a constant guess
            "elevation_slope": round(float(np.polyfit(truths, estimates, 1)[0]), 3),
            "elevation_pearson": round(float(np.corrcoef(truths, estimates)[0, 1]), 3),
            "elevation_errors": [[r["shape"], round(r["elevation"], 1), r["estimate"]] for r in rows],
        }
    print(
        json.dumps(
            {
                "benchmark": "toy_preprocess",
                "photos": args.photos,
                "first": args.first,
                "seed": args.seed,
                "models": {"sam": args.sam, "blip": args.blip, "depth": args.depth},
                "flip_average": flip,
                "mask_iou_point": mean("iou_point", rows),
                "mask_iou_point_p10": round(float(np.percentile([r["iou_point"] for r in rows], 10)), 4),
                "mask_iou_auto": mean("iou_auto", rows),
                "mask_iou_auto_p10": round(float(np.percentile([r["iou_auto"] for r in rows], 10)), 4),
                "mask_iou_point_uncleaned": mean("iou_point_raw", rows),
                "mask_iou_auto_uncleaned": mean("iou_auto_raw", rows),
                "caption_right": mean("right", both),
                "caption_shape": mean("shape_right", rows),
                "caption_color": mean("color_right", rows),
                "caption_exact": mean("exact", rows),
                "depth_pearson": mean("depth_r", rows),
                "depth_pearson_p10": round(float(np.percentile([r["depth_r"] for r in rows], 10)), 4),
                "per_shape": {
                    s: {
                        k: mean(k, [r for r in both if r["shape"] == s])
                        for k in ("iou_point", "iou_auto", "right", "depth_r")
                    }
                    for s in SHAPES
                    if any(r["shape"] == s for r in rows)
                },
                **elevation_summary,
                "wrong_captions": [f"{r['caption']!r} for {r['truth']!r}" for r in rows if not r["exact"]],
                "seconds": round(time.time() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
