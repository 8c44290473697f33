"""What every guidance is: the interface the system calls, and the typed result it returns.

A guidance scores renders with a pretrained prior. Its **frozen pretrained models** are held by
objects that are not ``nn.Module`` s (:class:`~.pretrained.DiffusionPrior`, the Zero123
pipeline, :class:`Frozen` around a plain module), so assigning them is an ordinary attribute:
``parameters()``, ``state_dict()`` and the checkpoints hold only what the guidance trains
(VSD's LoRA). :meth:`Guidance.place` moves both to a device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Optional, TypeVar

import torch
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.errors import UserError
from ..core.schedule import Updateable

M = TypeVar("M", bound=nn.Module)


@dataclass
class GuidanceOutput:
    """What a guidance call returns.

    ``loss`` is a differentiable scalar whose gradient with respect to the input render is the
    guidance's gradient (for score distillation: ``½‖z − (z − grad).detach()‖² / B`` so
    ∂loss/∂z = grad/B); the system weights it like any loss term (``loss.guidance``).
    ``grad_norm`` is the norm of the raw guidance gradient (detached), ``timesteps`` (B,) the
    diffusion steps used (None for non-diffusion guidance). ``extras`` holds further scalars to
    log, e.g. ``loss_lora`` for VSD — tensors the guidance optimizes itself are detached.
    """

    loss: Tensor
    grad_norm: Optional[Tensor] = None
    timesteps: Optional[Tensor] = None
    extras: dict[str, Tensor] = field(default_factory=dict)


class Frozen(Generic[M]):
    """A pretrained ``nn.Module`` used but never trained: held outside its owner's module tree.

    ``frozen.module`` is the model (``requires_grad`` off, eval mode); calling ``frozen(...)``
    calls it.
    """

    def __init__(self, module: M) -> None:
        self.module: M = module.requires_grad_(False).eval()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def to(self, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> Frozen[M]:
        move_model(self.module, device, dtype)
        return self


def move_model(model: Any, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> None:
    """``model.to(device, dtype)`` for a module or a diffusers pipeline, the dtype passed only for a
    cast: a dtype argument, even None or the model's own, makes diffusers' models warn about
    float32 modules."""
    current = model.dtype if hasattr(model, "dtype") else next((p.dtype for p in model.parameters()), None)
    if dtype is None or current == dtype:
        model.to(device)
    else:
        model.to(device, dtype)


class Guidance(Configurable, Updateable, nn.Module):
    """A prior that scores renders: ``guidance(rgb, cameras, prompt) -> GuidanceOutput``.

    What the system calls, and nothing else:

    * :meth:`place` once, after construction;
    * :meth:`set_reference` when :attr:`uses_reference` and the stage has an input image;
    * :meth:`forward` every step (``rgb`` (B,H,W,3) in [0,1] at ``cameras`` (B); ``prompt`` the
      stage's :class:`~..prompt.processor.PromptEmbeddings` or None);
    * ``update_step`` (schedules), and for checkpoints ``state_dict``/``load_state_dict`` plus
      :meth:`optimizer_state_dict`/:meth:`load_optimizer_state_dict` when :meth:`has_trainable_state`.
    """

    name: ClassVar[str] = "guidance"
    """Short name used in error messages (``SDS``, ``VSD``, ``Zero123``...)."""
    needs_prompt: ClassVar[bool] = False
    """Whether :meth:`forward` needs text embeddings (a configured prompt processor)."""
    uses_reference: ClassVar[bool] = False
    """Whether it conditions on the stage's input image (:meth:`set_reference`)."""
    pretrained_kind: ClassVar[Optional[str]] = None
    """What ``pretrained_model_name_or_path`` must hold (:data:`~.pretrained.PRETRAINED_KINDS`):
    checked before a run writes anything, without loading weights."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.where = where
        self._step = 0

    def on_update_step(self, epoch: int, global_step: int) -> None:
        self._step = global_step

    def place(self, device: torch.device | str) -> Guidance:
        """Move the frozen models (in their weights dtype) and the trainable state (fp32) to ``device``."""
        nn.Module.to(self, device=torch.device(device))
        return self

    def set_reference(self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float) -> None:
        """Condition on the input image (1,H,W,3) in [0,1] seen from the given camera (degrees)."""
        raise UserError(f"{self.where}: {self.name} guidance does not condition on an input image")

    def check_inputs(self, prompt: Any) -> None:
        """Raise a UserError when the call cannot be made (no prompt for a text prior...)."""
        if self.needs_prompt and prompt is None:
            raise UserError(f"{self.where}: {self.name} guidance needs text embeddings: configure a prompt_processor")

    def has_trainable_state(self) -> bool:
        """Whether checkpoints must hold this guidance's state (it trains weights of its own)."""
        return any(True for _ in self.parameters())

    def optimizer_state_dict(self) -> Optional[dict[str, Any]]:
        """State of the guidance's own optimizer (None: it has none)."""
        return None

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`optimizer_state_dict`'s result."""

    def forward(self, rgb: Tensor, cameras: Any, prompt: Any = None) -> GuidanceOutput:  # pragma: no cover
        raise NotImplementedError
