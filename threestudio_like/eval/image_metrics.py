"""Image metrics: MSE and PSNR between images, optionally inside a mask.

Images are (..., H, W, C) tensors (any leading batch dims) with values in ``[0, max_val]``;
a mask is (..., H, W) or (..., H, W, 1), true/1 where pixels count. Reductions are per image
(over H, W, C), so the result has the leading dims' shape.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def mse(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Mean squared error per image: (..., H, W, C) → (...). With a mask, the mean over masked
    pixels (all channels); an image with an empty mask gives NaN."""
    if pred.shape != target.shape or pred.dim() < 3:
        raise ValueError(
            f"mse: pred and target must be (..., H, W, C) of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    err = (pred.double() - target.double()) ** 2
    if mask is None:
        return err.mean(dim=(-3, -2, -1)).to(pred.dtype)
    m = mask.double()
    if m.dim() == err.dim() - 1:
        m = m[..., None]
    m = m.expand_as(err)
    return ((err * m).sum(dim=(-3, -2, -1)) / m.sum(dim=(-3, -2, -1))).to(pred.dtype)


def psnr(pred: Tensor, target: Tensor, max_val: float = 1.0, mask: Optional[Tensor] = None) -> Tensor:
    """Peak signal-to-noise ratio per image in dB: ``10 log10(max_val² / MSE)``; +inf for equal
    images. (..., H, W, C) → (...)."""
    err = mse(pred, target, mask).double()
    return (20.0 * math.log10(max_val) - 10.0 * torch.log10(err)).to(pred.dtype)
