"""Cost of one guidance step: FLOPs, CPU wall time, projected GPU time.

A step is what a training step pays for the guidance: encode the render (VAE where the prior
has one), the guided UNet call(s), and the backward from the loss to the render; for VSD also
the LoRA branch and its training step (forward + backward through the UNet); for ISM
(``ism_t500``: t fixed at 500, so s = 450 and 3 inversion strides) the 4 unconditional UNet calls
of its DDIM inversion (its cost grows with t: ⌈(t − 49)/200⌉ + 1 calls). Priors have
random weights built from configs (no downloads):

* ``toy``       — pixel-space prior of the embedded default (32² renders, UNet channels
                  (16, 32, 64), cross-attention at 8² + mid; see shared/notes/toy-prior-prototype.md);
* ``tiny``      — the test models of ``tests/tiny_models.py`` (latent, VAE ×2, 16² renders);
* ``sd21-base`` — Stable Diffusion 2.1-base: UNet sample 64, channels (320, 640, 1280, 1280),
                  cross-attention 1024, head dims (5, 10, 20, 20); VAE (128, 256, 512, 512) on
                  512² renders; 77 text tokens. FLOPs only unless ``--time-sd21``.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no
compute; the same count on every device). Projected GPU step time = FLOPs / (40% × peak bf16
dense: A100 312 TFLOP/s, H100 989 TFLOP/s). CPU wall time is the median of ``--repeats`` steps.

* ``zero123-xl`` — Zero123-XL: 8-channel SD1.x UNet at 32² latents (256² renders), CLIP
                  ViT-L/14 image encoder, SD VAE (Zero123 guidance only).

Each guidance is one :class:`GuidanceEntry` in :data:`GUIDANCES` whose ``setup(size, device,
batch)`` returns a zero-argument step function.

Usage: ``python benchmarks/bench_guidance.py [--repeats 5] [--batch 1] [--time-sd21]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.pretrained import DiffusionPrior
from threestudio_like.prompt.processor import PromptEmbeddings
from threestudio_like.prompt.views import VIEWS

PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0}
UTILISATION = 0.4

SD_UNET_BLOCKS = dict(
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)


@dataclass
class PriorSpec:
    """A prior's architecture: UNet and VAE kwargs, text tokens × width, render size."""

    unet: dict
    vae: dict | None
    text_tokens: int
    text_dim: int
    render: int


PRIORS = {
    "toy": PriorSpec(
        unet=dict(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=64,
            attention_head_dim=8,
            norm_num_groups=8,
        ),
        vae=None,
        text_tokens=16,
        text_dim=64,
        render=32,
    ),
    "tiny": PriorSpec(
        unet=dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=4,
        ),
        vae=dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 8),
            latent_channels=4,
            norm_num_groups=4,
            layers_per_block=1,
            sample_size=16,
        ),
        text_tokens=32,
        text_dim=32,
        render=16,
    ),
    "sd21-base": PriorSpec(
        unet=dict(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
            **SD_UNET_BLOCKS,
        ),
        vae=dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        ),
        text_tokens=77,
        text_dim=1024,
        render=64,
    ),
}


