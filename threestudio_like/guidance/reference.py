"""Losses that tie the render at the *reference* camera to the input image (image-to-3D).

Zero123 and Make-It-3D reconstruct the input view directly while a diffusion prior scores
novel views. The terms, each a plain function of tensors:

* :func:`reference_rgb_loss` — MSE on the object's pixels, or on the whole image against the
  reference composited over a background;
* :func:`reference_mask_loss` — BCE (or MSE) between rendered opacity and the object mask;
* :func:`depth_correlation_loss` — ``1 − Pearson(d_render, d_mono)`` over the foreground
  (Make-It-3D's negative Pearson depth prior): invariant to the unknown scale and shift of a
  monocular depth estimate, 0 for affinely related depths, 2 for negated ones;
* :func:`normal_smoothness_loss` — total variation (mean squared neighbour difference) of the
  rendered normals.

:class:`~threestudio_like.systems.reference_term.ReferenceViewTerm` renders the reference camera
and returns these terms; the stage's ``loss`` dict weights them.

Shapes: images ``(B,H,W,3)``, masks/opacity/depth ``(B,H,W,1)``; a mask is 1 on the object.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import UserError


def reference_rgb_loss(rgb: Tensor, ref_rgb: Tensor, mask: Optional[Tensor] = None,
                       background: Optional[Tensor] = None) -> Tensor:
    """MSE between a render and the reference image.

    ``rgb``, ``ref_rgb`` (B,H,W,3); ``mask`` (B,H,W,1) or None; ``background`` (3,) or
    (B,H,W,3) or None.

    * ``mask`` given, ``background`` None: mean squared error over the object's pixels only,
      ``Σ m·(rgb − ref)² / (3·Σ m)``;
    * ``background`` given: the reference is composited over it (``ref·m + bg·(1 − m)``, with
      ``m = 1`` when there is no mask) and compared on the whole image;
    * neither: plain MSE over the image.
    """
    if background is not None:
        m = torch.ones_like(ref_rgb[..., :1]) if mask is None else mask
        target = ref_rgb * m + background.to(ref_rgb) * (1.0 - m)
        return F.mse_loss(rgb, target)
    if mask is None:
        return F.mse_loss(rgb, ref_rgb)
    sq = (rgb - ref_rgb) ** 2 * mask
    return sq.sum() / (mask.sum() * rgb.shape[-1]).clamp_min(1e-8)


def reference_mask_loss(opacity: Tensor, mask: Tensor, kind: str = "bce") -> Tensor:
    """Rendered opacity (B,H,W,1) vs object mask (B,H,W,1) in [0,1]: mean BCE or MSE."""
    if kind == "bce":
        return F.binary_cross_entropy(opacity.clamp(1e-5, 1.0 - 1e-5), mask.to(opacity))
    if kind == "mse":
        return F.mse_loss(opacity, mask.to(opacity))
    raise UserError(f"mask loss kind must be 'bce' or 'mse', got '{kind}'")


def pearson_correlation(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two 1-D tensors of equal length (a scalar in [−1, 1])."""
    xc, yc = x - x.mean(), y - y.mean()
    return (xc * yc).sum() / (xc.norm() * yc.norm()).clamp_min(eps)


def depth_correlation_loss(depth: Tensor, mono_depth: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """``1 − Pearson(depth, mono_depth)`` over the foreground, averaged over the batch.

    ``depth`` (B,H,W,1) rendered depth; ``mono_depth`` (B,H,W,1) monocular estimate *in the same
    orientation* (larger = farther; negate a disparity map first); ``mask`` (B,H,W,1), pixels
    with ``mask > 0.5`` are used (all pixels when None).
    """
    losses = []
    for b in range(depth.shape[0]):
        keep = (mask[b] > 0.5).reshape(-1) if mask is not None else torch.ones_like(depth[b], dtype=torch.bool).reshape(-1)
        if int(keep.sum()) < 2:
            raise UserError("depth correlation needs at least 2 foreground pixels in the reference mask; check the mask")
        d = depth[b].reshape(-1)[keep]
        m = mono_depth[b].reshape(-1)[keep].to(d)
        losses.append(1.0 - pearson_correlation(d, m))
    return torch.stack(losses).mean()


def normal_smoothness_loss(normal: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Total variation of rendered normals (B,H,W,3): mean of squared differences between
    vertical and horizontal neighbours (over all channels); with ``mask`` (B,H,W,1), only pairs
    whose two pixels are both on the object count."""
    dy = (normal[:, 1:] - normal[:, :-1]) ** 2
    dx = (normal[:, :, 1:] - normal[:, :, :-1]) ** 2
    if mask is None:
        return 0.5 * (dy.mean() + dx.mean())
    my = mask[:, 1:] * mask[:, :-1]
    mx = mask[:, :, 1:] * mask[:, :, :-1]
    c = normal.shape[-1]
    ly = (dy * my).sum() / (my.sum() * c).clamp_min(1e-8)
    lx = (dx * mx).sum() / (mx.sum() * c).clamp_min(1e-8)
    return 0.5 * (ly + lx)
