"""Mesh renderer: rasterize the geometry's triangle mesh, shade the visible surface points.

``forward(cameras, geometry, material, background, shading)`` → :class:`RenderOutput` with
rgb (antialiased at silhouettes, so geometry gets gradients there), opacity (antialiased mask),
depth (distance from the camera centre along the ray, 0 where empty), normal (interpolated
world vertex normals, 0 where empty) and ``extras["mesh"]`` (for mesh regularizers).
The mesh is ``geometry.mesh()`` for a :class:`~threestudio_like.geometry.base.SurfaceGeometry`
(DMTet, explicit meshes; differentiable), else the geometry's ``isosurface()`` (detached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..background.base import Background
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

    def __init__(self, cfg=None, where: str = "renderer") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
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
