"""The typed result every guidance returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class GuidanceOutput:
    """What a guidance call returns.

    ``loss`` is a differentiable scalar whose gradient with respect to the input render is the
    guidance's gradient (for SDS/VSD: ``½‖z − (z − grad).detach()‖² / B`` so ∂loss/∂z = grad/B).
    ``name`` is the key the system logs and weights it under (``sds``, ``vsd``, ``clip``...).
    ``grad_norm`` is the norm of the raw guidance gradient (detached), ``timesteps`` (B,) the
    diffusion steps used (empty for non-diffusion guidance). ``extras`` holds further scalar
    terms, e.g. ``loss_lora`` for VSD — tensors that are already optimized by the guidance
    itself are detached.
    """

    loss: Tensor
    name: str = "sds"
    grad_norm: Tensor | None = None
    timesteps: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
