"""Adapter to gsplat's CUDA rasterizer (``pip install threestudio_like[cuda]``).

gsplat is imported only inside :func:`rasterize_gsplat`, never at import time (its CUDA extension
is built or loaded on first use). ``gsplat.rasterization`` runs in its classic mode, unpacked,
with ``render_mode="RGB+D"`` (the last channel is the alpha-weighted camera z, as the twin's);
inputs are made float32 as its kernels require and the outputs are cast back.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor


def gsplat_available() -> bool:
    """Whether ``import gsplat`` can succeed (checked without importing it)."""
    return importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shapes as :func:`threestudio_like.ops.splat.rasterize_gaussians` (colors (B,N,C)) →
    ``(colors + depth (B,H,W,C+1), alpha (B,H,W,1), means2d (B,N,2), radii (B,N,2) or (B,N))``."""
    from gsplat import rasterization

    f32 = lambda t: t.to(torch.float32).contiguous()  # noqa: E731
    render, alpha, meta = rasterization(
        f32(means),
        f32(quats),
        f32(scales),
        f32(opacities),
        f32(colors),
        f32(viewmats),
        f32(Ks),
        width,
        height,
        near_plane=near,
        far_plane=far,
        eps2d=eps2d,
        packed=False,
        render_mode="RGB+D",
        rasterize_mode="classic",
    )
    dtype = colors.dtype
    return render.to(dtype), alpha.to(dtype), meta["means2d"], meta["radii"]
