"""Pure-torch Gaussian splatting: the twin of gsplat's ``rasterization`` (classic mode, pinhole).

Two steps, plain torch ops with autograd (the gradients are autograd's):

1. :func:`project_gaussians` — EWA splatting (Zwicker et al. 2002, as in 3DGS and gsplat): world →
   camera by the view matrix (OpenCV camera: x right, y down, z forward); 3-D covariance
   ``Σ = R S Sᵀ Rᵀ`` from the unit quaternion ``(w, x, y, z)`` and the scales; 2-D covariance
   ``J W Σ Wᵀ Jᵀ + eps2d·I`` with the perspective Jacobian ``J`` taken at the mean, its ``x/z`` and
   ``y/z`` clamped to 1.3× the field of view's half-tangents (gsplat's guard against huge
   off-screen footprints); conic = the 2-D covariance's inverse. Culled (``radii`` 0): camera
   ``z`` outside ``[near, far]``, a non-positive 2-D determinant, opacity below 1/255, or a
   footprint box outside the image. The box half-sizes are gsplat's opacity-aware bound
   ``ceil(k·σ_x)``, ``ceil(k·σ_y)`` with ``k = min(3.33, √(2 ln(255·opacity)))`` — exactly the
   ellipse outside which a Gaussian's alpha is below 1/255 (the 3σ rule, tightened by opacity).
2. :func:`composite` — front-to-back alpha blending with 3DGS's rules, as gsplat's CUDA kernel:
   at a pixel centre ``p`` (pixel ``(row i, col j)`` has its centre at ``(j + .5, i + .5)``)
   ``α = min(0.99, o·exp(−½ dᵀ Σ⁻¹ d))``, ``d = p − mean``; a Gaussian with ``α < 1/255`` is
   skipped; Gaussians blend in increasing camera ``z`` (ties by index) with weight ``α·T``,
   ``T = Π(1 − α)`` of those before; a pixel stops at the first Gaussian that would bring ``T``
   to 1e-4 or below, that one excluded.

How the blending is computed (per-Gaussian pixel bounds, no tiles): the visible (camera, Gaussian)
pairs are put in depth order and taken in chunks of about ``chunk_pairs`` (Gaussian, pixel) pairs
of their boxes, so transient memory is bounded (small chunks are also faster on CPU: their
tensors stay in cache and in the allocator's reused blocks). For each Gaussian and each row of
its box, the pixels with ``α ≥ 1/255`` are an interval: the ellipse ``½ dᵀ Σ⁻¹ d ≤ ln(255·o)``
solved for x at the row's centre (in float64, widened by a hair so rounding never drops a pixel;
the few extra pairs get ``α = 0``). A chunk's pairs are stably sorted by pixel, so each pixel's
pairs form a run in depth order; ``log T`` is a segmented cumulative sum of ``log(1 − α)``
(float64, so subtracting a run's start stays exact) plus the log transmittance carried from
earlier chunks. The stop rule is a mask: ``T`` counting every pair is non-increasing, so "the
pairs before the first one that brings ``T`` to 1e-4" are "the pairs that leave ``T`` above
1e-4"; pixels stopped by earlier chunks drop out of later ones. Colours and alpha are summed per
pixel in one ``index_add``. Autograd keeps about 25 bytes per blended pair for the backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_ALPHA = 0.99
"""Per-Gaussian alpha clamp (3DGS, gsplat)."""
ALPHA_THRESHOLD = 1.0 / 255.0
"""Gaussians below this alpha at a pixel are skipped there."""
TRANSMITTANCE_THRESHOLD = 1e-4
"""A pixel stops before the Gaussian that would bring its transmittance to this or below."""
EXTENT_SIGMAS = 3.33
"""Largest footprint half-size in standard deviations (gsplat)."""
FOV_CLAMP = 1.3
"""The Jacobian's x/z and y/z are clamped to this multiple of the field of view's half-tangents."""
CHUNK_PAIRS = 1 << 18
"""Default (Gaussian, pixel) box pairs enumerated at once (tens of MB of transients; fastest on
CPU among 2^16–2^20 at 5k–50k Gaussians, 128²–256²)."""


@dataclass
class Projection:
    """Gaussians seen by B cameras. ``means2d`` (B,N,2) pixel coordinates (x right, y down);
    ``conics`` (B,N,3) ``(a, b, c)`` with ``Σ₂⁻¹ = [[a, b], [b, c]]``; ``depths`` (B,N) camera z;
    ``radii`` (B,N,2) int32 footprint half-sizes along x and y in pixels, 0 where culled."""

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(N,4) quaternions ``(w, x, y, z)`` (normalised here) → (N,3,3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    """means (N,3), quats (N,4), scales (N,3), opacities (N,), viewmats (B,4,4) world → camera,
    Ks (B,3,3) → :class:`Projection` (module docstring, step 1)."""
    rot = viewmats[:, :3, :3]
    p = torch.einsum("bij,nj->bni", rot, means) + viewmats[:, None, :3, 3]  # (B,N,3) camera space
    x, y, z = p.unbind(-1)
    in_depth = (z >= near) & (z <= far)
    z = torch.where(in_depth, z, torch.ones_like(z))  # culled ones stay finite (no NaN gradients)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    u, v = x / z, y / z
    means2d = torch.stack([fx * u + cx, fy * v + cy], dim=-1)

    # J (2×3) at the clamped direction, times W (camera rotation), times R·S: T = J W R S, Σ₂ = T Tᵀ.
    slack = FOV_CLAMP - 1.0
    tu = u.clamp(-(cx / fx + slack * 0.5 * width / fx), (width - cx) / fx + slack * 0.5 * width / fx)
    tv = v.clamp(-(cy / fy + slack * 0.5 * height / fy), (height - cy) / fy + slack * 0.5 * height / fy)
    j0 = torch.stack([fx / z, torch.zeros_like(z), -fx * tu / z], dim=-1)  # (B,N,3): row 0 of J
    j1 = torch.stack([torch.zeros_like(z), fy / z, -fy * tv / z], dim=-1)
    rs = quat_to_rotmat(quats) * scales[:, None, :]  # (N,3,3) = R S
    jw = torch.stack([j0, j1], dim=-2) @ rot[:, None]  # (B,N,2,3)
    t = jw @ rs  # (B,N,2,3)
    c00 = t[..., 0, :].square().sum(-1) + eps2d
    c11 = t[..., 1, :].square().sum(-1) + eps2d
    c01 = (t[..., 0, :] * t[..., 1, :]).sum(-1)
    det = c00 * c11 - c01 * c01
    ok = in_depth & (det > 0)
    inv_det = 1.0 / torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c11 * inv_det, -c01 * inv_det, c00 * inv_det], dim=-1)

    with torch.no_grad():
        o = opacities.detach()[None].expand_as(z)
        keep = ok & (o >= ALPHA_THRESHOLD)
        k = torch.sqrt(2.0 * torch.log(o.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=EXTENT_SIGMAS)
        rx = torch.ceil(k * c00.detach().sqrt())
        ry = torch.ceil(k * c11.detach().sqrt())
        mx, my = means2d.detach().unbind(-1)
        keep &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = (torch.stack([rx, ry], dim=-1) * keep[..., None]).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=p[..., 2], radii=radii)


def composite(
    proj: Projection,
    opacities: Tensor,
    colors: Tensor,
    width: int,
    height: int,
    chunk_pairs: int = CHUNK_PAIRS,
) -> tuple[Tensor, Tensor]:
    """Blend ``colors`` (B,N,C) of the projected Gaussians (opacities (N,)) front to back →
    ``(accumulated (B,H,W,C), alpha (B,H,W,1))``, no background (module docstring, step 2)."""
    b, n = proj.depths.shape
    ch = colors.shape[-1]
    n_pix = b * height * width
    # Per (camera, Gaussian) tables gathered per pair: 1-D components (index_select of 1-D
    # tensors is the fast gather on CPU), colours with a ones column so alpha sums with them.
    mx, my = proj.means2d.reshape(-1, 2).unbind(-1)
    ca, cb, cc = proj.conics.reshape(-1, 3).unbind(-1)
    op = opacities.expand(b, n).reshape(-1)
    table = torch.cat([colors, torch.ones_like(colors[..., :1])], dim=-1).reshape(b * n, ch + 1)
    tables = (mx, my, ca, cb, cc, op, table)

    with torch.no_grad():
        fp = _Footprints(proj, opacities, width, height)
    out = colors.new_zeros(n_pix, ch + 1)
    log_t = colors.new_zeros(n_pix)  # log transmittance over every pair so far
    for s, e in fp.chunks(chunk_pairs):
        out, log_t = _blend(fp, s, e, *tables, out, log_t)
    out = out.reshape(b, height, width, ch + 1)
    return out[..., :ch], out[..., ch:]


def _blend(
    fp: _Footprints,
    s: int,
    e: int,
    mx: Tensor,
    my: Tensor,
    ca: Tensor,
    cb: Tensor,
    cc: Tensor,
    op: Tensor,
    table: Tensor,
    out: Tensor,
    log_t: Tensor,
) -> tuple[Tensor, Tensor]:
    """Blend the footprints of depth-ordered Gaussians ``s:e`` into ``out`` (P,C+1) behind the
    log transmittance ``log_t`` (P,) of everything before → the updated ``(out, log_t)``."""
    log_stop = math.log(TRANSMITTANCE_THRESHOLD)
    with torch.no_grad():
        fl, pix = fp.pairs(s, e)
        if s > 0:  # pixels stopped by earlier Gaussians drop out
            live = (log_t.index_select(0, pix) > log_stop).nonzero().squeeze(1)
            fl, pix = fl.index_select(0, live), pix.index_select(0, live)
        key_dtype = torch.int32 if out.shape[0] < 2**31 else torch.int64  # int32 sorts ~1.6× faster
        pix, perm = torch.sort(pix.to(key_dtype), stable=True)  # runs of one pixel, in depth order
        pix = pix.long()  # index_add is ~6× slower with int32 indices
        fl = fl.index_select(0, perm)
        run_start = torch.ones_like(pix, dtype=torch.bool)
        run_start[1:] = pix[1:] != pix[:-1]
        run_first = run_start.nonzero().squeeze(1).index_select(0, torch.cumsum(run_start, 0).sub_(1))
        py = torch.div(pix % fp.image_size, fp.width, rounding_mode="floor")
        px = (pix % fp.width).to(out.dtype).add_(0.5)
        py = py.to(out.dtype).add_(0.5)
    dx = px - mx.index_select(0, fl)
    dy = py - my.index_select(0, fl)
    quad = ca.index_select(0, fl) * dx * dx + cc.index_select(0, fl) * dy * dy
    sigma = 0.5 * quad + cb.index_select(0, fl) * dx * dy
    alpha = (op.index_select(0, fl) * torch.exp(-sigma)).clamp(max=MAX_ALPHA)
    alpha = alpha * (alpha.detach() >= ALPHA_THRESHOLD)  # the footprints' margin pairs
    log_1m = torch.log1p(-alpha)
    excl = torch.cumsum(log_1m.double(), 0) - log_1m  # Σ log(1 − α) of the pairs before, float64
    log_t_before = (excl - excl.index_select(0, run_first)).to(out.dtype) + log_t.index_select(0, pix)
    with torch.no_grad():
        blend = (log_t_before + log_1m) > log_stop
    weight = alpha * torch.exp(log_t_before) * blend
    out = out.index_add(0, pix, table.index_select(0, fl) * weight[:, None])
    return out, log_t.index_add(0, pix, log_1m)


class _Footprints:
    """The pixels each visible Gaussian can reach (alpha ≥ 1/255), row by row, without autograd.

    Visible (camera, Gaussian) pairs are taken camera-major, each camera's in increasing depth
    (ties by index). A Gaussian's rows are those of its box (``radii``); on each row the pixels
    are the ellipse ``½ dᵀ Σ⁻¹ d ≤ ln(255·o)`` solved for x at the row's centre (float64, widened
    by a small margin so that rounding never drops a pixel; the margin's pairs get alpha 0)."""

    def __init__(self, proj: Projection, opacities: Tensor, width: int, height: int) -> None:
        n = proj.depths.shape[1]
        self.width, self.image_size = width, width * height
        vis = (proj.radii > 0).all(-1).reshape(-1).nonzero().squeeze(1)
        by_depth = vis.index_select(0, torch.sort(proj.depths.detach().reshape(-1)[vis], stable=True).indices)
        cam = torch.div(by_depth, n, rounding_mode="floor")
        self.order = by_depth.index_select(0, torch.sort(cam, stable=True).indices)
        take = lambda t: t.detach().reshape(-1, t.shape[-1]).index_select(0, self.order).double()  # noqa: E731
        self.gx, self.gy = take(proj.means2d).unbind(-1)
        rx, ry = take(proj.radii).unbind(-1)
        self.conic = take(proj.conics)
        self.box_w = (2 * rx + 1).clamp(max=width).long()
        self.y0 = torch.ceil(self.gy - ry - 0.5).clamp(min=0).long()
        y1 = torch.floor(self.gy + ry - 0.5).clamp(max=height - 1).long()
        self.rows = (y1 - self.y0 + 1).clamp(min=0)
        level = torch.log(opacities.detach().double().index_select(0, self.order % n) / ALPHA_THRESHOLD)
        self.level = level + 1e-4 * (1.0 + level.abs())
        self.row_base = torch.div(self.order, n, rounding_mode="floor") * (height * width) + self.y0 * width

    def chunks(self, chunk_pairs: int) -> list[tuple[int, int]]:
        """Runs ``[s, e)`` of the depth-ordered Gaussians with about ``chunk_pairs`` pairs each
        (bounded by box sizes; a run holds at least one Gaussian). With none visible, one empty
        run: blending nothing still ties the outputs to the inputs, so backward works."""
        g = self.order.numel()
        if g == 0:
            return [(0, 0)]
        ends = torch.cumsum(self.rows * self.box_w, 0)  # pairs of the boxes: a bound on the footprints'
        marks = torch.arange(1, int(ends[-1]) // chunk_pairs + 1, device=ends.device) * chunk_pairs
        edges = sorted({0, *(min(int(c) + 1, g) for c in torch.searchsorted(ends, marks).tolist()), g})
        return list(zip(edges[:-1], edges[1:]))

    def pairs(self, s: int, e: int) -> tuple[Tensor, Tensor]:
        """Gaussians ``s:e`` → (flat ``camera·N + Gaussian`` index, pixel id) per footprint pixel."""
        dev = self.order.device
        rows = self.rows[s:e]
        n_rows = int(rows.sum())
        rg = torch.repeat_interleave(torch.arange(s, e, device=dev), rows, output_size=n_rows)
        dyi = torch.arange(n_rows, device=dev) - (torch.cumsum(rows, 0) - rows).index_select(0, rg - s)  # row − y0
        dy = (self.y0.index_select(0, rg) + dyi).double() + 0.5 - self.gy.index_select(0, rg)
        a, b, c = self.conic.index_select(0, rg).unbind(-1)
        bdy = b * dy
        disc = bdy * bdy - a * (c * dy * dy - 2.0 * self.level.index_select(0, rg))
        half = torch.sqrt(disc.clamp(min=0.0)) / a
        cx = self.gx.index_select(0, rg) - 0.5 - bdy / a
        x0 = torch.ceil(cx - half).clamp(min=0).long()
        x1 = torch.floor(cx + half).clamp(max=self.width - 1).long()
        count = torch.where(disc >= 0, (x1 - x0 + 1).clamp(min=0), torch.zeros_like(x0))
        total = int(count.sum())
        pr = torch.repeat_interleave(torch.arange(n_rows, device=dev), count, output_size=total)
        # pixel id = the row's first footprint pixel + the pair's offset along the row
        shift = self.row_base.index_select(0, rg) + dyi * self.width + x0 - (torch.cumsum(count, 0) - count)
        pix = shift.index_select(0, pr) + torch.arange(total, device=dev)
        return self.order.index_select(0, rg).index_select(0, pr), pix
