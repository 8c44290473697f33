"""Zero123's framing: the object centred in a square frame, filling a set fraction of it.

The object's bounding box (from its mask) is centred in a square crop of side
``max(box width, box height) / fill``, and the crop is resized to ``size × size`` — the
recentring of Zero123's and threestudio's image preprocessing (``border_ratio`` 0.2 there,
``fill`` = 1 − border_ratio = 0.8 here; Zero123's own demo uses 200/256 ≈ 0.78). The crop may
reach outside the photo (an object at the edge); that part is padded. One :class:`Framing` is
applied to the photo, the mask and the depth map alike, so they stay aligned.

Resampling goes through PIL with the crop as a fractional source box, antialiased when it shrinks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Resample = Literal["bilinear", "lanczos"]
"""``lanczos`` for colour (sharp), ``bilinear`` for masks and depth (no overshoot)."""


@dataclass(frozen=True)
class Framing:
    """A square crop of the photo, resized to ``size`` × ``size``."""

    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1) in photo pixels (x right, y down; pixel i spans [i, i+1)); square; may
    extend beyond the photo."""
    size: int

    @property
    def scale(self) -> float:
        """Output pixels per photo pixel."""
        return self.size / (self.box[2] - self.box[0])

    def apply(self, image: np.ndarray, resample: Resample, pad: Literal["constant", "edge"] = "constant") -> np.ndarray:
        """(H,W) or (H,W,C) float array → (size,size) or (size,size,C) float32. Outside the photo:
        zeros (``constant``) or the nearest edge pixel (``edge``, for model inputs)."""
        from PIL import Image

        squeeze = image.ndim == 2
        img = image[..., None] if squeeze else image
        h, w = img.shape[:2]
        x0, y0, x1, y1 = self.box
        left, top = max(0, math.ceil(-x0)), max(0, math.ceil(-y0))
        right, bottom = max(0, math.ceil(x1 - w)), max(0, math.ceil(y1 - h))
        padded = np.pad(img.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode=pad)
        box = (x0 + left, y0 + top, x1 + left, y1 + top)
        pil_filter = Image.Resampling.LANCZOS if resample == "lanczos" else Image.Resampling.BILINEAR
        channels = [
            np.asarray(Image.fromarray(np.ascontiguousarray(padded[..., c])).resize((self.size,) * 2, pil_filter, box))
            for c in range(padded.shape[-1])
        ]
        out = np.stack(channels, axis=-1).astype(np.float32)
        return out[..., 0] if squeeze else out


def frame_object(mask_box: tuple[int, int, int, int], fill: float, size: int) -> Framing:
    """The framing that centres ``mask_box`` (x0, y0, x1, y1; x1/y1 exclusive) with its longer
    side spanning ``fill`` × ``size`` output pixels."""
    x0, y0, x1, y1 = mask_box
    side = max(x1 - x0, y1 - y0) / fill
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return Framing(box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), size=size)
