"""The score-distillation step, written once.

For renders (B,H,W,3) in [0,1] seen from ``cameras``, :meth:`DistillationGuidance.forward`:

1. ``z = encode(rgb)`` — latents of the renders (differentiable);
2. ``noisy_point`` — t ~ U[t_min, t_max] per view and z_t = √ᾱ_t z + √(1−ᾱ_t) ε
   (ISM: a DDIM-inverted point instead), with the noise the point carries;
3. ``guided_noise`` — ε̂ at z_t from the conditioned prior (CFG / Perp-Neg; Zero123: view
   conditioning), its x̂₀ clamped with ``denoised_clip``;
4. ``baseline_noise`` — what ε̂ is compared with: the added noise (SDS), the LoRA's estimate
   (VSD), the inverted point's noise (ISM);
5. grad = w(t)(ε̂ − baseline), clipped element-wise, NaN/Inf → 0; loss = ½‖z − (z − grad).detach()‖² / B,
   so ∂loss/∂z = grad / B and no backward runs through the prior;
6. ``after_step`` — a method's own update after the gradient (VSD trains its LoRA).

A method overrides only the steps it changes. The formulas are in :mod:`.diffusion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from ..core.schedule import schedule_value
from .base import Guidance, GuidanceOutput
from .diffusion import DistillationConfig, add_noise, clamp_denoised, distillation_gradient, sds_loss, timestep_range


@dataclass
class NoisyPoint:
    """Step 2's result: ``timesteps`` (B,), ``noisy`` z_t (B,C,h,w) and ``noise``, the noise that
    z_t carries (what SDS subtracts)."""

    timesteps: Tensor
    noisy: Tensor
    noise: Tensor


class DistillationGuidance(Guidance):
    """Base of SDS, VSD, ISM and Zero123 (see module docstring). Subclasses provide
    :meth:`encode`, :meth:`guided_noise` and :attr:`scheduler`, and :meth:`decode` for the SDEdit
    refinement (:mod:`.sdedit`)."""

    @dataclass
    class Config(DistillationConfig):
        pass

    scheduler: Any
    """The prior's noise scheduler (diffusers ``DDPMScheduler``-like: ``add_noise``, ``alphas_cumprod``)."""

    # ---- schedules ---------------------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def step_range(self) -> tuple[int, int]:
        """Inclusive (t_min, t_max) of the (possibly scheduled) bounds at the current training step."""
        return timestep_range(
            self.num_train_timesteps,
            schedule_value(self.cfg.min_step_percent, self._step),
            schedule_value(self.cfg.max_step_percent, self._step),
        )

    def guidance_scale(self) -> float:
        return float(schedule_value(self.cfg.guidance_scale, self._step))

    def grad_clip(self) -> Optional[float]:
        return None if self.cfg.grad_clip is None else float(schedule_value(self.cfg.grad_clip, self._step))

    # ---- the steps a method may override -------------------------------------------------------
    def encode(self, rgb: Tensor) -> Tensor:  # pragma: no cover
        """(B,H,W,C) renders → (B,c,h,w) fp32 latents, differentiable."""
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:  # pragma: no cover
        """(B,c,h,w) latents → (B,H,W,C) images in [0,1], the inverse of :meth:`encode` (no gradient
        needed: the SDEdit refinement decodes its targets)."""
        raise NotImplementedError

    def noisy_point(
        self, latents: Tensor, prompt: Any, cameras: Any, noise: Optional[Tensor], timesteps: Optional[Tensor]
    ) -> NoisyPoint:
        """t uniform in :meth:`step_range`, ε ~ N(0, I) (either may be given: tests)."""
        t, noise, noisy = add_noise(latents, self.scheduler, self.step_range(), noise, timesteps)
        return NoisyPoint(t, noisy, noise)

    def guided_noise(self, noisy: Tensor, t: Tensor, prompt: Any, cameras: Any) -> Tensor:  # pragma: no cover
        """ε̂ (B,C,h,w) fp32 of the conditioned prior at ``noisy`` (called under ``no_grad``)."""
        raise NotImplementedError

    def baseline_noise(self, latents: Tensor, point: NoisyPoint, prompt: Any, cameras: Any) -> Tensor:
        """What ε̂ is compared with (called under ``no_grad``): the noise z_t carries."""
        return point.noise

    def after_step(self, latents: Tensor, prompt: Any, cameras: Any) -> dict[str, Tensor]:
        """A method's own update after the gradient is formed; returns scalars to log."""
        return {}

    # ---- the step ------------------------------------------------------------------------------
    def forward(
        self,
        rgb: Tensor,
        cameras: Any,
        prompt: Any = None,
        noise: Optional[Tensor] = None,
        timesteps: Optional[Tensor] = None,
    ) -> GuidanceOutput:
        """``rgb`` (B,H,W,C) at ``cameras`` (B) → the distillation loss. ``noise`` (B,c,h,w) and
        ``timesteps`` (B,) may be given (tests)."""
        self.check_inputs(prompt)
        # 1. latents of the renders (differentiable)
        latents = self.encode(rgb)
        # 2. the noisy point
        point = self.noisy_point(latents, prompt, cameras, noise, timesteps)
        alphas = self.scheduler.alphas_cumprod.to(latents.device)[point.timesteps]
        with torch.no_grad():
            # 3. the guided noise prediction, its denoised estimate clamped
            eps = self.guided_noise(point.noisy, point.timesteps, prompt, cameras)
            eps = clamp_denoised(eps, point.noisy.float(), alphas, self.cfg.denoised_clip)
            # 4. the baseline it is compared with
            baseline = self.baseline_noise(latents.detach(), point, prompt, cameras)
        # 5. the gradient and the loss whose gradient it is
        grad = distillation_gradient(eps - baseline, alphas, self.cfg.weighting, self.grad_clip())
        # 6. the method's own update
        extras = self.after_step(latents, prompt, cameras)
        return GuidanceOutput(
            loss=sds_loss(latents, grad), grad_norm=grad.norm().detach(), timesteps=point.timesteps, extras=extras
        )
