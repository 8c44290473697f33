"""Elevation estimate of a toy render with the shipped toy Zero123 (``preprocess/elevation.py``). Prints JSON.

Toy renders (RGBA over transparent, the toy image-to-3D camera: distance 1.8, FOV 45°, azimuth 0
or, ``--random-azimuth``, a random one; ``--shading albedo``: unlit, ``diffuse``: lit from the
camera, as the toy Zero123's lit renders are; as rendered or, ``--fill F``, framed as
``preprocess`` frames a photo: the bounding box centred, spanning F of the side) of ``--shapes``
at ``--elevations``; for each, the estimate of
:class:`~threestudio_like.preprocess.elevation.ElevationEstimator` (its default views, samples and
steps; the toy camera) with

* ``toy_prior``: the views drawn by ``--model`` (default: the shipped ``assets/toy-zero123``);
* ``true_views``: the true renders (as rendered) at the same relative poses in place of the drawn
  views — the geometric step alone, what a prior that draws views exactly would give;

and the mean absolute error of each, with the error of always answering the middle of the
candidate range for reference. ``view_iou`` compares the drawn views' silhouettes (thresholded at
0.5) with the true ones (with a Stable Zero123, which draws them for each candidate, those drawn
for the candidate nearest the truth), and ``input_iou`` the input's own silhouette with them
(what copying the input would score): a prior whose views are no closer to the truth than its
input gives the geometry nothing to go on. The sphere is left out: its silhouette is a disc from
every elevation.

``--flops`` also counts the FLOPs of one estimate with Zero123-XL's shapes (random weights on the
meta device, ``benchmarks/bench_guidance.py``'s model) and projects its GPU time.

Usage: ``python benchmarks/bench_elevation.py [--shapes cube torus] [--elevations 0 30] [--shading diffuse]
[--fill 0.6] [--random-azimuth]
[--steps 30] [--samples 2] [--guidance-scale 3] [--estimator KEY=VALUE ...] [--flops]`` (the estimator's
settings default to its own).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.zero123_pipeline import Zero123Pipeline
from threestudio_like.preprocess.elevation import ElevationEstimator
from threestudio_like.preprocess.framing import frame_object
from threestudio_like.preprocess.masks import bounding_box
from threestudio_like.preprocess.visual_hull import object_silhouette
from threestudio_like.toyworld.dataset import render_toy
from threestudio_like.toyworld.priors import ASSETS
from threestudio_like.toyworld.reference_images import REFERENCE_CAMERA

SHAPES = {"cube": "red", "cylinder": "green", "cone": "yellow", "torus": "red", "mug": "blue"}
"""The shapes measured, each in one toy colour."""
SUPERSAMPLE = 4


def render(
    shape: str, elevation: torch.Tensor, azimuth: torch.Tensor, size: int, shading: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb over white (B,3,H,W), alpha (B,1,H,W)) of a toy shape from the toy reference camera's
    distance and FOV (the light at the camera)."""
    b = elevation.shape[0]
    c = REFERENCE_CAMERA
    cams = make_cameras(
        elevation.float(),
        azimuth.float(),
        torch.full((b,), c["distance"]),
        torch.full((b,), c["fovy_deg"]),
        size * SUPERSAMPLE,
        size * SUPERSAMPLE,
    )
    rgb, alpha = render_toy(shape, SHAPES[shape], cams, shading=shading, supersample=SUPERSAMPLE)
    return rgb.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2)


def rgba_input(shape: str, elevation: float, azimuth: float, size: int, shading: str, fill: float) -> np.ndarray:
    """(size,size,4) straight-alpha RGBA of the toy shape at (``elevation``, ``azimuth``), as a
    cut-out photo: as rendered, or (``fill`` > 0) framed as ``preprocess`` frames a photo."""
    rgb, alpha = render(shape, torch.tensor([elevation]), torch.tensor([azimuth]), size, shading)
    fg = ((rgb - (1 - alpha)) / alpha.clamp(min=1e-6)).clamp(0, 1) * (alpha > 0)
    rgba = torch.cat([fg, alpha], 1)[0].permute(1, 2, 0).numpy()
    if not fill:
        return rgba
    framing = frame_object(bounding_box(rgba[..., 3] >= 0.5), fill, size)
    framed = [framing.apply(rgba[..., :3], "lanczos"), framing.apply(rgba[..., 3:], "bilinear")]
    return np.clip(np.concatenate(framed, -1), 0.0, 1.0)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum().clamp(min=1))


