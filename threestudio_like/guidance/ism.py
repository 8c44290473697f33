"""Interval Score Matching (LucidDreamer, Liang et al. 2024) with a Stable Diffusion-format prior.

SDS noises the render with fresh random ε every step, so at large t each step's denoised target
x̂₀ is a different sample of the prompt (for the toy cube: a different turn about the vertical
axis each time) and the render is pulled toward their average — the over-smoothing SDS is known
for. ISM replaces the random noise by a deterministic path from the render itself:

1. z = latents of the renders; t ~ U[t_min, t_max] per view, s = max(t − ``interval``, 0);
2. DDIM inversion with the unconditional prompt from the clean z up to s in strides of at most
   ``inversion_stride`` timesteps (ᾱ₋₁ = 1 for the clean start): at each stride a → b,
   ε = ε_∅(z_a, a), x̂₀ = (z_a − √(1−ᾱ_a) ε)/√ᾱ_a, z_b = √ᾱ_b x̂₀ + √(1−ᾱ_b) ε;
3. one more inversion stride s → t gives z_t from ε_s = ε_∅(z_s, s) and x̂₀ˢ;
4. ε̂ = the guided prediction at (z_t, t) (CFG / Perp-Neg exactly as SDS, ``denoised_clip``
   included); grad = w(t)(ε̂ − ε_s) = w(t) √(ᾱ_t/(1−ᾱ_t)) (x̂₀ˢ − x̂₀ᵗ): the render's own one-step
   reconstruction is pulled toward the guided estimate at a noise level reached *from the render*.

``subtract: render`` keeps steps 1–3 but subtracts the noise that takes the render itself to
z_t, ε = (z_t − √ᾱ_t z)/√(1−ᾱ_t): grad = w(t) √(ᾱ_t/(1−ᾱ_t)) (z − x̂₀ᵗ), i.e. SDS at the
DDIM-inverted point instead of a random one (Score Distillation via Inversion, SDI).

Cost: ⌈(s+1)/inversion_stride⌉ + 1 unconditional UNet calls (batch B) beside SDS's one guided
call (batch 2B); the timesteps are drawn on the CPU so the stride count needs no device sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from ..core.config import PositiveInt
from ..data.cameras import CameraBatch
from ..prompt.processor import PromptEmbeddings
from .diffusion import sample_timesteps
from .distillation import NoisyPoint
from .sds import ScoreDistillationGuidance


def ddim_invert(z: Tensor, a: Tensor, b: Tensor, eps: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """z_b: one deterministic DDIM stride from ``z`` at timesteps ``a`` (B,) to ``b`` (B,) along
    ``eps`` through x̂₀ = (z − √(1−ᾱ_a) ε)/√ᾱ_a. Timestep −1 is the clean image (ᾱ = 1); a == b
    returns ``z``; b < a is a DDIM denoising stride."""

    def abar(t: Tensor) -> Tensor:
        return torch.where(t >= 0, alphas_cumprod[t.clamp(min=0)], torch.ones_like(alphas_cumprod[0:1]))

    shape = (-1, *([1] * (z.ndim - 1)))
    aa, ab = abar(a).view(shape).to(z), abar(b).view(shape).to(z)
    x0 = (z - (1.0 - aa).sqrt() * eps) / aa.sqrt()
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps


class IntervalScoreGuidance(ScoreDistillationGuidance):
    """``guidance(rgb (B,H,W,3) in [0,1], cameras, prompt) -> GuidanceOutput``.

    A drop-in for SDS (same prior, prompt, CFG, weighting and clamps); only the noisy point and
    the subtracted noise differ.
    """

    name = "ISM"

    @dataclass
    class Config(ScoreDistillationGuidance.Config):
        interval: PositiveInt = 50
        """δ_T: the inverted point sits at s = t − interval (LucidDreamer: 50)."""
        inversion_stride: PositiveInt = 200
        """δ_S: largest DDIM inversion stride from the clean render up to s (LucidDreamer: 200)."""
        subtract: Literal["interval", "render"] = "interval"
        """``interval``: ε_s (ISM); ``render``: the noise that takes the render itself to z_t,
        (z_t − √ᾱ_t z)/√(1−ᾱ_t), i.e. SDS at the inverted point (SDI, Lukoianov et al. 2024)."""

    def noisy_point(
        self,
        latents: Tensor,
        prompt: PromptEmbeddings,
        cameras: CameraBatch,
        noise: Optional[Tensor],
        timesteps: Optional[Tensor],
    ) -> NoisyPoint:
        """z_t by DDIM inversion of the render, with ε_s as its noise (``noise`` is unused: the path
        is deterministic; ``timesteps`` (B,) may be given)."""
        if timesteps is None:  # drawn on the CPU: the number of inversion strides is known without a sync
            timesteps = sample_timesteps(latents.shape[0], *self.step_range())
        strides = -(-(max(int(timesteps.max()) - self.cfg.interval, 0) + 1) // self.cfg.inversion_stride)
        t = timesteps.to(latents.device).long()
        with torch.no_grad():
            z_t, eps_s = self.invert(latents.detach(), t, strides, prompt, cameras)
        return NoisyPoint(t, z_t, eps_s)

    def baseline_noise(
        self, latents: Tensor, point: NoisyPoint, prompt: PromptEmbeddings, cameras: CameraBatch
    ) -> Tensor:
        """ε_s (``interval``), or the noise taking the render itself to z_t (``render``)."""
        if self.cfg.subtract == "interval":
            return point.noise
        a = self.prior.alphas_cumprod.to(latents.device)[point.timesteps].view(-1, *([1] * (latents.ndim - 1)))
        return (point.noisy - a.sqrt() * latents) / (1.0 - a).sqrt()

    def invert(
        self, z: Tensor, t: Tensor, strides: int, prompt: PromptEmbeddings, cameras: CameraBatch
    ) -> tuple[Tensor, Tensor]:
        """(z_t, ε_s): the clean latents ``z`` inverted to s = t − interval in ``strides`` strides
        (enough for the largest s; views that reach their s earlier stay there), then to t."""
        prior = self.prior
        _, uncond = prompt.get_text_embeddings(cameras.elevation, cameras.azimuth)
        uncond = uncond.to(z.device)
        labels = prior.class_labels(cameras.c2w)
        acp = prior.alphas_cumprod.to(z.device)
        s = (t - self.cfg.interval).clamp(min=0)
        a = torch.full_like(t, -1)
        for _ in range(strides):
            nxt = torch.minimum(a + self.cfg.inversion_stride, s)
            z = ddim_invert(z, a, nxt, prior.predict_epsilon(z, a.clamp(min=0), uncond, labels), acp)
            a = nxt
        eps = prior.predict_epsilon(z, s, uncond, labels)
        return ddim_invert(z, s, t, eps, acp), eps
