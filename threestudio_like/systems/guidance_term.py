"""A second guidance as a loss term: Magic123's joint text prior beside Zero123, Make-It-3D's
CLIP similarity to the reference — any guidance component scoring the step's render.

The guidance is loaded by ``setup_guidance`` (only for stages that train) and held, like the
stage's own, by a :class:`~.score_distillation.ScoringGuidance` outside the module tree. Returns
``{<name>: loss}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional

import torch
from torch import Tensor

from ..core.errors import UserError
from .regularizers import LossTerm
from .score_distillation import ScoringGuidance, build_guidance, normal_image

if TYPE_CHECKING:  # pragma: no cover
    from .score_distillation import StepContext


class GuidanceTerm(LossTerm):
    """An extra guidance (see module docstring)."""

    @dataclass
    class Config:
        guidance: Optional[dict] = None
        """Guidance component (``_target_`` + its config); required."""
        prompt_processor: Optional[dict] = None
        """Prompt processor for text guidance (null for image-conditioned ones)."""
        input: Literal["rgb", "normal"] = "rgb"
        """What it scores: ``rgb`` or ``normal``."""

    def __init__(self, cfg: Any = None, where: str = "terms.extra_guidance", name: str = "extra_guidance") -> None:
        super().__init__(cfg, where, name)
        if self.cfg.guidance is None:
            raise UserError(f"{where}.guidance: a guidance term needs a guidance config with a _target_")
        self.where = where
        self.scoring: Optional[ScoringGuidance] = None

    def setup_guidance(self, device: torch.device, reference: Optional[tuple[Tensor, float, float, float]]) -> None:
        self.scoring = build_guidance(self.cfg.guidance, self.cfg.prompt_processor, device, reference, self.where)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        assert self.scoring is not None, "setup_guidance() loads the guidance before training"
        image = ctx.render.rgb if self.cfg.input == "rgb" else normal_image(ctx.render)
        return {self.name: self.scoring(image, ctx.cameras).loss}