def measure(
    estimator: ElevationEstimator,
    pipe: Zero123Pipeline,
    shape: str,
    elevation: float,
    azimuth: float,
    shading: str,
    fill: float,
) -> dict:
    size = pipe.image_size
    poses = torch.tensor(estimator.cfg.views, dtype=torch.float32)
    rgba = rgba_input(shape, elevation, azimuth, 2 * size, shading, fill)
    t0 = time.perf_counter()
    drawn: dict[float, torch.Tensor] = {}  # the views drawn for each reference elevation (one, but Stable Zero123)
    draw = estimator.draw_views

    def keep(*a: object) -> torch.Tensor:  # keep the views to score them: the last drawn for an elevation
        drawn[a[-1]] = draw(*a)  # (with align_input the input's own view is drawn first)
        return drawn[a[-1]]

    estimator.draw_views = keep
    toy = estimator.estimate(pipe, rgba)
    seconds = time.perf_counter() - t0
    true_rgb, true_alpha = render(shape, elevation + poses[:, 0], azimuth + poses[:, 1], size, shading)
    own_rgb, input_alpha = render(shape, torch.tensor([elevation]), torch.tensor([azimuth]), size, shading)
    own_pose = torch.zeros(1, 2)  # align_input draws the input's own view first
    estimator.draw_views = lambda pipe, image, p, e: (own_rgb if torch.equal(p, own_pose) else true_rgb)[None].to(
        estimator.device
    )
    truth = estimator.estimate(pipe, rgba)
    estimator.draw_views = draw
    views = drawn[min(drawn, key=lambda e: abs(e - elevation))].cpu()  # those drawn nearest the truth
    silhouettes = object_silhouette(views.flatten(0, 1)).view(*views.shape[:2], size, size).mean(0) > 0.5
    true_masks = true_alpha[:, 0] > 0.5
    input_mask = (input_alpha[:, 0] > 0.5).expand_as(true_masks)
    return {
        "shape": shape,
        "elevation": elevation,
        "azimuth": round(azimuth, 1),
        "toy_prior": toy.elevation_deg,
        "true_views": truth.elevation_deg,
        "view_iou": round(iou(silhouettes, true_masks), 3),
        "input_iou": round(iou(input_mask, true_masks), 3),
        "seconds": round(seconds, 1),
    }


def add_estimator_flag(parser: argparse.ArgumentParser) -> None:
    """``--estimator KEY=VALUE ...``: other :class:`ElevationEstimator` settings (see :func:`estimator_settings`)."""
    parser.add_argument(
        "--estimator",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="other ElevationEstimator settings, e.g. views=[[0,90],[10,0]] elevation_range=[-10,60] samples=1",
    )


