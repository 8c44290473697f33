"""Does the toy Zero123 use its pose? Prints JSON.

For each toy shape, ``--pairs`` pairs of unlit views (the toy Zero123's training shading and
cameras, ``toyworld/dataset.py`` ZERO123_CAMERAS: elevation −10…60°, any azimuth): the prior
draws the target from the reference at its relative pose. At t = 200…800 the target is noised
(the same noise for every variant) and the error of the prior's denoised estimate
x̂₀ = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t (conditional, no guidance) against the clean target is measured
with the pose conditioning

* ``matched``: the true relative pose;
* ``shuffled``: the pose of another pair (rolled by half the pairs);
* ``turned``: the relative azimuth 45° off (the target is the same image);
* ``tilted``: the relative elevation 20° off (toward the middle of the camera range);

``pose_gain`` = 1 − matched/shuffled, ``azimuth_gain`` = 1 − matched/turned, ``elevation_gain`` =
1 − matched/tilted: 0 when that part of the pose is ignored. Turning a sphere, cylinder, cone or
torus about its axis changes nothing, so their azimuth gain is 0 for any prior; a cube's faces
and edges are 45° apart and a mug's handle moves, so a prior that draws them at the asked
azimuth has a positive gain there.

``--face-on`` turns every reference to within 8° of a face-on azimuth (a multiple of 90°), as
the toy reference images are seen: the target's turn from a face then says how a cube looks.
``--target-backdrop`` renders the targets over the toy SD's azimuth backdrop (the references stay
over white), as ``train_zero123 --target-backdrop`` trains them: the shipped prior's views.

Usage: ``python benchmarks/bench_toy_zero123_pose.py [--model DIR] [--pairs 16] [--face-on] [--target-backdrop]
[--threads 2]``.
"""

from __future__ import annotations

import argparse
import json

import torch
from camera_gain import TIMESTEPS, mean_over_shapes

from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.zero123_pipeline import Zero123Pipeline, relative_pose
from threestudio_like.toyworld.dataset import ZERO123_CAMERAS, render_toy, sd_background
from threestudio_like.toyworld.priors import ASSETS
from threestudio_like.toyworld.shapes import SHAPES

VARIANTS = ("matched", "shuffled", "turned", "tilted")


def views(shape: str, elevation: torch.Tensor, azimuth: torch.Tensor, backdrop: bool = False) -> torch.Tensor:
    """(B,3,32,32) unlit renders in [0,1] (64², 2× supersampled) at the toy Zero123's distance and
    FOV, over white or the azimuth backdrop."""
    n = elevation.shape[0]
    distance = torch.full((n,), ZERO123_CAMERAS["distance_range"][0])
    fovy = torch.full((n,), ZERO123_CAMERAS["fovy_range"][0])
    cameras = make_cameras(elevation, azimuth, distance, fovy, 64, 64)
    background = sd_background() if backdrop else None
    rgb, _ = render_toy(shape, "red", cameras, "albedo", supersample=2, background=background)
    return rgb.permute(0, 3, 1, 2)


@torch.no_grad()
def pose_errors(
    pipe: Zero123Pipeline, shape: str, pairs: int, generator: torch.Generator, face_on: bool, target_backdrop: bool
) -> dict:
    """``{"t<t>": {variant: x̂₀ error, "pose_gain", "azimuth_gain", "elevation_gain"}}`` on ``pairs``
    random pairs of views of ``shape`` (with ``face_on``, references at azimuths within 8° of a
    multiple of 90°: a cube seen face-on, as the toy reference images show it; with
    ``target_backdrop``, the targets over the azimuth backdrop)."""
    lo, hi = ZERO123_CAMERAS["elevation_range"]

    def cameras() -> tuple[torch.Tensor, torch.Tensor]:  # (elevation, azimuth), degrees
        elevation = torch.rand(pairs, generator=generator) * (hi - lo) + lo
        return elevation, torch.rand(pairs, generator=generator) * 360 - 180

    (e_ref, a_ref), (e_tgt, a_tgt) = cameras(), cameras()
    if face_on:  # the reference turned to its nearest face, give or take 8°
        a_ref = torch.round(a_ref / 90.0) * 90.0 + torch.rand(pairs, generator=generator) * 16 - 8
    reference, target = views(shape, e_ref, a_ref), views(shape, e_tgt, a_tgt, target_backdrop)
    x0 = pipe.encode_latents(target)
    embedding, ref_latent = pipe.encode_image_embedding(reference), pipe.encode_reference_latent(reference)
    distance = torch.full((pairs,), ZERO123_CAMERAS["distance_range"][0])
    tilt = torch.where(e_tgt > (lo + hi) / 2, -20.0, 20.0)

    def pose(elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:  # as train_zero123 pairs them
        return relative_pose(elevation, azimuth, distance, e_ref, a_ref, distance)

    matched = pose(e_tgt, a_tgt)
    poses = {
        "matched": matched,
        "shuffled": matched[torch.roll(torch.arange(pairs), pairs // 2)],
        "turned": pose(e_tgt, a_tgt + 45.0),
        "tilted": pose(e_tgt + tilt, a_tgt),
    }
    out = {}
    for t in TIMESTEPS:
        noise = torch.randn(x0.shape, generator=generator)
        alpha_bar = pipe.scheduler.alphas_cumprod[t]
        noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        errors = {}
        for name in VARIANTS:
            context = pipe.conditioning(embedding, poses[name])
            eps = pipe.predict_noise(noisy, torch.full((pairs,), t), context, ref_latent, 1.0)
            x0_hat = ((noisy - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()).clamp(-1, 1)
            errors[name] = ((x0_hat - x0) ** 2).mean().item()
        out[f"t{t}"] = {
            **{k: round(v, 5) for k, v in errors.items()},
            "pose_gain": round(1 - errors["matched"] / errors["shuffled"], 4),
            "azimuth_gain": round(1 - errors["matched"] / errors["turned"], 4),
            "elevation_gain": round(1 - errors["matched"] / errors["tilted"], 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ASSETS / "toy-zero123"))
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--face-on", action="store_true", help="references within 8° of a face-on azimuth (default: any azimuth)"
    )
    parser.add_argument(
        "--target-backdrop", action="store_true", help="targets over the azimuth backdrop (default: over white)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = Zero123Pipeline.from_pretrained(args.model)
    generator = torch.Generator().manual_seed(0)
    per_shape = {s: pose_errors(pipe, s, args.pairs, generator, args.face_on, args.target_backdrop) for s in SHAPES}

    print(
        json.dumps(
            {
                "benchmark": "toy_zero123_pose",
                "model": args.model,
                "pairs": args.pairs,
                "face_on": args.face_on,
                "target_backdrop": args.target_backdrop,
                "mean_pose_gain": mean_over_shapes(per_shape, "pose_gain"),
                "mean_elevation_gain": mean_over_shapes(per_shape, "elevation_gain"),
                "azimuth_gain": {s: {t: r[t]["azimuth_gain"] for t in r} for s, r in per_shape.items()},
                "shapes": per_shape,
            }
        )
    )


if __name__ == "__main__":
    main()