def build_prior(spec: PriorSpec, device: str) -> DiffusionPrior:
    """Random-weight prior on ``device`` (``meta`` allocates nothing)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**spec.unet)
        vae = AutoencoderKL(**spec.vae) if spec.vae else None
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    prior = DiffusionPrior(unet, scheduler, vae, f"random:{device}", half_precision=False)
    prior.device = torch.device(device)
    prior.alphas_cumprod = prior.alphas_cumprod.to(device)
    return prior


def random_prompt(spec: PriorSpec, device: str) -> PromptEmbeddings:
    e = lambda: torch.randn(1, spec.text_tokens, spec.text_dim, device=device)  # noqa: E731
    return PromptEmbeddings(prompt="bench", cond=e(), uncond=e(), views={v: e() for v in VIEWS})


def text_guidance_step(module: str, cls: str, cfg: dict) -> Callable[[str, str, int], Callable[[], None]]:
    """setup(size, device, batch) for SDS/VSD: the guidance on a random prior, one step =
    call + backward to the render."""

    def setup(size: str, device: str, batch: int) -> Callable[[], None]:
        import importlib

        spec = PRIORS[size]
        prior = build_prior(spec, device)
        klass = getattr(importlib.import_module(module), cls)
        # the module whose loader the class calls (ISM inherits SDS's __init__)
        loader = next(
            m
            for m in (importlib.import_module(c.__module__) for c in klass.__mro__)
            if hasattr(m, "load_diffusion_prior")
        )
        with mock.patch.object(loader, "load_diffusion_prior", lambda *a, **k: prior), torch.device(device):
            guidance = klass(dict(pretrained_model_name_or_path="random", **cfg))
        prompt = random_prompt(spec, device)
        n = batch
        cams = make_cameras(
            torch.full((n,), 15.0),
            torch.linspace(-180, 180, n + 1)[:n],
            torch.full((n,), 2.0),
            torch.full((n,), 40.0),
            8,
            8,
        )
        cams = replace(cams, c2w=cams.c2w.to(device))  # view names are read from CPU angles
        channels = 3 if spec.vae is not None or spec.unet["in_channels"] == 3 else spec.unet["in_channels"]

        def step() -> None:
            rgb = torch.rand(n, spec.render, spec.render, channels, device=device, requires_grad=True)
            out = guidance(rgb=rgb, prompt=prompt, cameras=cams)
            out.loss.backward()

        return step

    return setup


@dataclass
class GuidanceEntry:
    """One guidance in the benchmark: ``setup(size, device, batch)`` → step function."""

    name: str
    setup: Callable[[str, str, int], Callable[[], None]]
    sizes: tuple[str, ...] = ("toy", "tiny", "sd21-base")


ZERO123_XL = dict(  # zero123-xl: SD1.x UNet with 8 input channels at 32² latents (256² renders),
    # CLIP ViT-L/14 image encoder (768-d embedding), SD VAE
    unet=dict(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        **SD_UNET_BLOCKS,
    ),
    vae=dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        latent_channels=4,
        layers_per_block=2,
        sample_size=256,
    ),
    vision=dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
    ),
    render=256,
)


def zero123_step(size: str, device: str, batch: int) -> Callable[[], None]:
    """setup for Zero123: the guidance on a random pipeline (``tiny`` = the smoke model, pixel
    space 8²; ``zero123-xl`` = real shapes); the reference is encoded once outside the step."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from threestudio_like.guidance import zero123 as mod
    from threestudio_like.guidance.zero123_pipeline import CCProjection, Zero123Pipeline

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_models import make_tiny_zero123_components

    torch.manual_seed(0)
    with torch.device(device):
        if size == "tiny":
            parts, render = make_tiny_zero123_components(pixel_space=True), 8
        else:
            x = ZERO123_XL
            parts = dict(
                unet=UNet2DConditionModel(**x["unet"]),
                vae=AutoencoderKL(**x["vae"]),
                image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**x["vision"])),
                scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
                cc_projection=CCProjection(embedding_dim=768, additional_embeddings=4),
            )
            render = x["render"]
    pipe = Zero123Pipeline(**parts)
    with mock.patch.object(mod.Zero123Pipeline, "from_pretrained", lambda *a, **k: pipe):
        guidance = mod.Zero123Guidance({"pretrained_model_name_or_path": "random", "half_precision": False})
    guidance.pipe.to(torch.device(device), torch.float32)
    guidance.set_reference(torch.rand(1, render, render, 3, device=device), 0.0, 0.0, 3.2)
    cams = make_cameras(
        torch.full((batch,), 15.0),
        torch.linspace(-180, 180, batch + 1)[:batch],
        torch.full((batch,), 3.2),
        torch.full((batch,), 20.0),
        8,
        8,
    )

    def step() -> None:
        rgb = torch.rand(batch, render, render, 3, device=device, requires_grad=True)
        guidance(rgb=rgb, cameras=cams).loss.backward()

    return step


GUIDANCES: list[GuidanceEntry] = [
    GuidanceEntry(
        "sds",
        text_guidance_step("threestudio_like.guidance.sds", "ScoreDistillationGuidance", dict(guidance_scale=100.0)),
    ),
    GuidanceEntry(
        "vsd",
        text_guidance_step("threestudio_like.guidance.vsd", "VariationalScoreDistillation", dict(guidance_scale=7.5)),
    ),
    GuidanceEntry(
        "ism_t500",
        text_guidance_step(
            "threestudio_like.guidance.ism",
            "IntervalScoreGuidance",
            dict(guidance_scale=7.5, min_step_percent=0.5, max_step_percent=0.5),
        ),
    ),
    GuidanceEntry("zero123", zero123_step, sizes=("tiny", "zero123-xl")),
]


def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def time_step(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="views per step")
    parser.add_argument(
        "--time-sd21", action="store_true", help="also time one real-size step (sd21-base, zero123-xl) on CPU (slow)"
    )
    args = parser.parse_args()
    result: dict = {
        "threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg()[0],
        "batch": args.batch,
        "utilisation_assumed": UTILISATION,
        "peak_tflops_bf16": PEAK_TFLOPS,
        "guidances": {},
    }
    for entry in GUIDANCES:
        rows = {}
        for size in entry.sizes:
            flops = count_flops(entry.setup(size, "meta", args.batch))
            row = {"gflops_per_step": round(flops / 1e9, 4)}
            row.update(
                {
                    f"projected_ms_{gpu}": round(1e3 * flops / (UTILISATION * peak * 1e12), 3)
                    for gpu, peak in PEAK_TFLOPS.items()
                }
            )
            real_size = size in ("sd21-base", "zero123-xl")
            if not real_size or args.time_sd21:
                seconds = time_step(entry.setup(size, "cpu", args.batch), 1 if real_size else args.repeats)
                row["cpu_ms_per_step"] = round(1e3 * seconds, 2)
                row["cpu_gflop_per_s"] = round(flops / seconds / 1e9, 2)
            rows[size] = row
        result["guidances"][entry.name] = rows
    for size in ("toy", "sd21-base"):
        sds, vsd = result["guidances"]["sds"][size], result["guidances"]["vsd"][size]
        result[f"vsd_over_sds_flops_{size}"] = round(vsd["gflops_per_step"] / sds["gflops_per_step"], 3)
        ism = result["guidances"]["ism_t500"][size]
        result[f"ism_t500_over_sds_flops_{size}"] = round(ism["gflops_per_step"] / sds["gflops_per_step"], 3)
    result["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
