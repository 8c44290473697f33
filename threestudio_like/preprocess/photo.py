"""Reading a photo for preprocessing: any common file, upright, as 8-bit RGB (+ alpha).

:func:`load_photo` applies the EXIF orientation (a phone's portrait JPEG is stored sideways), and
converts every colour mode PIL reads to RGB: greyscale (8/16-bit, or 32-bit integer holding
16-bit values), CMYK, palette (its transparency becomes alpha), YCbCr/LAB/HSV, bilevel. Float
images (mode ``F``) are read when their values lie in [0, 1]; other ranges, 32-bit integer
values beyond 16 bits, and files PIL cannot read are refused with a :class:`UserError`.

An alpha channel is *meaningful* (:attr:`Photo.has_cutout`) when it separates an object from a
background: some pixels opaque, some transparent. An all-opaque alpha (a PNG saved with an
unused channel) or an all-transparent one is not, and the photo is treated as plain RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.errors import UserError

OPAQUE = 0.5
"""Alpha at or above which a pixel belongs to the object."""


@dataclass
class Photo:
    """An upright photo. ``rgb`` (H,W,3) uint8; ``alpha`` (H,W) float32 in [0,1] or None."""

    path: Path
    rgb: np.ndarray
    alpha: Optional[np.ndarray]
    mode: str
    """The file's PIL colour mode (``RGB``, ``CMYK``, ``I;16``…), for messages."""

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def has_cutout(self) -> bool:
        """Whether the alpha channel separates an object (some pixels opaque, some transparent)."""
        if self.alpha is None:
            return False
        opaque = self.alpha >= OPAQUE
        return bool(opaque.any() and not opaque.all())

    def on_white(self) -> np.ndarray:
        """(H,W,3) uint8: the RGB composited over white by the alpha channel (as is without one)."""
        if self.alpha is None:
            return self.rgb
        a = self.alpha[..., None]
        return np.round(self.rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)


def load_photo(path: str | Path) -> Photo:
    """Read ``path`` (see the module docstring); UserError if it is missing, unreadable or unsupported."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"photo not found: {p}" if not p.exists() else f"photo {p} is not a file")
    try:
        with Image.open(p) as img:
            img.seek(0)  # an animation gives its first frame
            img.load()
            mode = img.mode
            upright = ImageOps.exif_transpose(img)
            rgb, alpha = _decode(upright, p)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read photo {p}: {str(e).strip().splitlines()[0] or type(e).__name__}") from None
    return Photo(path=p, rgb=rgb, alpha=alpha, mode=mode)


def _decode(img: Any, path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A PIL image → (rgb (H,W,3) uint8, alpha (H,W) float32 or None)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img, dtype=np.float64)
        if grey.min() < 0 or grey.max() > 65535:
            raise UserError(
                f"photo {path} is a 32-bit integer image with values outside 0…65535; save it as 8- or 16-bit"
            )
        return _grey_to_rgb(grey / 65535.0), None
    if img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        if not np.isfinite(grey).all() or grey.min() < 0 or grey.max() > 1:
            raise UserError(f"photo {path} is a floating-point image with values outside [0, 1]; save it as 8-bit")
        return _grey_to_rgb(grey), None
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    if has_alpha:
        return np.ascontiguousarray(arr[..., :3]), arr[..., 3].astype(np.float32) / 255.0
    return arr, None


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """(H,W) in [0,1] → (H,W,3) uint8."""
    return np.repeat(np.round(grey * 255.0).astype(np.uint8)[..., None], 3, axis=-1)
