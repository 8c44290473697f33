"""The formulas of score distillation (SDS, VSD, ISM, Zero123); the step that composes them is
:mod:`.distillation`.

Notation: ``alphas`` is ᾱ_t (the scheduler's ``alphas_cumprod`` at each view's timestep, (B,)),
``z`` the clean latents (B,C,h,w), ``z_t = √ᾱ_t z + √(1−ᾱ_t) ε``.

* :func:`timestep_range` / :func:`sample_timesteps` — t ~ U[t_min, t_max], one per view;
* :func:`weighting_factor` — w(t);
* :func:`to_epsilon` — ε from an ε-, v- or x₀-predicting model;
* :func:`classifier_free_guidance`, :func:`perp_neg_guidance` — combine noise predictions;
* :func:`sds_loss` — the loss whose gradient with respect to ``z`` is ``grad / B``.
* :class:`DDIMSchedule`, :func:`ddim_denoise` — deterministic DDIM sampling from a noisy point
  (the SDEdit refinement of :mod:`.sdedit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, get_args

import torch
from torch import Tensor

from ..core.config import PositiveFloat, Range, Schedule
from ..core.errors import UserError

Weighting = Literal["sds", "uniform", "fantasia3d", "sigma2", "sigma"]
"""w(t): ``sds`` 1−ᾱ (DreamFusion), ``uniform`` 1, ``fantasia3d`` √ᾱ(1−ᾱ), ``sigma2`` (1−ᾱ)/ᾱ,
``sigma`` √((1−ᾱ)/ᾱ): then w(ε̂ − ε) = z − x̂₀, the x₀-reconstruction loss ½‖z − x̂₀‖² of MVDream
(threestudio-mvdream's ``recon_loss``)."""


@dataclass
class DistillationConfig:
    """Fields every score-distillation guidance shares (SDS, VSD, ISM, Zero123); each guidance's
    ``Config`` extends it and sets its own ``pretrained_model_name_or_path``/``guidance_scale``."""

    pretrained_model_name_or_path: str = ""
    """Diffusers pipeline directory or hub id (resolved from the local HF cache only)."""
    guidance_scale: Annotated[Any, Schedule(Range(ge=0))] = 100.0
    """Classifier-free guidance scale; number or schedule."""
    min_step_percent: Annotated[Any, Schedule(Range(ge=0, le=1))] = 0.02
    """Lower bound of t as a fraction of the training timesteps; number or schedule."""
    max_step_percent: Annotated[Any, Schedule(Range(ge=0, le=1))] = 0.98
    """Upper bound of t; number or schedule (anneal it down over training)."""
    weighting: Weighting = "sds"
    """w(t): ``sds`` (1−ᾱ), ``uniform`` (1), ``fantasia3d`` (√ᾱ(1−ᾱ)), ``sigma2`` ((1−ᾱ)/ᾱ), ``sigma``
    (√((1−ᾱ)/ᾱ): the gradient is z − x̂₀, MVDream's x₀-reconstruction loss)."""
    grad_clip: Annotated[Any, Schedule(Range(gt=0))] = None
    """Clamp the gradient element-wise to ±value (null = off); number or schedule."""
    denoised_clip: Optional[PositiveFloat] = None
    """Clamp the guided denoised estimate x̂₀ to ±value before forming the gradient (null = off):
    for pixel-space priors, whose images lie in [−1, 1], so a large guidance scale cannot pull
    a render beyond the colours the prior was trained on (:func:`clamp_denoised`)."""
    half_precision: bool = True
    """fp16 weights on CUDA (always fp32 on CPU)."""


def timestep_range(num_train_timesteps: int, min_percent: float, max_percent: float) -> tuple[int, int]:
    """Inclusive (t_min, t_max) from fractions of the training timesteps, clamped to
    ``0 ≤ t_min ≤ t_max ≤ T−1``."""
    n = int(num_train_timesteps)
    lo = min(max(int(n * float(min_percent)), 0), n - 1)
    hi = min(max(int(n * float(max_percent)), lo), n - 1)
    return lo, hi


def sample_timesteps(
    batch: int, lo: int, hi: int, device: torch.device | str | None = None, generator: Optional[torch.Generator] = None
) -> Tensor:
    """(B,) int64 timesteps uniform on the integers ``lo..hi`` (both included)."""
    return torch.randint(lo, hi + 1, (batch,), generator=generator, device=device, dtype=torch.long)


def weighting_factor(name: str, alphas: Tensor) -> Tensor:
    """w(t) for ᾱ_t (B,) → (B,) (see :data:`Weighting`)."""
    if name == "sds":
        return 1.0 - alphas
    if name == "uniform":
        return torch.ones_like(alphas)
    if name == "fantasia3d":
        return alphas.sqrt() * (1.0 - alphas)
    if name == "sigma2":
        return (1.0 - alphas) / alphas
    if name == "sigma":
        return ((1.0 - alphas) / alphas).sqrt()
    raise UserError(f"weighting must be one of {'|'.join(get_args(Weighting))}; got '{name}'")


def to_epsilon(output: Tensor, noisy: Tensor, alphas: Tensor, prediction_type: str) -> Tensor:
    """The noise ε implied by a model output at ``z_t`` (``noisy``).

    ``epsilon``: as is; ``v_prediction`` (v = √ᾱ ε − √(1−ᾱ) z): ε = √ᾱ v + √(1−ᾱ) z_t;
    ``sample`` (x₀): ε = (z_t − √ᾱ x₀) / √(1−ᾱ).
    """
    a = alphas.view(-1, *([1] * (output.ndim - 1))).to(output)
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return a.sqrt() * output + (1.0 - a).sqrt() * noisy
    if prediction_type == "sample":
        return (noisy - a.sqrt() * output) / (1.0 - a).sqrt()
    raise UserError(f"unsupported scheduler prediction_type '{prediction_type}' (epsilon, v_prediction or sample)")


def classifier_free_guidance(eps_cond: Tensor, eps_uncond: Tensor, scale: float, form: str = "uncond") -> Tensor:
    """ε̂ = ε_uncond + s (ε_cond − ε_uncond) (``form="uncond"``) or ε_cond + s (ε_cond − ε_uncond)
    (``"cond"``, threestudio's SDS: the same as ``uncond`` at scale s + 1)."""
    base = eps_cond if form == "cond" else eps_uncond
    return base + scale * (eps_cond - eps_uncond)


def perpendicular_component(x: Tensor, y: Tensor) -> Tensor:
    """Per batch element, the part of ``x`` orthogonal to ``y`` (both (B,…))."""
    xf, yf = x.flatten(1), y.flatten(1)
    coef = (xf * yf).sum(1) / (yf * yf).sum(1).clamp_min(1e-12)
    return x - coef.view(-1, *([1] * (x.ndim - 1))) * y


def perp_neg_guidance(
    eps_pos: Tensor, eps_uncond: Tensor, eps_neg: Tensor, neg_weights: Tensor, scale: float
) -> Tensor:
    """Perp-Neg (Armandpour et al. 2023): ε̂ = ε_u + s (e_pos + Σ_k w_k (e_k)^⊥e_pos).

    ``eps_pos``, ``eps_uncond`` (B,…); ``eps_neg`` (B,K,…) for K negative prompts;
    ``neg_weights`` (B,K) — negative numbers push away from the negative prompts;
    e_pos = ε_pos − ε_u, e_k = ε_neg,k − ε_u, ⊥ = component perpendicular to e_pos.
    """
    e_pos = eps_pos - eps_uncond
    total = e_pos
    for k in range(eps_neg.shape[1]):
        e_k = eps_neg[:, k] - eps_uncond
        w = neg_weights[:, k].view(-1, *([1] * (e_pos.ndim - 1))).to(e_pos)
        total = total + w * perpendicular_component(e_k, e_pos)
    return eps_uncond + scale * total


def add_noise(
    latents: Tensor,
    scheduler: Any,
    step_range: tuple[int, int],
    noise: Optional[Tensor] = None,
    timesteps: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(timesteps (B,), noise ε, z_t) with t uniform in ``step_range`` and ε ~ N(0, I) unless
    given (tests pass them); ``z_t = √ᾱ_t z + √(1−ᾱ_t) ε`` on the detached latents."""
    if timesteps is None:
        timesteps = sample_timesteps(latents.shape[0], *step_range, device=latents.device)
    timesteps = timesteps.to(latents.device).long()
    noise = torch.randn_like(latents) if noise is None else noise.to(latents)
    with torch.no_grad():
        noisy = scheduler.add_noise(latents.detach(), noise, timesteps)
    return timesteps, noise, noisy


def clamp_denoised(eps: Tensor, noisy: Tensor, alphas: Tensor, bound: Optional[float]) -> Tensor:
    """The ε whose denoised estimate x̂₀ = (z_t − √(1−ᾱ) ε)/√ᾱ is clamped to ``±bound``:
    ε' = (z_t − √ᾱ clamp(x̂₀))/√(1−ᾱ) (``bound`` None: ``eps`` unchanged). Since
    ε̂ − ε = √(ᾱ/(1−ᾱ)) (z − x̂₀), SDS then pulls each pixel towards a value inside the range."""
    if bound is None:
        return eps
    a = alphas.view(-1, *([1] * (eps.ndim - 1))).to(eps)
    x0 = ((noisy - (1.0 - a).sqrt() * eps) / a.sqrt()).clamp(-bound, bound)
    return (noisy - a.sqrt() * x0) / (1.0 - a).sqrt()


def distillation_gradient(direction: Tensor, alphas: Tensor, weighting: str, clip: Optional[float]) -> Tensor:
    """``w(t)·direction`` (direction = ε̂ − ε for SDS, ε_pretrained − ε_lora for VSD), clamped to
    ``±clip`` when given, non-finite values zeroed. ``alphas``: ᾱ_t (B,)."""
    grad = weighting_factor(weighting, alphas).view(-1, *([1] * (direction.ndim - 1))) * direction
    if clip is not None:
        grad = grad.clamp(-clip, clip)
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def sds_loss(latents: Tensor, grad: Tensor) -> Tensor:
    """½‖z − (z − grad).detach()‖² / B (sum over elements): ∂loss/∂z = grad / B."""
    target = (latents - grad).detach()
    return 0.5 * (latents - target).pow(2).sum() / latents.shape[0]


# ---- deterministic DDIM sampling (SDEdit refinement) -----------------------------------------
TimestepSpacing = Literal["leading", "trailing", "linspace"]
"""How diffusers' ``DDIMScheduler.set_timesteps`` spaces the inference timesteps
(Lin et al. 2023, table 2); the SD and Zero123 checkpoints use ``leading``."""


def ddim_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int) -> Tensor:
    """(N,) int64 descending inference timesteps, as diffusers' ``DDIMScheduler.set_timesteps``:
    ``leading`` k·(T//N) + offset; ``trailing`` round(T − k·T/N) − 1; ``linspace`` round of N
    points evenly from 0 to T−1 (k = 0…N−1)."""
    n, steps = int(num_train_timesteps), int(num_inference_steps)
    if not 0 < steps <= n:
        raise UserError(f"num_inference_steps must be in 1..{n} (the prior's training timesteps), got {steps}")
    if spacing == "leading":
        t = torch.arange(steps, dtype=torch.float64) * (n // steps) + steps_offset
    elif spacing == "trailing":
        t = (n - torch.arange(steps, dtype=torch.float64) * (n / steps)).round() - 1
    elif spacing == "linspace":
        t = torch.linspace(0, n - 1, steps, dtype=torch.float64)
    else:
        raise UserError(f"timestep_spacing must be one of {'|'.join(get_args(TimestepSpacing))}; got '{spacing}'")
    t = t.round().long()
    return t if spacing == "trailing" else t.flip(0)


@dataclass
class DDIMSchedule:
    """The deterministic DDIM sampler (η = 0) of a prior, as diffusers' ``DDIMScheduler`` builds it
    from the prior's scheduler config (:meth:`from_scheduler`)."""

    timesteps: Tensor
    """(N,) int64, descending: the inference timesteps."""
    alphas_cumprod: Tensor
    """(T,) ᾱ of the training timesteps."""
    final_alpha_cumprod: Tensor
    """ᾱ after the last step: 1 with ``set_alpha_to_one`` (DDIM's default), else ᾱ₀ (SD, Zero123)."""
    stride: int
    """T // N: a step from t lands on t − stride, as diffusers' ``DDIMScheduler.step`` computes it
    (the next inference timestep with ``leading`` and ``trailing`` spacing)."""

    @classmethod
    def from_scheduler(cls, scheduler: Any, num_inference_steps: int) -> DDIMSchedule:
        """From any diffusers scheduler's config and ``alphas_cumprod``, with DDIM's defaults for the
        keys it lacks: ``timestep_spacing`` leading, ``steps_offset`` 0, ``set_alpha_to_one`` true
        (what ``DDIMScheduler.from_config(scheduler.config)`` gives, as DreamGaussian builds it)."""
        config = scheduler.config
        n = int(config.num_train_timesteps)
        spacing = config.get("timestep_spacing", "leading")
        timesteps = ddim_timesteps(n, num_inference_steps, spacing, int(config.get("steps_offset", 0)))
        alphas = scheduler.alphas_cumprod.float()
        final = torch.ones(()) if config.get("set_alpha_to_one", True) else alphas[0]
        return cls(timesteps, alphas, final, n // int(num_inference_steps))

    def start_index(self, strength: float) -> int:
        """``int(N · strength)``, DreamGaussian's rule: the first inference step of the refinement,
        so a larger strength starts at a *smaller* timestep; N (strength 1) skips every step."""
        return min(int(len(self.timesteps) * float(strength)), len(self.timesteps))


def ddim_denoise(noisy: Tensor, schedule: DDIMSchedule, start: int, eps_fn: Any) -> Tensor:
    """z₀: ``noisy`` z_t at ``schedule.timesteps[start]`` (B,C,h,w) denoised by the remaining DDIM
    steps, η = 0. Each step from t: ε = ``eps_fn(z, t)`` (t a 0-d int64 tensor), x̂₀ = (z −
    √(1−ᾱ_t) ε)/√ᾱ_t, z ← √ᾱ_prev x̂₀ + √(1−ᾱ_prev) ε (ᾱ_prev: ᾱ at t − stride, or the final ᾱ below 0).
    ``start`` = N runs no step and returns ``noisy`` unchanged."""
    z = noisy
    alphas = schedule.alphas_cumprod.to(z.device)
    final = schedule.final_alpha_cumprod.to(z.device)
    for t in schedule.timesteps[start:].tolist():
        eps = eps_fn(z, torch.tensor(t, device=z.device))
        a = alphas[t]
        a_prev = alphas[t - schedule.stride] if t - schedule.stride >= 0 else final
        x0 = (z - (1.0 - a) ** 0.5 * eps) / a**0.5
        z = a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps
    return z
