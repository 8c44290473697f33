"""Train the toy text-to-image prior: ``python -m threestudio_like.toyworld.train_sd``.

Renders the toy dataset (:mod:`.dataset`, cached in ``--work-dir``), trains the pixel-space,
camera-conditioned Stable Diffusion-format model of :func:`.priors.build_toy_sd` (UNet and text
encoder jointly; captions ``"a red cube"`` or, with probability ``--view-prob``,
``"a red cube, front view"``; ``--drop-prob`` of them empty for classifier-free guidance) and
saves the EMA weights as a ``StableDiffusionPipeline`` (``vae: null``) into ``--out`` (default:
the package's ``assets/toy-sd``). ``--backdrop`` renders the dataset over the world-fixed
:class:`~threestudio_like.background.base.AzimuthBackdrop` instead of white; ``--init-from DIR``
continues from a saved toy SD pipeline instead of random weights (the shipped prior: trained over
white, then fine-tuned over the backdrop; README). :func:`sample` draws images with the diffusers
pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..prompt.views import VIEWS, view_names, view_prompt
from .dataset import SD_CAMERAS, ToyDatasetConfig, caption, make_dataset
from .priors import ASSETS, build_toy_sd, load_toy_sd, write_word_tokenizer
from .shapes import COLORS, SHAPES
from .training import add_unet_channels_flag, denoising_loss, noised, prepare, train, train_parser


def save_pipeline_atomically(pipe, out: str) -> None:
    """``pipe.save_pretrained`` into ``out.partial`` then swap it in for ``out``."""
    partial = out.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)


class CaptionTable:
    """Every caption of the dataset tokenized once: row ``k·(1+V) + v`` for class ``k`` (shape ×
    colour) and view ``v`` (0 = no suffix, 1.. = :data:`VIEWS`); the last row is ``""``."""

    def __init__(self, tokenizer) -> None:
        self.n_colors = len(COLORS)
        texts = []
        for s in range(len(SHAPES)):
            for c in range(self.n_colors):
                texts.append(caption(s, c, 0.0, 0.0, with_view=False))
                texts += [view_prompt(texts[-1], v) for v in VIEWS]
        texts.append("")
        self.texts = texts
        self.ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids

    def rows(self, shape: Tensor, color: Tensor, view: Tensor, with_view: Tensor, drop: Tensor) -> Tensor:
        k = shape * self.n_colors + color
        row = k * (1 + len(VIEWS)) + torch.where(with_view, view + 1, torch.zeros_like(view))
        return torch.where(drop, torch.full_like(row, len(self.texts) - 1), row)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = train_parser(__doc__.splitlines()[0], str(ASSETS / "toy-sd"), n_images=24000)
    parser.add_argument("--view-prob", type=float, default=0.5, help="captions with a view suffix")
    parser.add_argument("--drop-prob", type=float, default=0.1, help="empty captions (for CFG)")
    add_unet_channels_flag(parser)
    parser.add_argument(
        "--backdrop",
        action="store_true",
        help="render the dataset over the world-fixed AzimuthBackdrop (background=backdrop) instead of white",
    )
    parser.add_argument(
        "--init-from", default="", help="a saved toy SD pipeline to continue from (default: random weights)"
    )
    args = parser.parse_args(argv)
    cfg, data = prepare(
        args,
        "sd-backdrop" if args.backdrop else "sd",
        lambda n, seed: make_dataset(
            ToyDatasetConfig(n_images=n, cameras=dict(SD_CAMERAS), backdrop=args.backdrop, seed=seed), progress=True
        ),
    )
    if args.init_from:
        parts = load_toy_sd(args.init_from)
    else:
        parts = build_toy_sd(
            write_word_tokenizer(os.path.join(args.work_dir, "tokenizer")), seed=cfg.seed, channels=args.unet_channels
        )
    tokenizer, scheduler = parts["tokenizer"], parts["scheduler"]
    table = CaptionTable(tokenizer)
    views = torch.tensor([VIEWS.index(v) for v in view_names(data["elevation"], data["azimuth"])])
    images, c2w, n = data["images"], data["c2w"].reshape(-1, 16), data["images"].shape[0]
    modules = nn.ModuleDict({"unet": parts["unet"], "text_encoder": parts["text_encoder"]})
    dev = torch.device(cfg.device)

    def loss_fn(gen: torch.Generator) -> Tensor:
        b = cfg.batch_size
        idx = torch.randint(0, n, (b,), generator=gen)
        t, noise, noisy = noised(images[idx].to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1.0, scheduler, gen)
        rows = table.rows(
            data["shape"][idx],
            data["color"][idx],
            views[idx],
            torch.rand(b, generator=gen) < args.view_prob,
            torch.rand(b, generator=gen) < args.drop_prob,
        )
        text = modules["text_encoder"](table.ids[rows].to(dev))[0]
        eps = modules["unet"](noisy, t, encoder_hidden_states=text, class_labels=c2w[idx].to(dev)).sample
        return denoising_loss(eps, noise, t, scheduler, cfg.snr_gamma)

    def export(ema: nn.ModuleDict) -> None:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=None,
            text_encoder=ema["text_encoder"],
            tokenizer=tokenizer,
            unet=ema["unet"],
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        save_pipeline_atomically(pipe, args.out)

    summary = train(modules, loss_fn, cfg, args.work_dir, export)
    summary.update(out=args.out, n_images=n)
    print(json.dumps(summary), flush=True)
    return summary


@torch.no_grad()
def sample(
    model_dir: str, prompts: Sequence[str], c2w: Tensor, steps: int = 50, guidance_scale: float = 5.0, seed: int = 0
) -> Tensor:
    """Images (B,H,W,3) in [0,1] drawn by diffusers' ``StableDiffusionPipeline`` from the toy prior
    at ``model_dir`` for ``prompts`` (B) seen from cameras ``c2w`` (B,4,4). The pipeline does not
    pass class labels, so a forward pre-hook hands the UNet the cameras (repeated over the
    pipeline's [uncond; cond] batch); pixel space: ``output_type="latent"`` is the image in [−1,1].

    The sampler is the prior's own ``DDPMScheduler`` with x̂₀ clipped to [−1, 1]: its ancestral
    step is formed from the clipped x̂₀. (``DDIMScheduler`` clips x̂₀ but, as the pipeline calls it,
    steps along the unclipped ε; with guidance the two disagree and the samples come out as
    coloured noise.)"""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir,
        vae=None,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, clip_sample=True)
    pipe.set_progress_bar_config(disable=True)
    labels = c2w.reshape(-1, 16).float()

    def inject(module, args, kwargs):
        b = args[0].shape[0]
        kwargs["class_labels"] = labels.repeat(b // labels.shape[0], 1)
        return args, kwargs

    handle = pipe.unet.register_forward_pre_hook(inject, with_kwargs=True)
    try:
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        out = pipe(
            list(prompts),
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            output_type="latent",
            generator=torch.Generator().manual_seed(seed),
        ).images
    finally:
        handle.remove()
    return (out.permute(0, 2, 3, 1) * 0.5 + 0.5).clamp(0, 1)


if __name__ == "__main__":
    main()
