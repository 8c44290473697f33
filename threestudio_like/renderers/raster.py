"""Mesh renderer: rasterize the geometry's triangle mesh, shade the visible surface points.

``forward(cameras, geometry, material, background, shading)`` → :class:`RenderOutput` with
rgb (antialiased at silhouettes, so geometry gets gradients there), opacity (antialiased mask),
depth (distance from the camera centre along the ray, 0 where empty), normal (interpolated
world vertex normals, 0 where empty) and ``extras["mesh"]`` (for mesh regularizers).
The mesh is ``geometry.mesh()`` for a :class:`~threestudio_like.geometry.base.SurfaceGeometry`
(DMTet, explicit meshes; differentiable), else the geometry's ``isosurface()`` (detached).

Grazing guard (``grazing_elevation_range``): surface whose normal points outside the elevations
the training cameras take (a base below the lowest camera) is seen by them only at a grazing
angle, as a strip at the silhouette, and a prior trained at those elevations has never seen it;
its gradient there pulls the colour towards the background's brightness (whitish patches on a
coloured object). That surface's colour gradient is scaled by :func:`grazing_color_weight` of its
normal (0 when no training elevation sees it at less than ``arccos(grazing_cos[0])``): its colour
stays what the stage started with, and the geometry trains as before.

Border guard (``border_guard_px``): the pixels at a silhouette's edge are where the prior and the
render disagree on where the object ends (at 32², by a pixel); there the prior's image is the
background, and its gradient pulls the surface's colour towards the background's (whitish rims on
a coloured object) instead of moving the edge. Pixels within ``border_guard_px`` of the edge pass
no colour gradient (:func:`interior`); the geometry still gets the antialiased edge's gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ..background.base import Background
from ..core.config import NonNegativeInt
from ..core.errors import UserError
from ..data.cameras import CameraBatch
from ..geometry.base import Geometry, SurfaceGeometry
from ..materials.base import Material
from ..ops.rasterize import Rasterizer
from .base import Renderer, RenderOutput


class RasterRenderer(Renderer):
    """Rasterizer-based renderer (nvdiffrast on CUDA, the pure-torch twin elsewhere)."""

    @dataclass
    class Config:
        implementation: Literal["auto", "torch", "nvdiffrast"] = "auto"
        """Rasterizer backend (ops/rasterize.py)."""
        antialias: bool = True
        """Antialias colour and mask at silhouette edges (gives geometry gradients there)."""
        grazing_elevation_range: Optional[tuple[float, float]] = None
        """Elevations (degrees) the training cameras take, normally the data's
        ``elevation_range``: surface facing outside them gets a smaller colour gradient (grazing
        guard, module docstring); null: off."""
        grazing_cos: tuple[float, float] = (0.8, 0.99)
        """Cosine between the normal and the nearest training elevation below which the colour
        gradient is 0, and above which it is whole (linear between)."""
        border_guard_px: NonNegativeInt = 0
        """Pixels within this many of the silhouette's edge get no colour gradient (border guard,
        module docstring); 0: off."""

    def __init__(self, cfg=None, where: str = "renderer") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        lo, hi = self.cfg.grazing_cos
        if not -1.0 <= lo < hi <= 1.0:
            raise UserError(f"{where}.grazing_cos: need -1 ≤ low < high ≤ 1, got [{lo}, {hi}]")
        self._rasterizer: Rasterizer | None = None

    def rasterizer(self, device: torch.device) -> Rasterizer:
        if self._rasterizer is None:
            self._rasterizer = Rasterizer(self.cfg.implementation, device=device)
        return self._rasterizer

    def forward(
        self,
        cameras: CameraBatch,
        geometry: Geometry,
        material: Material,
        background: Background,
        shading: str = "diffuse",
    ) -> RenderOutput:
        mesh = geometry.mesh() if isinstance(geometry, SurfaceGeometry) else geometry.isosurface()
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        r = self.rasterizer(mesh.v_pos.device)
        faces = mesh.t_pos_idx.to(torch.int32)
        v_hom = torch.cat([mesh.v_pos, torch.ones_like(mesh.v_pos[:, :1])], dim=-1)
        v_clip = torch.einsum("bij,vj->bvi", cameras.mvp.to(v_hom), v_hom).contiguous()
        rast, _ = r.rasterize(v_clip, faces, (h, w))
        mask = rast[..., 3:] > 0
        position, _ = r.interpolate(mesh.v_pos, rast, faces)
        normal, _ = r.interpolate(mesh.vertex_normals(), rast, faces)
        normal = nn.functional.normalize(normal, dim=-1) * mask

        sel = mask[..., 0]
        pts = position[sel]
        cam_pos = cameras.position[:, None, None, :].expand(b, h, w, 3)
        viewdirs = nn.functional.normalize(pts - cam_pos[sel], dim=-1)
        light = cameras.light_position[:, None, None, :].expand(b, h, w, 3)[sel]
        feats = geometry(pts).features
        if self.cfg.grazing_elevation_range is not None and feats.requires_grad:
            weight = grazing_color_weight(
                normal[sel][:, 2].detach(), self.cfg.grazing_elevation_range, self.cfg.grazing_cos
            )
            feats = scale_gradient(feats, weight[:, None])
        if self.cfg.border_guard_px and feats.requires_grad:
            feats = scale_gradient(feats, interior(mask, self.cfg.border_guard_px)[sel][:, None])
        fg = material(feats, viewdirs, normal[sel], light, pts, shading)
        bg = background(cameras.rays_d)
        fg_img = torch.zeros_like(bg).index_put((sel,), fg.to(bg.dtype)) if pts.numel() else torch.zeros_like(bg)
        opacity = mask.to(bg.dtype)
        rgb = torch.lerp(bg, fg_img, opacity)
        if self.cfg.antialias:  # one call for colour and mask
            both = r.antialias(torch.cat([rgb, opacity], dim=-1).contiguous(), rast, v_clip, faces)
            rgb, opacity = both[..., :3], both[..., 3:]
        depth = (position - cam_pos).norm(dim=-1, keepdim=True) * mask
        return RenderOutput(rgb=rgb, opacity=opacity, depth=depth, normal=normal, extras={"mesh": mesh})


def elevation_cosine(normal_z: Tensor, elevation_range: tuple[float, float]) -> Tensor:
    """Cosine between unit normals with z-component ``normal_z`` (any shape; world z up) and the
    nearest direction whose elevation lies in ``elevation_range`` (degrees): 1 for a normal whose
    elevation is in the range, else the cosine of its angle to the range's nearer end. A distant
    camera at an elevation of the range sees such a surface at best at this cosine."""
    elevation = torch.asin(normal_z.clamp(-1.0, 1.0))
    lo, hi = (math.radians(e) for e in elevation_range)
    return torch.cos(elevation - elevation.clamp(lo, hi))


def grazing_color_weight(
    normal_z: Tensor, elevation_range: tuple[float, float], cos_range: tuple[float, float]
) -> Tensor:
    """Colour-gradient weight in [0, 1] of surface with normals ``normal_z``: 0 where
    :func:`elevation_cosine` is at most ``cos_range[0]``, 1 from ``cos_range[1]`` on, linear between."""
    lo, hi = cos_range
    return ((elevation_cosine(normal_z, elevation_range) - lo) / (hi - lo)).clamp(0.0, 1.0)


def interior(mask: Tensor, px: int) -> Tensor:
    """(B,H,W) float: 1 where every pixel within ``px`` (a square window) of a pixel of the
    (B,H,W,1) ``mask`` is covered, else 0 (the mask eroded by ``px``)."""
    empty = (~mask[..., 0]).to(torch.float32)[:, None]
    near_empty = nn.functional.max_pool2d(empty, 2 * px + 1, stride=1, padding=px)
    return 1.0 - near_empty[:, 0]


def scale_gradient(x: Tensor, weight: Tensor) -> Tensor:
    """``x`` unchanged in value; its gradient multiplied by ``weight`` (broadcast to ``x``)."""
    return torch.lerp(x.detach(), x, weight.to(x.dtype))
