"""How much the toy SD prior uses its camera input (``bench_toy_prior.py``, tests/test_toyworld_assets.py).

:func:`camera_errors` renders random views of a toy shape (the default experiment's camera
ranges), noises them to timestep t with the prior's scheduler and measures the error of the
prior's denoised estimate x̂₀ = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t against the clean render, once with the
true cameras as ``class_labels``, once with the cameras shuffled among the views and once with
each camera turned 45° in azimuth (same elevation and distance; same noise, same text
"a red <shape>"). ``camera_gain`` = 1 − matched/shuffled: 0 when the camera is ignored;
``azimuth_gain`` = 1 − matched/turned: 0 when the azimuth is ignored — a cube's faces and edges
are 45° apart, so a prior that cannot tell its yaw from the camera has 0 here.
"""

from __future__ import annotations

import torch

from threestudio_like.data.cameras import make_cameras
from threestudio_like.toyworld.dataset import SD_CAMERAS, render_toy, sd_background

TIMESTEPS = (200, 400, 600, 800)


def mean_over_shapes(per_shape: dict, key: str) -> dict:
    """``{"t<t>": mean of key}`` over the shapes of ``{shape: {"t<t>": {key: value}}}`` results (this
    module's and ``bench_toy_zero123_pose.py``'s)."""
    return {f"t{t}": round(sum(r[f"t{t}"][key] for r in per_shape.values()) / len(per_shape), 4) for t in TIMESTEPS}


@torch.no_grad()
def camera_errors(prior, tokenizer, text_encoder, shape: str, views: int, generator: torch.Generator) -> dict:
    """``{"t<t>": {"matched", "shuffled", "turned", "camera_gain", "azimuth_gain"}}`` for ``prior`` (a
    :class:`~threestudio_like.guidance.pretrained.DiffusionPrior`) on ``views`` random views of ``shape``."""
    lo, hi = SD_CAMERAS["elevation_range"]
    elevation = torch.rand(views, generator=generator) * (hi - lo) + lo
    azimuth = torch.rand(views, generator=generator) * 360.0 - 180.0

    def cameras(azimuth_deg):  # 64² renders, 2× supersampled → the prior's 32²
        return make_cameras(elevation, azimuth_deg, torch.full((views,), 2.0), torch.full((views,), 42.5), 64, 64)

    cams = cameras(azimuth)
    rgb, _ = render_toy(shape, "red", cams, "diffuse", supersample=2, background=sd_background())
    x0 = rgb.permute(0, 3, 1, 2) * 2.0 - 1.0
    ids = tokenizer(
        [f"a red {shape}"] * views, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    text = text_encoder(ids)[0]
    labels = prior.class_labels(cams.c2w)
    shuffled = labels[torch.roll(torch.arange(views), views // 2)]
    turned = prior.class_labels(cameras(azimuth + 45.0).c2w)
    out = {}
    for t in TIMESTEPS:
        noise = torch.randn(x0.shape, generator=generator)
        alpha_bar = prior.scheduler.alphas_cumprod[t]
        noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        errors = []
        for cams_in in (labels, shuffled, turned):
            eps = prior.predict_epsilon(noisy, torch.full((views,), t), text, cams_in)  # any parameterization
            x0_hat = ((noisy - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()).clamp(-1, 1)
            errors.append(((x0_hat - x0) ** 2).mean().item())
        out[f"t{t}"] = {
            "matched": round(errors[0], 5),
            "shuffled": round(errors[1], 5),
            "turned": round(errors[2], 5),
            "camera_gain": round(1 - errors[0] / errors[1], 4),
            "azimuth_gain": round(1 - errors[0] / errors[2], 4),
        }
    return out
