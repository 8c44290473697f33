"""Does the toy SD prior use its camera? Prints JSON.

For each toy shape, :func:`camera_gain.camera_errors` (``benchmarks/camera_gain.py``) on 16 random
views: the prior's x̂₀ error with the true cameras vs the cameras shuffled among the views and vs
the cameras turned 45° in azimuth, at t = 200…800; ``camera_gain`` = 1 − matched/shuffled (0: the
camera is ignored), ``azimuth_gain`` = 1 − matched/turned (0: the azimuth is ignored).

Usage: ``python benchmarks/bench_toy_prior.py [--model DIR] [--views 16] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json

import torch
from camera_gain import camera_errors, mean_over_shapes

from threestudio_like.guidance.pretrained import load_diffusion_prior, load_text_encoder
from threestudio_like.toyworld.priors import ASSETS
from threestudio_like.toyworld.shapes import SHAPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ASSETS / "toy-sd"))
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_diffusion_prior(args.model, half_precision=False)
    tokenizer, text_encoder = load_text_encoder(prior.model_dir)
    generator = torch.Generator().manual_seed(0)
    per_shape = {s: camera_errors(prior, tokenizer, text_encoder, s, args.views, generator) for s in SHAPES}

    print(
        json.dumps(
            {
                "benchmark": "toy_prior_camera",
                "model": args.model,
                "beta_schedule": prior.scheduler.config.beta_schedule,
                "mean_camera_gain": mean_over_shapes(per_shape, "camera_gain"),
                "mean_azimuth_gain": mean_over_shapes(per_shape, "azimuth_gain"),
                "shapes": per_shape,
            }
        )
    )


if __name__ == "__main__":
    main()
