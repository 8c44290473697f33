"""Image metrics: MSE, PSNR and SSIM between images, optionally inside a mask.

Images are (..., H, W, C) tensors (any leading batch dims) with values in ``[0, max_val]``;
a mask is (..., H, W) or (..., H, W, 1), true/1 where pixels count. Reductions are per image
(over H, W, C), so the result has the leading dims' shape.

SSIM is Wang et al. 2004's: 11×11 Gaussian window (σ 1.5; smaller for images under 11 pixels),
``K1 = 0.01``, ``K2 = 0.03``, each channel on its own, the SSIM map over the window positions
that fit in the image ("valid"), averaged over positions and channels — or, with a mask, over the
positions whose window centre is in the mask.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
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


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def gaussian_window(size: int, sigma: float) -> Tensor:
    """(size,) float64 Gaussian weights summing to 1, centred."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim_map(pred: Tensor, target: Tensor, max_val: float = 1.0) -> Tensor:
    """(..., H, W, C) → (..., H−w+1, W−w+1, C) local SSIM (w: the window side, 11 or the largest
    odd number that fits)."""
    if pred.shape != target.shape or pred.dim() < 3:
        raise ValueError(
            f"ssim: pred and target must be (..., H, W, C) of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    *lead, h, w, c = pred.shape
    size = min(SSIM_WINDOW, h - (1 - h % 2), w - (1 - w % 2))
    g = gaussian_window(size, SSIM_SIGMA).to(pred.device)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, size, size)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, kernel, groups=c)

    x = pred.double().reshape(-1, h, w, c).permute(0, 3, 1, 2)
    y = target.double().reshape(-1, h, w, c).permute(0, 3, 1, 2)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.permute(0, 2, 3, 1).reshape(*lead, *s.shape[-2:], c).to(pred.dtype)


def ssim(pred: Tensor, target: Tensor, max_val: float = 1.0, mask: Optional[Tensor] = None) -> Tensor:
    """Mean SSIM per image (see module docstring): (..., H, W, C) → (...). With a mask, the mean
    over the window positions whose centre is in the mask (NaN when none is)."""
    s = ssim_map(pred, target, max_val).double()
    if mask is None:
        return s.mean(dim=(-3, -2, -1)).to(pred.dtype)
    m = mask.double()
    if m.dim() == pred.dim():
        m = m[..., 0]
    h, w = m.shape[-2:]
    r0, c0 = (h - s.shape[-3]) // 2, (w - s.shape[-2]) // 2
    m = m[..., r0 : r0 + s.shape[-3], c0 : c0 + s.shape[-2], None].expand_as(s)
    return ((s * m).sum(dim=(-3, -2, -1)) / m.sum(dim=(-3, -2, -1))).to(pred.dtype)
