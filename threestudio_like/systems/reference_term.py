"""Image-to-3D: reconstruct the input image at its camera (Zero123, Magic123, Make-It-3D).

The term renders the reference camera every step and returns, unweighted, ``<name>_rgb``
(MSE on the object, or on the whole image against ``rgb_background``), ``<name>_mask`` (opacity
vs the alpha mask), ``<name>_depth`` (1 − Pearson correlation with a monocular depth map, when
``depth`` is given) and ``<name>_normal_smooth`` (when the render has normals); the stage's
``loss`` dict weights them. Formulas: ``guidance/reference.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from ..data.cameras import CameraBatch, make_cameras
from ..data.image import load_depth, load_rgba
from ..guidance.reference import (depth_correlation_loss, normal_smoothness_loss, reference_mask_loss,
                                  reference_rgb_loss)
from .regularizers import LossTerm

if TYPE_CHECKING:  # pragma: no cover
    from .base import StepContext


class ReferenceViewTerm(LossTerm):
    """Losses at the input image's camera (see module docstring)."""

    @dataclass
    class Config:
        image: str = ""
        """RGBA image (object segmented, background transparent)."""
        depth: Optional[str] = None
        """Optional monocular depth/disparity map of the image (.npy or grayscale image)."""
        depth_is_disparity: bool = True
        """The depth map is a disparity (DPT/MiDaS: larger = nearer)."""
        elevation_deg: float = 0.0
        """Elevation of the input view (degrees)."""
        azimuth_deg: float = 0.0
        """Azimuth of the input view (0 = front)."""
        distance: float = 3.2
        """Camera distance of the input view."""
        fovy_deg: float = 20.0
        """Vertical FOV of the input view."""
        height: int = 128
        """Resolution at which the reference view is rendered and compared."""
        width: int = 128
        """Width of the reference render."""
        rgb_background: Optional[list] = None
        """null: RGB loss on object pixels only; [r,g,b]: whole image over that colour."""
        mask_loss: str = "bce"
        """bce | mse."""
        shading: str = "albedo"
        """Shading of the reference render (the photo is compared with unlit albedo by default)."""

    def __init__(self, cfg: Any = None, where: str = "terms.ref", name: str = "ref") -> None:
        super().__init__(cfg, where, name)
        c = self.cfg
        rgb, mask = load_rgba(c.image, (c.height, c.width))
        self.register_buffer("rgb", rgb, persistent=False)
        self.register_buffer("mask", mask, persistent=False)
        depth = load_depth(c.depth, (c.height, c.width)) if c.depth else None
        self.register_buffer("depth", depth, persistent=False)

    def camera(self) -> CameraBatch:
        c = self.cfg
        t = lambda v: torch.tensor([float(v)], device=self.rgb.device)  # noqa: E731
        return make_cameras(t(c.elevation_deg), t(c.azimuth_deg), t(c.distance), t(c.fovy_deg), c.height, c.width)

    def reference_image(self) -> tuple[Tensor, float, float, float]:
        """(rgb over white (1,H,W,3), elevation, azimuth, distance) for view-conditioned guidance."""
        c = self.cfg
        over_white = self.rgb * self.mask + (1 - self.mask)
        return over_white, c.elevation_deg, c.azimuth_deg, c.distance

    def forward(self, ctx: "StepContext") -> dict[str, Tensor]:
        c, n = self.cfg, self.name
        render = ctx.system.render(self.camera(), shading=c.shading)
        bg = None if c.rgb_background is None else torch.tensor(c.rgb_background, dtype=render.rgb.dtype)
        out = {
            f"{n}_rgb": reference_rgb_loss(render.rgb, self.rgb, self.mask, bg),
            f"{n}_mask": reference_mask_loss(render.opacity, self.mask, c.mask_loss),
        }
        if self.depth is not None:
            mono = -self.depth if c.depth_is_disparity else self.depth
            out[f"{n}_depth"] = depth_correlation_loss(render.depth, mono, self.mask)
        if render.normal is not None:
            out[f"{n}_normal_smooth"] = normal_smoothness_loss(render.normal, self.mask)
        return out
