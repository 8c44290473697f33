"""Differentiable Gaussian splatting (3DGS): gsplat on CUDA, a pure-torch twin elsewhere.

``rasterize_gaussians(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near,
far, eps2d, implementation)`` → :class:`SplatResult`, with ``implementation: auto | torch |
gsplat`` (:func:`~.backend.choose_backend`: ``auto`` takes gsplat for CUDA inputs when it is
installed, the twin :mod:`.splat_torch` otherwise).

Inputs (N Gaussians, B cameras; any float dtype, gsplat computes in float32):

- ``means`` (N,3) world positions; ``quats`` (N,4) rotations ``(w, x, y, z)`` (normalised inside);
  ``scales`` (N,3) > 0 standard deviations along the rotated axes; ``opacities`` (N,) in [0,1];
- ``colors`` (N,C) or (B,N,C) (per camera: view-dependent shading), any C: extra channels
  (normals, features) are blended like colour;
- ``viewmats`` (B,4,4) world → camera in the **OpenCV** convention (x right, y down, z forward);
  ``Ks`` (B,3,3) intrinsics in pixels: pixel ``(row i, col j)`` has its centre at
  ``(j + .5, i + .5)``, so a camera centred on the image has ``cx = W/2``, ``cy = H/2``;
- ``near``/``far``: Gaussians whose camera z is outside are culled; ``eps2d``: the low-pass
  filter added to the 2-D covariance's diagonal (pixels², 0.3 in 3DGS and gsplat).

Semantics are gsplat's classic mode (3DGS): EWA projection, alpha ``min(0.99, o·G)``, Gaussians
below alpha 1/255 skipped at a pixel, depth-sorted front-to-back blending stopped before the
transmittance reaches 1e-4 (details in :mod:`.splat_torch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .backend import choose_backend
from .splat_gsplat import gsplat_available, rasterize_gsplat
from .splat_torch import CHUNK_PAIRS, composite, project_gaussians


@dataclass
class SplatResult:
    """What :func:`rasterize_gaussians` returns (B cameras, H×W, N Gaussians).

    ``colors`` (B,H,W,C): ``Σ wᵢ cᵢ``, premultiplied by coverage, no background;
    ``alpha`` (B,H,W,1): ``Σ wᵢ``; ``depth`` (B,H,W,1): ``Σ wᵢ zᵢ``, the alpha-weighted camera z
    (not divided by alpha: 0 where empty; ``depth / alpha`` is the expected depth);
    ``means2d`` (B,N,2): projected centres in pixels — after ``backward()`` its ``.grad`` is the
    image-space positional gradient that 3DGS densification accumulates (in pixels; 3DGS's
    thresholds are in NDC units, ``grad · (W/2, H/2)``); ``radii`` (B,N) int32: footprint
    half-size in pixels (the larger of x and y), 0 for a culled Gaussian.
    """

    colors: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor


def splat_backend(implementation: str, device: torch.device | None) -> str:
    """``'torch'`` or ``'gsplat'`` for inputs on ``device`` (None: only check the request)."""
    return choose_backend(implementation, "gsplat", gsplat_available, device, "splat implementation")


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    implementation: str = "auto",
    chunk_pairs: int = CHUNK_PAIRS,
) -> SplatResult:
    """Render N Gaussians into B views (module docstring); ``chunk_pairs`` bounds the twin's
    transient memory (Gaussian-pixel pairs enumerated at once)."""
    n = _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    b = viewmats.shape[0]
    colors = colors.expand(b, n, colors.shape[-1]) if colors.dim() == 2 else colors
    ch = colors.shape[-1]
    if splat_backend(implementation, means.device) == "gsplat":
        out, alpha, means2d, radii = rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near, far, eps2d
        )
        radii = radii.amax(-1) if radii.dim() == 3 else radii  # gsplat ≥ 1.5: per axis
    else:
        proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d)
        with_depth = torch.cat([colors, proj.depths[..., None].to(colors.dtype)], dim=-1)
        out, alpha = composite(proj, opacities, with_depth, width, height, chunk_pairs)
        means2d, radii = proj.means2d, proj.radii.amax(-1)
    if means2d.requires_grad:
        means2d.retain_grad()
    return SplatResult(
        colors=out[..., :ch], alpha=alpha, depth=out[..., ch:], means2d=means2d, radii=radii.to(torch.int32)
    )


def _check_inputs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
) -> int:
    """N after checking every shape against it and B (a ValueError naming the argument)."""
    n = means.shape[0] if means.dim() == 2 else -1
    b = viewmats.shape[0] if viewmats.dim() == 3 else -1
    expected = {
        "means": (means, (n, 3)),
        "quats": (quats, (n, 4)),
        "scales": (scales, (n, 3)),
        "opacities": (opacities, (n,)),
        "viewmats": (viewmats, (b, 4, 4)),
        "Ks": (Ks, (b, 3, 3)),
    }
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape or min(shape) < 0:
            raise ValueError(f"rasterize_gaussians: {name} must be {shape} (N={n}, B={b}), got {tuple(t.shape)}")
    if colors.dim() not in (2, 3) or colors.shape[-2] != n or (colors.dim() == 3 and colors.shape[0] != b):
        raise ValueError(f"rasterize_gaussians: colors must be (N,C) or (B,N,C), got {tuple(colors.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"rasterize_gaussians: width and height must be > 0, got {width}×{height}")
    return n
