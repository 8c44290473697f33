"""Six fixed views as targets (Zero123++'s 3×2 grid, or any six images tiled the same way):
renders the six Zero123++ cameras every step and returns ``mv_rgb`` and ``mv_mask`` (unweighted;
the stage's ``loss`` dict weights them). Formulas: ``guidance/multiview.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from torch import Tensor

from ..core.errors import UserError
from ..guidance.multiview import (ZERO123PP_ELEVATIONS_V11, ZERO123PP_ELEVATIONS_V12, MultiViewReconstructionLoss,
                                  load_view_grid, zero123pp_cameras)
from .regularizers import LossTerm

if TYPE_CHECKING:  # pragma: no cover
    from .base import StepContext

ELEVATIONS = {"v1.1": ZERO123PP_ELEVATIONS_V11, "v1.2": ZERO123PP_ELEVATIONS_V12}


class MultiViewTerm(LossTerm):
    """Reconstruction of a six-view grid image at the Zero123++ cameras."""

    @dataclass
    class Config:
        grid: str = ""
        """The tiled image (3 rows × 2 columns, read row by row; RGBA gives masks)."""
        version: str = "v1.1"
        """Camera elevations: v1.1 (30°/−20°) or v1.2 (20°/−10°)."""
        input_azimuth_deg: float = 0.0
        """Azimuth of the input image's camera in our world (the views are at +30° + 60°·k)."""
        distance: float = 3.2
        """Camera distance of the six views."""
        fovy_deg: float = 30.0
        """Vertical FOV of the six views."""
        height: int = 64
        """Render size compared with the (resized) tiles."""
        width: int = 64
        """Render width."""
        kind: str = "l2"
        """l2 or l1."""
        masked_rgb: bool = True
        """With masks: compare only object pixels."""
        background: Optional[list] = None
        """[r,g,b] the tiles are composited over when masked_rgb is false (default white)."""

    def __init__(self, cfg: Any = None, where: str = "terms.mv", name: str = "mv") -> None:
        super().__init__(cfg, where, name)
        c = self.cfg
        if c.version not in ELEVATIONS:
            raise UserError(f"{where}.version must be one of {', '.join(ELEVATIONS)}, got '{c.version}'")
        views, masks = load_view_grid(c.grid)
        self.register_buffer("views", views, persistent=False)
        self.register_buffer("masks", masks, persistent=False)
        self.loss = MultiViewReconstructionLoss({"kind": c.kind, "masked_rgb": c.masked_rgb, "background": c.background,
                                                 "lambda_mask": 1.0}, where=where)

    def forward(self, ctx: "StepContext") -> dict[str, Tensor]:
        c = self.cfg
        cams = zero123pp_cameras(c.distance, c.fovy_deg, c.height, c.width, c.input_azimuth_deg,
                                 ELEVATIONS[c.version], device=self.views.device)
        render = ctx.system.render(cams, shading="albedo")
        return self.loss(render.rgb, self.views, self.masks, render.opacity)
