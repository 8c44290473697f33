"""The colour guided filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010; TPAMI 2013).

Filters ``src`` so that its edges follow the edges of the colour ``guide``: in every
(2r+1)² window ω_k the output is a linear function of the guide's colour,

    q_i = a_kᵀ I_i + b_k,   a_k = (Σ_k + ε U)⁻¹ cov_k(I, p),   b_k = mean_k(p) − a_kᵀ mean_k(I),

(Σ_k the guide's 3×3 colour covariance in ω_k, cov_k(I, p) the covariance of the guide's colour
with ``src``), and q_i averages the a_k, b_k of the windows covering pixel i. Where the guide is
flat (variance ≪ ε) the filter smooths; across a colour edge (variance ≫ ε) it snaps ``src`` to
the edge. A soft mask from a low-resolution segmentation, filtered with the photo as the guide,
gets its boundary on the object's edge (the paper's feathering application).

``subsample`` > 1 is the paper's fast variant (He and Sun, 2015): the coefficients are computed on
the guide and ``src`` downsampled by ``subsample`` with the radius scaled down alike, upsampled
(bilinear) and applied to the full-resolution guide — memory and time fall by ``subsample``².
Windows are clipped at the image border (means over the pixels inside). Pure torch; device and
dtype from the inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def box_mean(x: Tensor, radius: int) -> Tensor:
    """(B,C,H,W) → the mean over each pixel's (2r+1)² window, clipped at the border."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int = 1) -> Tensor:
    """``src`` (H,W) filtered with ``guide`` (3,H,W), both floats (the guide in [0, 1] for ``eps``
    to mean a colour variance); window radius ``radius`` pixels (≥ 1) at full resolution."""
    if radius < 1 or eps <= 0 or subsample < 1:
        raise ValueError(f"guided_filter: radius ≥ 1, eps > 0, subsample ≥ 1 (got {radius}, {eps}, {subsample})")
    h, w = src.shape
    full = guide[None]
    if subsample > 1:
        size = (max(1, round(h / subsample)), max(1, round(w / subsample)))
        guide_lo = F.interpolate(full, size, mode="bilinear", align_corners=False, antialias=True)
        src_lo = F.interpolate(src[None, None], size, mode="bilinear", align_corners=False, antialias=True)
        r = max(1, round(radius / subsample))
    else:
        guide_lo, src_lo, r = full, src[None, None], radius
    mean_i, mean_p = box_mean(guide_lo, r), box_mean(src_lo, r)
    cov_ip = box_mean(guide_lo * src_lo, r) - mean_i * mean_p  # (1,3,h,w)
    outer = (guide_lo[:, :, None] * guide_lo[:, None]).flatten(1, 2)  # (1,9,h,w): I_c I_d
    sigma = box_mean(outer, r) - (mean_i[:, :, None] * mean_i[:, None]).flatten(1, 2)
    sigma = sigma.permute(0, 2, 3, 1).unflatten(-1, (3, 3))  # (1,h,w,3,3)
    eye = torch.eye(3, dtype=sigma.dtype, device=sigma.device)
    a = torch.linalg.solve(sigma + eps * eye, cov_ip.permute(0, 2, 3, 1)[..., None])[..., 0].permute(0, 3, 1, 2)
    b = mean_p - (a * mean_i).sum(dim=1, keepdim=True)
    mean_a, mean_b = box_mean(a, r), box_mean(b, r)
    if subsample > 1:
        mean_a = F.interpolate(mean_a, (h, w), mode="bilinear", align_corners=False)
        mean_b = F.interpolate(mean_b, (h, w), mode="bilinear", align_corners=False)
    return ((mean_a * full).sum(dim=1, keepdim=True) + mean_b)[0, 0]
