"""SDEdit-style refinement (DreamGaussian's texture stage): fit each render to the prior's own
cleaned-up version of it.

For renders (B,H,W,C) in [0,1] seen from ``cameras``, with N = ``num_inference_steps`` and the
prior's DDIM schedule t₀ > t₁ > … > t_{N−1} (:class:`~.diffusion.DDIMSchedule`):

1. z = ``prior.encode(rgb)`` — no gradient: nothing is backpropagated through the prior;
2. k = int(N · strength) and z_t = √ᾱ z + √(1−ᾱ) ε at t = t_k: a *larger* strength starts at a
   *smaller* timestep, so the refinement keeps more of the render (DreamGaussian: 0.8 → t_40 =
   181 of 1000, rising to 0.95 → t_47 = 41 for SD's schedule);
3. the remaining N − k DDIM steps (η = 0, :func:`~.diffusion.ddim_denoise`) with the prior's
   guided noise — its conditioning (text, Zero123's view and reference), classifier-free
   guidance scale and ``denoised_clip`` — give z₀;
4. refined = ``prior.decode(z₀)``, resized (bilinear) to the render's size;
5. loss = mean((rgb − refined.detach())²): ∂loss/∂rgb = 2(rgb − refined)/numel.

Strength 1 (k = N) adds no noise and runs no step: the target is the render's round trip
through the prior's encoder and decoder (the render itself for pixel-space priors), and the
reported timestep is 0.

The prior is any distillation guidance (SDS, Zero123…) built from ``prior``; this guidance
answers the system's questions (prompt, reference image, placement, schedules) with the prior's
answers. Its timestep range, weighting and gradient clip are unused: the strength sets t.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.config import PositiveInt, Range, Schedule, instantiate
from ..core.schedule import schedule_value
from .base import Guidance, GuidanceOutput
from .diffusion import DDIMSchedule, clamp_denoised, ddim_denoise
from .distillation import DistillationGuidance


class FromPrior:
    """A :class:`Guidance` class attribute that an instance answers with its prior's value (the
    class itself keeps the base's default: what a class-level check such as preflight reads)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Optional[SDEditGuidance], owner: type) -> Any:
        return getattr(Guidance, self.name) if obj is None else getattr(obj.prior, self.name)


class SDEditGuidance(Guidance):
    """``guidance(rgb (B,H,W,C) in [0,1], cameras, prompt) -> GuidanceOutput``: the render fitted
    to the prior's refinement of it (see module docstring)."""

    name = "SDEdit"
    needs_prompt = FromPrior()
    uses_reference = FromPrior()
    pretrained_kind = FromPrior()

    @dataclass
    class Config:
        prior: dict = field(
            default_factory=lambda: {"_target_": "threestudio_like.guidance.sds.ScoreDistillationGuidance"}
        )
        """The distillation guidance whose prior refines the renders (``_target_`` SDS, Zero123…):
        its model, conditioning and ``guidance_scale`` (DreamGaussian: SD 100, Zero123 5)."""
        strength: Annotated[Any, Schedule(Range(ge=0, le=1))] = field(default_factory=lambda: [0, 0.8, 0.95, 50])
        """Fraction of the DDIM schedule skipped: the refinement starts at inference step
        int(N · strength), so larger is milder (1: no refinement); number or schedule.
        DreamGaussian: 0.8 → 0.95 over its 50 refinement steps."""
        num_inference_steps: PositiveInt = 50
        """N, the DDIM schedule's length (DreamGaussian: 50)."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        super().__init__(cfg, where)
        self.prior: DistillationGuidance = instantiate(
            self.cfg.prior, where=f"{where}.prior", expected=DistillationGuidance
        )
        self.schedule = DDIMSchedule.from_scheduler(self.prior.scheduler, self.cfg.num_inference_steps)

    def strength(self) -> float:
        return float(schedule_value(self.cfg.strength, self._step))

    # ---- the Guidance interface, answered by the prior ---------------------------------------
    def place(self, device: torch.device | str) -> SDEditGuidance:
        self.prior.place(device)
        super().place(device)
        return self

    def set_reference(self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float) -> None:
        self.prior.set_reference(rgb, elevation_deg, azimuth_deg, distance)

    def check_inputs(self, prompt: Any) -> None:
        self.prior.check_inputs(prompt)

    # ---- the step ----------------------------------------------------------------------------
    def forward(self, rgb: Tensor, cameras: Any, prompt: Any = None, noise: Optional[Tensor] = None) -> GuidanceOutput:
        """``rgb`` (B,H,W,C) at ``cameras`` (B) → mean squared error to the refined renders;
        ``noise`` (B,c,h,w) may be given (tests)."""
        self.check_inputs(prompt)
        prior, schedule = self.prior, self.schedule
        strength = self.strength()
        start = schedule.start_index(strength)
        with torch.no_grad():
            # 1. latents of the renders
            latents = prior.encode(rgb.detach())
            b = latents.shape[0]
            # 2. noised at the start timestep (nothing to noise at strength 1)
            if start < len(schedule.timesteps):
                t = schedule.timesteps[start].expand(b).to(latents.device)
                noise = torch.randn_like(latents) if noise is None else noise.to(latents)
                noisy = prior.scheduler.add_noise(latents, noise, t)
            else:
                t, noisy = torch.zeros(b, dtype=torch.long, device=latents.device), latents
            # 3. the remaining DDIM steps with the prior's guided noise
            alphas = schedule.alphas_cumprod.to(latents.device)

            def guided_eps(z: Tensor, step: Tensor) -> Tensor:
                steps = step.expand(b)
                eps = prior.guided_noise(z, steps, prompt, cameras)
                return clamp_denoised(eps, z, alphas[steps], prior.cfg.denoised_clip)

            clean = ddim_denoise(noisy, schedule, start, guided_eps)
            # 4. decoded, at the render's size
            refined = prior.decode(clean).permute(0, 3, 1, 2)
            if refined.shape[-2:] != rgb.shape[1:3]:
                refined = F.interpolate(refined, rgb.shape[1:3], mode="bilinear", align_corners=False)
            refined = refined.permute(0, 2, 3, 1).to(rgb)
        # 5. the render fitted to it
        return GuidanceOutput(
            loss=F.mse_loss(rgb, refined),
            grad_norm=(rgb.detach() - refined).norm(),
            timesteps=t,
            extras={"strength": torch.tensor(strength)},
        )