def estimator_settings(args: argparse.Namespace) -> dict:
    """The ``--estimator`` settings as a dict (an OmegaConf dotlist: values are parsed as YAML)."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(args.estimator))


def xl_flops(estimator: ElevationEstimator) -> dict:
    """FLOPs of one estimate's view drawing with Zero123-XL's shapes, and its projected GPU time."""
    from unittest import mock

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_guidance import PEAK_TFLOPS, UTILISATION, ZERO123_XL, count_flops
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from threestudio_like.guidance.zero123_pipeline import CCProjection

    x = ZERO123_XL
    with torch.device("meta"):
        pipe = Zero123Pipeline(
            unet=UNet2DConditionModel(**x["unet"]),
            vae=AutoencoderKL(**x["vae"]),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**x["vision"])),
            scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
            cc_projection=CCProjection(embedding_dim=768, additional_embeddings=4),
        )
    image = torch.rand(1, 3, x["render"], x["render"], device="meta")
    poses = torch.tensor(estimator.cfg.views, dtype=torch.float32)
    estimator.device = torch.device("meta")
    # the scheduler's arithmetic on meta tensors is not what is counted: only the networks' FLOPs
    with mock.patch("diffusers.DDIMScheduler.step", lambda self, n, t, s, **k: mock.Mock(prev_sample=s)):
        flops = count_flops(lambda: estimator.draw_views(pipe, image, poses, 0.0))
    return {
        "zero123_xl_tflops": round(flops / 1e12, 1),
        **{f"projected_{gpu}_s": round(flops / (UTILISATION * peak * 1e12), 2) for gpu, peak in PEAK_TFLOPS.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ASSETS / "toy-zero123"))
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--elevations", nargs="+", type=float, default=[0.0, 15.0, 30.0, 45.0])
    parser.add_argument("--shading", default="albedo", choices=["albedo", "diffuse"], help="the inputs' shading")
    parser.add_argument(
        "--fill", type=float, default=0.0, help="frame the inputs as preprocess frames a photo (default: as rendered)"
    )
    parser.add_argument(
        "--random-azimuth", action="store_true", help="each input seen from a random azimuth (default: 0)"
    )
    parser.add_argument("--threads", type=int, default=2)
    defaults = ElevationEstimator.Config()
    parser.add_argument("--steps", type=int, default=defaults.steps, help="DDIM steps per drawn view")
    parser.add_argument("--samples", type=int, default=defaults.samples, help="views drawn per pose")
    parser.add_argument("--guidance-scale", type=float, default=defaults.guidance_scale)
    add_estimator_flag(parser)
    parser.add_argument("--flops", action="store_true", help="also count Zero123-XL's FLOPs for one estimate")
    args = parser.parse_args()
    overrides = estimator_settings(args)
    torch.set_num_threads(args.threads)
    c = REFERENCE_CAMERA
    estimator = ElevationEstimator(
        {
            "model": args.model,
            "distance": c["distance"],
            "fovy_deg": c["fovy_deg"],
            "device": "cpu",
            "steps": args.steps,
            "samples": args.samples,
            "guidance_scale": args.guidance_scale,
            **overrides,
        }
    )
    pipe = Zero123Pipeline.from_pretrained(estimator.model_dir, torch_dtype=estimator.dtype).to(estimator.device)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        for elevation in args.elevations:
            azimuth = float(rng.uniform(-180.0, 180.0)) if args.random_azimuth else 0.0
            rows.append(measure(estimator, pipe, shape, elevation, azimuth, args.shading, args.fill))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    middle = (estimator.candidates[0] + estimator.candidates[-1]) / 2

    def mae(key: str) -> float:
        return round(statistics.mean(abs(r[key] - r["elevation"]) for r in rows), 2)

    result = {
        "model": args.model,
        "shading": args.shading,
        "fill": args.fill,
        "random_azimuth": args.random_azimuth,
        "steps": estimator.cfg.steps,
        "samples": estimator.cfg.samples,
        "guidance_scale": estimator.cfg.guidance_scale,
        "estimator": overrides,
        "pose_embedding": estimator.pose_kind,
        "cases": len(rows),
        "mae_toy_prior_deg": mae("toy_prior"),
        "mae_true_views_deg": mae("true_views"),
        "mae_constant_guess_deg": round(statistics.mean(abs(middle - r["elevation"]) for r in rows), 2),
        "view_iou": round(statistics.mean(r["view_iou"] for r in rows), 3),
        "input_iou": round(statistics.mean(r["input_iou"] for r in rows), 3),
        "seconds_per_estimate": round(statistics.median(r["seconds"] for r in rows), 1),
        "threads": args.threads,
        "rows": rows,
    }
    if args.flops:
        result.update(xl_flops(estimator))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
