"""Silhouette consistency of views of one object: how well a set of cameras explains its silhouettes.

The visual hull of silhouettes ``S_i`` seen from cameras ``C_i`` is the set of points that project
inside every silhouette. When the cameras are right, the hull projects back onto each silhouette
exactly; when they are wrong, the silhouettes carve each other and the hull's projections shrink.
:func:`silhouette_consistency` measures that, with soft silhouettes in [0, 1] and without voxels:
for each pixel of each view, points along its ray get the occupancy ``min_i S_i(π_i(x))``
(bilinear look-ups), the hull's projection is the maximum along the ray, and the view's score is
the soft IoU ``Σ min(P, S) / Σ max(P, S)`` of projection ``P`` and silhouette ``S``.

Cameras are those of :mod:`~threestudio_like.data.cameras` (Z up, looking at the origin), all at
one distance and field of view.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.cameras import make_cameras


def silhouette_consistency(
    silhouettes: Tensor,
    elevation_deg: Tensor,
    azimuth_deg: Tensor,
    distance: float,
    fovy_deg: float,
    ray_samples: int = 48,
) -> Tensor:
    """(V,) soft IoU of each view's silhouette with the projection of the visual hull of all of them.

    ``silhouettes`` (V,H,W) in [0, 1], row 0 at the top; ``elevation_deg``/``azimuth_deg`` (V,) the
    cameras, at ``distance`` from the origin with vertical field of view ``fovy_deg``. Rays are
    sampled at ``ray_samples`` depths across the sphere that encloses everything the frame shows
    at the origin's depth.
    """
    v, h, w = silhouettes.shape
    device = silhouettes.device
    cams = make_cameras(
        elevation_deg.float().to(device),
        azimuth_deg.float().to(device),
        torch.full((v,), float(distance), device=device),
        torch.full((v,), float(fovy_deg), device=device),
        h,
        w,
    )
    half_height = distance * math.tan(math.radians(fovy_deg) / 2)
    radius = half_height * math.hypot(1.0, w / h)
    depths = torch.linspace(distance - radius, distance + radius, ray_samples, device=device)
    points = cams.rays_o[..., None, :] + cams.rays_d[..., None, :] * depths[:, None]  # (V,H,W,K,3)
    points = torch.cat([points.reshape(-1, 3), torch.ones(points[..., :1].numel(), 1, device=device)], dim=-1)
    occupancy = torch.ones(points.shape[0], device=device)
    images = silhouettes[:, None].float()
    for i in range(v):
        clip = points @ cams.mvp[i].T
        ndc = clip[:, :2] / clip[:, 3:4]  # the projection flips y: −1 is the top row, as grid_sample's
        inside = F.grid_sample(images[i : i + 1], ndc.view(1, -1, 1, 2), align_corners=False, padding_mode="zeros")
        occupancy = torch.minimum(occupancy, inside.view(-1))
    projection = occupancy.view(v, h, w, ray_samples).amax(dim=-1)
    overlap = torch.minimum(projection, images[:, 0]).sum(dim=(1, 2))
    union = torch.maximum(projection, images[:, 0]).sum(dim=(1, 2))
    return overlap / union.clamp(min=1e-6)


def border_background(rgb: Tensor, window: int = 5) -> Tensor:
    """(B,C,H,W) images → (B,C,H,W) the background each pixel would show, interpolated from the border.

    Each side's 2-pixel strip is averaged across and median-filtered along (``window`` pixels:
    a few object or noise pixels at the edge do not leak in), and the interior is their Coons
    (transfinite) interpolation: exact for a plain background and for any background that is a
    sum of a horizontal and a vertical profile, such as a backdrop shaded with the view's azimuth.
    """
    h, w = rgb.shape[-2:]
    sides = [rgb[..., :2, :].mean(-2), rgb[..., -2:, :].mean(-2), rgb[..., :, :2].mean(-1), rgb[..., :, -2:].mean(-1)]
    pad = window // 2
    top, bottom, left, right = (
        F.pad(side, (pad, pad), mode="replicate").unfold(-1, window, 1).median(dim=-1).values for side in sides
    )
    # 0 and 1 at the strips' centres (half a pixel in from the edges)
    u = (torch.arange(w, device=rgb.device, dtype=rgb.dtype) - 0.5) / (w - 2)
    v = (torch.arange(h, device=rgb.device, dtype=rgb.dtype)[:, None] - 0.5) / (h - 2)
    corner = [(top[..., :1] + left[..., :1]) / 2, (top[..., -1:] + right[..., :1]) / 2]
    corner += [(bottom[..., :1] + left[..., -1:]) / 2, (bottom[..., -1:] + right[..., -1:]) / 2]
    top_left, top_right, bottom_left, bottom_right = (c[..., None] for c in corner)
    rows = (1 - v) * top[..., None, :] + v * bottom[..., None, :]
    columns = (1 - u) * left[..., :, None] + u * right[..., :, None]
    bilinear = (1 - v) * ((1 - u) * top_left + u * top_right) + v * ((1 - u) * bottom_left + u * bottom_right)
    return rows + columns - bilinear


def object_silhouette(rgb: Tensor, low: float = 0.2, high: float = 0.4) -> Tensor:
    """(B,3,H,W) images in [0, 1] of an object on a smooth background → (B,H,W) soft silhouettes.

    The background is interpolated from each image's border (:func:`border_background`); a pixel's
    objectness is its colour distance from it (after a 3×3 box blur, which quiets sampling noise)
    ramped linearly from 0 at ``low`` to 1 at ``high``.
    """
    smooth = F.avg_pool2d(rgb.float(), 3, stride=1, padding=1, count_include_pad=False)
    distance = (smooth - border_background(smooth)).norm(dim=1)
    return ((distance - low) / (high - low)).clamp(0.0, 1.0)


def moment_transform(source: Tensor, target: Tensor) -> Tensor:
    """(1,2,3) the affine map (``F.affine_grid``'s ``theta``: output → input, normalised coordinates)
    that moves and scales the (H,W) soft silhouette ``source`` about its centroid onto ``target``'s
    (H',W') centroid and area (the identity where either is empty). The coordinates are normalised,
    so the map applies at any resolution of a square frame."""
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=source.device)
    area_s, area_t = float(source.sum()) / source.numel(), float(target.sum()) / target.numel()
    if area_s <= 0 or area_t <= 0:
        return theta

    def centroid(s: Tensor) -> Tensor:
        h, w = s.shape
        s = s.to(theta)
        xs = (2 * torch.arange(w, device=s.device, dtype=s.dtype) + 1) / w - 1  # pixel centres (align_corners=False)
        ys = (2 * torch.arange(h, device=s.device, dtype=s.dtype) + 1) / h - 1
        return torch.stack([(s.sum(0) * xs).sum(), (s.sum(1) * ys).sum()]) / s.sum()

    inv = math.sqrt(area_s / area_t)  # 1 / scale: sample the source at c_s + (p - c_t) / scale
    theta[0, 0, 0] = theta[0, 1, 1] = inv
    theta[0, :, 2] = centroid(source) - centroid(target) * inv
    return theta


def warp(images: Tensor, theta: Tensor) -> Tensor:
    """(B,C,H,W) images resampled (bilinear, zeros outside) through ``theta`` (1,2,3) (see :func:`moment_transform`)."""
    grid = F.affine_grid(theta.to(images).expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
