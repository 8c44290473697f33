"""Which 3-D shape does the toy SD prior prefer for a prompt? (``bench_toy_energy.py``, tests/test_toyworld_assets.py.)

Score distillation moves a shape's renders x along −w(t)(ε̂(x_t) − ε): it descends, view by view,
the denoising error of the prior on noised renders. :func:`shape_energies` measures that error for
candidate meshes — the same cameras (the default experiment's ranges), the same noise and the same
timesteps for every candidate — as

    E = mean over views, t of (1 − ᾱ_t)·‖ε̂(√ᾱ_t x + √(1−ᾱ_t) ε, t) − ε‖²   (SDS's weighting),

with ε̂ the prior's guided prediction as the default experiment forms it (CFG scale, x̂₀ clamp), and
``conditional``: the same with the text-conditioned prediction alone. A shape with a lower E is one
the prior prefers; when a run ends on a shape with a higher E than the true one, the optimisation,
not the prior, stopped short.
"""

from __future__ import annotations

from typing import Optional

import torch

from threestudio_like.data.cameras import make_cameras
from threestudio_like.geometry.base import Mesh
from threestudio_like.guidance.diffusion import clamp_denoised
from threestudio_like.toyworld.dataset import SD_CAMERAS, render_toy, sd_background

TIMESTEPS = tuple(range(50, 1000, 100))


@torch.no_grad()
def shape_energies(
    prior,
    tokenizer,
    text_encoder,
    prompts: list[str],
    meshes: dict[str, Mesh],
    color: str = "red",
    views: int = 48,
    guidance_scale: float = 5.0,
    denoised_clip: Optional[float] = 1.0,
    timesteps: tuple[int, ...] = TIMESTEPS,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{prompt: {mesh name: {"guided": E, "conditional": E}}}``: each mesh rendered once in
    ``color`` with the toy material from ``views`` random cameras, noised once per timestep, and
    denoised under every prompt (one UNet call per mesh and timestep; see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = SD_CAMERAS["elevation_range"]
    elevation = torch.rand(views, generator=g) * (hi - lo) + lo
    azimuth = torch.rand(views, generator=g) * 360.0 - 180.0
    cams = make_cameras(elevation, azimuth, torch.full((views,), 2.0), torch.full((views,), 42.5), 64, 64)
    k = len(prompts) + 1  # the prompts, then the empty (unconditional) prompt
    labels = prior.class_labels(cams.c2w)
    labels = labels.repeat(k, 1) if labels is not None else None
    ids = tokenizer(
        [p for p in [*prompts, ""] for _ in range(views)],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    text = text_encoder(ids)[0]
    noise = {t: torch.randn(views, 3, 32, 32, generator=g) for t in timesteps}
    sums = torch.zeros(len(meshes), len(prompts), 2, dtype=torch.float64)  # guided, conditional
    for m, mesh in enumerate(meshes.values()):
        rgb, _ = render_toy(
            "cube",
            color,
            cams,
            "diffuse",
            supersample=2,
            mesh=mesh,  # the mesh given, in ``color``
            background=sd_background(),
        )
        x0 = rgb.permute(0, 3, 1, 2) * 2.0 - 1.0
        for t in timesteps:
            a = prior.scheduler.alphas_cumprod[t]
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise[t]
            eps = prior.predict_epsilon(noisy.repeat(k, 1, 1, 1), torch.full((k * views,), t), text, labels)
            eps = eps.view(k, views, *eps.shape[1:])
            eps_u = eps[-1]
            for i in range(len(prompts)):
                guided = clamp_denoised(
                    eps_u + guidance_scale * (eps[i] - eps_u), noisy, a.expand(views), denoised_clip
                )
                sums[m, i, 0] += float((1 - a) * ((guided - noise[t]) ** 2).mean())
                sums[m, i, 1] += float((1 - a) * ((eps[i] - noise[t]) ** 2).mean())
    sums /= len(timesteps)
    return {
        p: {
            name: {"guided": float(sums[m, i, 0]), "conditional": float(sums[m, i, 1])} for m, name in enumerate(meshes)
        }
        for i, p in enumerate(prompts)
    }
