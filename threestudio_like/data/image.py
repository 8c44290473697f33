"""Reading input images: the one image reader of the package.

``read_image(path)`` → (H,W,C) float32 in [0,1] (8/16-bit or float files, C = 1..4), which all
the loaders below go through:

* ``load_image(path)`` → rgb (1,H,W,3) in [0,1], alpha composited over white (CLIP and Zero123
  reference images);
* ``load_rgba(path, (H, W))`` → rgb (1,H,W,3) in [0,1] and mask (1,H,W,1) from the alpha channel
  (an RGBA PNG as made by ``preprocess`` or any segmentation tool);
* ``load_depth(path, (H, W))`` → (1,H,W,1) float from a ``.npy`` array or a 8/16-bit grayscale
  image.

Resizing uses area averaging. Problems with the files are :class:`UserError`\\ s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.errors import UserError


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(1,h,w,C) → (1,H,W,C) by area (downsampling) or bilinear (upsampling) interpolation."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    chw = x.permute(0, 3, 1, 2)
    mode = "area" if x.shape[1] >= size[0] and x.shape[2] >= size[1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(chw, size=size, mode=mode, **kwargs).permute(0, 2, 3, 1)


def read_image(path: str | Path, what: str = "image") -> np.ndarray:
    """(H,W,C) float32 in [0,1] (C = 1, 2, 3 or 4: grey, grey + alpha, RGB, RGBA); ``what`` names
    the file in errors. 8- and 16-bit files are scaled by their range; CMYK, palette and other
    colour modes are converted to RGB(A); an animation gives its first frame."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(str(path))
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        with Image.open(p) as img:
            img.seek(0)
            img.load()
            arr = _pixels(ImageOps.exif_transpose(img))  # as the camera held it
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read {what} {p}: {e}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _pixels(img: Any) -> np.ndarray:
    """A PIL image's pixels as float32 in [0,1], (H,W) or (H,W,C)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img, dtype=np.float32) / 65535.0
    if img.mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = img.mode in ("PA", "La", "RGBa") or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def load_image(path: str | Path, what: str = "image") -> Tensor:
    """Image file → (1,H,W,3) in [0,1]; an alpha channel is composited over white (the
    background CLIP targets and Zero123 references expect), grey is repeated to RGB."""
    arr = read_image(path, what)
    if arr.shape[-1] in (2, 4):
        arr = arr[..., :-1] * arr[..., -1:] + (1.0 - arr[..., -1:])
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(arr))[None]


def load_rgba(path: str | Path, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """RGBA image → (rgb (1,H,W,3), mask (1,H,W,1)); rgb is straight (not premultiplied)."""
    arr = read_image(path)
    if arr.shape[-1] != 4:
        raise UserError(
            f"image {path} has no alpha channel: give an RGBA PNG with the object segmented "
            "(background transparent), e.g. from `python -m threestudio_like.preprocess`"
        )
    t = _resize(torch.from_numpy(arr)[None], size)
    return t[..., :3].clamp(0, 1), (t[..., 3:] > 0.5).float()


def read_depth(path: str | Path) -> np.ndarray:
    """Depth or disparity map (.npy, or a grayscale image) → (H,W,1) float32."""
    p = Path(str(path))
    if p.suffix != ".npy":
        return read_image(p, what="depth map")[..., :1]
    if not p.is_file():
        raise UserError(f"depth map not found: {p}")
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read depth map {p}: {e}") from None
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 1) or not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"depth map {p} must be a 2-D array (H, W) of numbers, got shape {arr.shape} {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise UserError(f"depth map {p} holds NaN or infinite values")
    return arr[..., None] if arr.ndim == 2 else arr


def load_depth(path: str | Path, size: tuple[int, int]) -> Tensor:
    """Depth or disparity map (.npy, or grayscale image) → (1,H,W,1) float at ``size``."""
    return _resize(torch.from_numpy(np.ascontiguousarray(read_depth(path)))[None], size)
