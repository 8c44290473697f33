"""Float image tensors/arrays → uint8 arrays and PNG bytes/files (row 0 = top)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image
from torch import Tensor

from ..core.atomic import atomic_write

ImageLike = Union[Tensor, np.ndarray]
"""(H,W,C) or (H,W) image, C ∈ {1,3,4}: float in [0,1] or uint8."""


def to_uint8(image: ImageLike) -> np.ndarray:
    """(H,W,C) uint8 array from a float [0,1] or uint8 image (tensor or array); (H,W) → (H,W,1)."""
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H,W,C) image with C in 1,3,4, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    return (np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: ImageLike) -> bytes:
    """PNG encoding of an image (1 channel → greyscale, 3 → RGB, 4 → RGBA)."""
    arr = to_uint8(image)
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Union[str, Path], image: ImageLike) -> Path:
    """Write ``image`` as a PNG file (atomically)."""
    data = png_bytes(image)
    return atomic_write(path, lambda f: f.write(data))
