"""Score Distillation Sampling (DreamFusion) with a Stable Diffusion-format prior.

Per call, for renders (B,H,W,3) in [0,1] seen from ``cameras``:

1. z = latents of the renders (VAE, ``rgb_as_latents`` or pixel space — :class:`DiffusionPrior`);
2. t ~ U[t_min, t_max], one per view (bounds may be schedules: anneal ``max_step_percent``);
   z_t = √ᾱ_t z + √(1−ᾱ_t) ε with the scheduler's ``add_noise``;
3. ε̂ from one no-grad UNet call on [cond; uncond] (or [pos; uncond; negatives] with Perp-Neg),
   v/x₀ predictions converted to ε, then classifier-free guidance with ``guidance_scale``;
4. (``denoised_clip``, pixel-space priors) ε̂ replaced by the ε whose x̂₀ is clamped to the
   image range; grad = w(t)(ε̂ − ε), clipped element-wise (``grad_clip``), NaN/Inf → 0;
   loss = ½‖z − (z − grad).detach()‖² / B, so ∂loss/∂z = grad / B and no backward runs
   through the UNet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.errors import UserError
from ..core.schedule import Updateable, schedule_value
from ..data.cameras import CameraBatch
from ..prompt.processor import PromptEmbeddings
from .base import GuidanceOutput
from .diffusion import (
    DistillationConfig, add_noise, check_weighting, clamp_denoised, classifier_free_guidance, distillation_gradient, perp_neg_guidance, scheduled_grad_clip, scheduled_step_range, sds_loss,
)
from .pretrained import DiffusionPrior, load_diffusion_prior


class ScoreDistillationGuidance(Configurable, Updateable, nn.Module):
    """``__call__(rgb (B,H,W,3) in [0,1], prompt, cameras) -> GuidanceOutput(name="sds")``.

    The frozen prior is a plain attribute (``self.prior``), not a submodule: the guidance has
    no trainable state, ``parameters()`` is empty and checkpoints hold nothing of it.
    """

    @dataclass
    class Config(DistillationConfig):
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        """Diffusers pipeline directory or hub id (resolved from the local HF cache only)."""
        guidance_scale: Any = 100.0
        """Classifier-free guidance scale (DreamFusion uses 100); number or schedule."""
        rgb_as_latents: bool = False
        """The render's channels are latents (Latent-NeRF): resized to the UNet size, no VAE."""
        use_perp_neg: bool = False
        """Perp-Neg against multi-face results (also on when the prompt processor enables it)."""
        enable_memory_efficient_attention: bool = False
        """xformers attention when installed on CUDA (torch SDPA, already memory-efficient, otherwise)."""
        enable_channels_last: bool = False
        """UNet weights in channels-last memory format (faster convolutions on recent GPUs)."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        nn.Module.__init__(self)
        c = self.parse_config(cfg, where)
        check_weighting(c.weighting, where)
        self.__dict__["prior"] = load_diffusion_prior(c.pretrained_model_name_or_path, c.half_precision)
        self._step = 0

    prior: DiffusionPrior

    def to(self, *args: Any, **kwargs: Any) -> "ScoreDistillationGuidance":
        device, _, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            self.prior.to(device)
            if self.cfg.enable_channels_last:
                self.prior.enable_channels_last()
            if self.cfg.enable_memory_efficient_attention:
                self.prior.enable_memory_efficient_attention()
        return nn.Module.to(self, *args, **kwargs)

    # ---- schedules ---------------------------------------------------------------------------
    def on_update_step(self, epoch: int, global_step: int) -> None:
        self._step = global_step

    def step_range(self) -> tuple[int, int]:
        """Inclusive (t_min, t_max) at the current training step."""
        return scheduled_step_range(self.cfg, self.prior.num_train_timesteps, self._step)

    # ---- the guidance ------------------------------------------------------------------------
    def forward(self, rgb: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch, rgb_as_latents: bool = False,
                noise: Optional[Tensor] = None, timesteps: Optional[Tensor] = None) -> GuidanceOutput:
        """``rgb`` (B,H,W,3) in [0,1] (or (B,H,W,C) latents with ``rgb_as_latents``) at
        ``cameras`` (B) → SDS loss. ``noise`` (B,C,h,w) / ``timesteps`` (B,) may be given (tests)."""
        if prompt is None:
            raise UserError("SDS guidance needs text embeddings: configure a prompt_processor")
        prior = self.prior
        # 1. latents of the renders (differentiable)
        latents = prior.encode(rgb, rgb_as_latents or self.cfg.rgb_as_latents)
        # 2. timesteps and noise
        timesteps, noise, noisy = add_noise(latents, prior.scheduler, self.step_range(), noise, timesteps)
        # 3. guided noise prediction
        with torch.no_grad():
            eps = self.guided_noise(noisy, timesteps, prompt, cameras)
        # 4. the SDS gradient and the loss whose gradient it is
        alphas = prior.alphas_cumprod.to(latents.device)[timesteps]
        eps = clamp_denoised(eps, noisy.float(), alphas, self.cfg.denoised_clip)
        clip = scheduled_grad_clip(self.cfg, self._step)
        grad = distillation_gradient(eps - noise, alphas, self.cfg.weighting, clip)
        return GuidanceOutput(loss=sds_loss(latents, grad), name="sds", grad_norm=grad.norm().detach(),
                              timesteps=timesteps)

    def guided_noise(self, noisy: Tensor, t: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch) -> Tensor:
        """ε̂ (B,C,h,w) fp32 at ``noisy`` z_t: one batched UNet call, then CFG or Perp-Neg.

        UNet rows: [cond (B); uncond (B)] or [pos (B); uncond (B); negatives (B·K, view-major)].
        """
        prior, b = self.prior, noisy.shape[0]
        scale = float(schedule_value(self.cfg.guidance_scale, self._step))
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
        eps = prior.predict_epsilon(noisy[rows], t[rows], text.to(noisy.device),
                                    None if labels is None else labels[rows])
        if not perp_neg:
            return classifier_free_guidance(eps[:b], eps[b:], scale)
        eps_neg = eps[2 * b:].view(b, k, *eps.shape[1:])
        return perp_neg_guidance(eps[:b], eps[b:2 * b], eps_neg, weights.to(eps), scale)
