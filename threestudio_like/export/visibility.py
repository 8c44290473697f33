"""Which surface points the training cameras saw, and filling the ones they did not.

:func:`training_viewpoints` places cameras over the run's training camera ranges (a grid in
elevation × azimuth). :func:`seen_points` tests surface points against them with a shadow map:
the mesh is rasterized from every camera, and a point is seen by a camera when it faces it (at
less than ``arccos(min_cos)`` from its normal: a surface seen only edge-on is not constrained by
the view), projects inside the image, and its view depth is at most the depth the rasterization
kept at that pixel plus ``tolerance_px`` pixel footprints (the usual shadow-map bias, so that a
point does not occlude itself). :func:`fill_from_seen` gives every unseen point the
inverse-distance mean of its nearest seen points: a surface no view constrained (the underside
of an object seen from above) takes the colour of the surface around it instead of whatever the
appearance field holds there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data.cameras import look_at, projection_matrix, spherical_to_position
from ..geometry.base import Mesh
from ..ops.rasterize import Rasterizer


@dataclass
class Viewpoints:
    """B square pinhole cameras (``data/cameras.py`` conventions), without rays."""

    mvp: Tensor
    """(B,4,4) world → clip space."""
    position: Tensor
    """(B,3) camera centres."""
    fovy: Tensor
    """(B,) vertical field of view in radians."""
    resolution: int
    """Side of the rasterized depth maps in pixels."""


def training_viewpoints(
    elevation_range: tuple[float, float],
    azimuth_range: tuple[float, float],
    distance: float,
    fovy_deg: float,
    resolution: int = 256,
    n_elevations: int = 7,
    n_azimuths: int = 24,
) -> Viewpoints:
    """``n_elevations × n_azimuths`` cameras looking at the origin, elevations and azimuths evenly
    spaced over the ranges (ends included; a full 360° azimuth range without repeating its end)."""
    elevation = torch.linspace(float(elevation_range[0]), float(elevation_range[1]), n_elevations)
    a0, a1 = float(azimuth_range[0]), float(azimuth_range[1])
    full_turn = a1 - a0 >= 360.0
    azimuth = torch.linspace(a0, a1, n_azimuths + int(full_turn))[: n_azimuths if full_turn else None]
    e, a = (x.reshape(-1) for x in torch.meshgrid(elevation, azimuth, indexing="ij"))
    position = spherical_to_position(e, a, torch.full_like(e, float(distance)))
    fovy = torch.deg2rad(torch.full_like(e, float(fovy_deg)))
    mvp = projection_matrix(fovy, 1.0) @ torch.linalg.inv(look_at(position))
    return Viewpoints(mvp=mvp, position=position, fovy=fovy, resolution=resolution)


@torch.no_grad()
def seen_points(
    mesh: Mesh,
    points: Tensor,
    normals: Tensor,
    views: Viewpoints,
    rasterizer: Rasterizer,
    min_cos: float = 0.25,
    tolerance_px: float = 2.0,
    chunk: int = 8,
) -> Tensor:
    """(N,) bool: whether any of ``views`` sees ``points`` (N,3) with outward ``normals`` (N,3)
    on ``mesh`` (see the module docstring)."""
    device, dtype = points.device, points.dtype
    v = torch.cat([mesh.v_pos.to(dtype), torch.ones_like(mesh.v_pos[:, :1], dtype=dtype)], dim=1)
    p = torch.cat([points, torch.ones_like(points[:, :1])], dim=1)
    tri = mesh.t_pos_idx.to(torch.int32)
    h = w = views.resolution
    seen = torch.zeros(len(points), dtype=torch.bool, device=device)
    for start in range(0, len(views.mvp), chunk):
        mvp = views.mvp[start : start + chunk].to(device, dtype)
        position = views.position[start : start + chunk].to(device, dtype)
        fovy = views.fovy[start : start + chunk].to(device, dtype)
        clip = torch.einsum("bij,vj->bvi", mvp, v).contiguous()
        rast, _ = rasterizer.rasterize(clip, tri, (h, w))
        depth, _ = rasterizer.interpolate(clip[..., 3:].contiguous(), rast, tri)  # view depth (clip w)
        depth = torch.where(rast[..., 3:] > 0, depth, torch.full_like(depth, float("inf")))[..., 0]
        pc = torch.einsum("bij,nj->bni", mvp, p)  # (B,N,4)
        pw = pc[..., 3]
        col = torch.floor((pc[..., 0] / pw + 1) * 0.5 * w).long()
        row = torch.floor((pc[..., 1] / pw + 1) * 0.5 * h).long()
        inside = (pw > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        b = torch.arange(len(pc), device=device)[:, None].expand_as(col)
        kept = depth[b, row.clamp(0, h - 1), col.clamp(0, w - 1)]
        footprint = pw * 2 * torch.tan(fovy[:, None] / 2) / h
        to_camera = torch.nn.functional.normalize(position[:, None] - points, dim=-1)
        facing = torch.einsum("nk,bnk->bn", normals, to_camera) > min_cos
        seen |= (inside & facing & (pw <= kept + tolerance_px * footprint)).any(0)
    return seen


def fill_from_seen(values: Tensor, points: Tensor, seen: Tensor, k: int = 8) -> Tensor:
    """``values`` (N,C) with every unseen row replaced by the inverse-distance-weighted mean of the
    values at its ``k`` nearest seen ``points`` (N,3); unchanged when none or all are seen."""
    from scipy.spatial import cKDTree  # here: scipy.spatial is 0.25 s of every run's start-up otherwise

    if bool(seen.all()) or not bool(seen.any()):
        return values
    seen_np = seen.cpu().numpy()
    pts = points.detach().cpu().double().numpy()
    tree = cKDTree(pts[seen_np])
    k = min(k, int(seen_np.sum()))
    dist, idx = tree.query(pts[~seen_np], k=k)
    dist, idx = dist.reshape(len(dist), k), idx.reshape(len(idx), k)
    weight = 1.0 / np.maximum(dist, 1e-12)
    weight /= weight.sum(1, keepdims=True)
    src = values[seen].detach().cpu().double().numpy()
    filled = np.einsum("nk,nkc->nc", weight, src[idx])
    out = values.clone()
    out[~seen] = torch.from_numpy(filled).to(values)
    return out
