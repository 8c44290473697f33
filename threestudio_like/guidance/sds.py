"""Score Distillation Sampling (DreamFusion) with a Stable Diffusion-format prior.

The step is :class:`~.distillation.DistillationGuidance`'s; this class supplies the prior:

* ``encode``: latents of the renders (VAE, ``rgb_as_latents`` or pixel space —
  :class:`~.pretrained.DiffusionPrior`);
* ``guided_noise``: ε̂ from one no-grad UNet call on [cond; uncond] (or [pos; uncond; negatives]
  with Perp-Neg), v/x₀ predictions converted to ε, then classifier-free guidance with
  ``guidance_scale`` (``cfg_form``: which prediction the scaled difference is added to); the
  baseline is the added noise ε, so grad = w(t)(ε̂ − ε).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from torch import Tensor

from ..core.config import Range, Schedule
from ..data.cameras import CameraBatch
from ..prompt.processor import PromptEmbeddings
from .diffusion import classifier_free_guidance, perp_neg_guidance
from .distillation import DistillationGuidance
from .pretrained import DiffusionPrior, load_diffusion_prior


class ScoreDistillationGuidance(DistillationGuidance):
    """``guidance(rgb (B,H,W,3) in [0,1], cameras, prompt) -> GuidanceOutput``.

    The frozen prior (``self.prior``, a :class:`DiffusionPrior`, not an ``nn.Module``) is a
    plain attribute: the guidance has no trainable state and checkpoints hold nothing of it.
    """

    name = "SDS"
    needs_prompt = True
    pretrained_kind = "stable-diffusion"

    @dataclass
    class Config(DistillationGuidance.Config):
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        """Diffusers pipeline directory or hub id (resolved from the local HF cache only)."""
        guidance_scale: Annotated[Any, Schedule(Range(ge=0))] = 100.0
        """Classifier-free guidance scale (DreamFusion uses 100); number or schedule."""
        cfg_form: Literal["uncond", "cond"] = "uncond"
        """ε̂ = ε_u + s(ε_c − ε_u) (``uncond``: the papers', diffusers') or ε_c + s(ε_c − ε_u)
        (``cond``: threestudio's SDS, equal to ``uncond`` at s + 1); Perp-Neg keeps ``uncond``."""
        rgb_as_latents: bool = False
        """The render's channels are latents (Latent-NeRF): resized to the UNet size, no VAE."""
        use_perp_neg: bool = False
        """Perp-Neg against multi-face results (also on when the prompt processor enables it)."""
        enable_memory_efficient_attention: bool = False
        """xformers attention when installed on CUDA (torch SDPA, already memory-efficient, otherwise)."""
        enable_channels_last: bool = False
        """UNet weights in channels-last memory format (faster convolutions on recent GPUs)."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        super().__init__(cfg, where)
        self.prior: DiffusionPrior = load_diffusion_prior(
            self.cfg.pretrained_model_name_or_path, self.cfg.half_precision
        )

    @property
    def scheduler(self) -> Any:
        return self.prior.scheduler

    def place(self, device: torch.device | str) -> ScoreDistillationGuidance:
        self.prior.to(device)
        if self.cfg.enable_channels_last:
            self.prior.enable_channels_last()
        if self.cfg.enable_memory_efficient_attention:
            self.prior.enable_memory_efficient_attention()
        super().place(device)
        return self

    def encode(self, rgb: Tensor) -> Tensor:
        return self.prior.encode(rgb, self.cfg.rgb_as_latents)

    def decode(self, latents: Tensor) -> Tensor:
        return self.prior.decode(latents, self.cfg.rgb_as_latents)

    def guided_noise(self, noisy: Tensor, t: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch) -> Tensor:
        """ε̂ (B,C,h,w) fp32 at ``noisy`` z_t: one batched UNet call, then CFG or Perp-Neg.

        UNet rows: [cond (B); uncond (B)] or [pos (B); uncond (B); negatives (B·K, view-major)].
        """
        prior, b = self.prior, noisy.shape[0]
        scale = self.guidance_scale()
        perp_neg = self.cfg.use_perp_neg or prompt.use_perp_neg
        if perp_neg:
            cond, uncond, neg, weights = prompt.get_perp_neg_embeddings(cameras.elevation, cameras.azimuth)
            text, k = torch.cat([cond, uncond, neg.flatten(0, 1)]), neg.shape[1]
        else:
            cond, uncond = prompt.get_text_embeddings(cameras.elevation, cameras.azimuth)
            text, k = torch.cat([cond, uncond]), 0
        views = torch.arange(b, device=noisy.device)
        rows = torch.cat([views, views, views.repeat_interleave(k)])
        labels = prior.class_labels(cameras.c2w)
        eps = prior.predict_epsilon(
            noisy[rows], t[rows], text.to(noisy.device), None if labels is None else labels[rows]
        )
        if not perp_neg:
            return classifier_free_guidance(eps[:b], eps[b:], scale, self.cfg.cfg_form)
        eps_neg = eps[2 * b :].view(b, k, *eps.shape[1:])
        return perp_neg_guidance(eps[:b], eps[b : 2 * b], eps_neg, weights.to(eps), scale)
