"""A second guidance as a loss term: Magic123's joint text prior beside Zero123, Make-It-3D's
CLIP similarity to the reference — any guidance component scoring the step's render.

The guidance is loaded by ``setup_guidance`` (only for stages that train) and kept out of the
module tree, so checkpoints hold none of its frozen weights. Returns ``{<name>: loss}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from ..core.errors import UserError
from .base import _normal_image, build_guidance
from .regularizers import LossTerm

if TYPE_CHECKING:  # pragma: no cover
    from .base import StepContext


class GuidanceTerm(LossTerm):
    """An extra guidance (see module docstring)."""

    @dataclass
    class Config:
        guidance: Optional[dict] = None
        """Guidance component (``_target_`` + its config); required."""
        prompt_processor: Optional[dict] = None
        """Prompt processor for text guidance (null for image-conditioned ones)."""
        input: str = "rgb"
        """What it scores: ``rgb`` or ``normal``."""

    def __init__(self, cfg: Any = None, where: str = "terms.guidance", name: str = "guidance") -> None:
        super().__init__(cfg, where, name)
        if self.cfg.guidance is None:
            raise UserError(f"{where}.guidance: a guidance term needs a guidance config with a _target_")
        self.where = where
        object.__setattr__(self, "_guidance", None)
        object.__setattr__(self, "_prompt", None)

    def setup_guidance(self, device: torch.device, reference: Any) -> None:
        guidance, prompt = build_guidance(self.cfg.guidance, self.cfg.prompt_processor, device, reference, self.where)
        # plain attributes (not submodules): the frozen weights stay out of checkpoints;
        # Updateable still reaches the guidance's schedules through the instance dict
        object.__setattr__(self, "_guidance", guidance)
        object.__setattr__(self, "_prompt", prompt)

    def forward(self, ctx: "StepContext") -> dict[str, Tensor]:
        image = ctx.render.rgb if self.cfg.input == "rgb" else _normal_image(ctx.render)
        out = self._guidance(rgb=image, cameras=ctx.cameras, prompt=self._prompt)
        return {self.name: out.loss}
