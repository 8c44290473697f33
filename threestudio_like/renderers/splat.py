"""Gaussian splatting renderer: shade each Gaussian per view, splat colour and normal in one call.

``forward(cameras, geometry, material, background, shading)`` → :class:`RenderOutput` for a
geometry of 3-D Gaussians (:class:`SplatGeometry`: ``geometry=gaussians``):

1. **Cameras**: our OpenGL camera-to-world matrices (``data/cameras.py``: camera looks down −Z,
   +Y up) become the op's OpenCV world-to-camera matrices (x right, y down, z forward) and
   intrinsics ``f = H / (2 tan(fovy/2))``, ``c = (W/2, H/2)`` — the same pixel centres as
   ``cameras.rays_d`` and ``cameras.mvp``.
2. **Shading**, per view and Gaussian: ``material(features, viewdir, normal, light, mean,
   shading)`` with ``viewdir`` from the camera to the mean and the Gaussian's normal (the axis of
   its smallest scale) flipped to face the camera, so the albedo / diffuse / textureless
   augmentation works as for the other renderers.
3. **Splat** colour and the facing normal (6 channels) with :func:`~threestudio_like.ops.splat.rasterize_gaussians`
   (gsplat on CUDA, the pure-torch twin elsewhere), which also blends camera z.

Outputs: ``rgb = Σ w·c + (1 − opacity)·background(rays_d)``, ``opacity = Σ w``;
``depth = Σ w·z / cos θ`` — each Gaussian's camera depth converted to distance along the pixel's
ray, alpha-weighted and not divided by opacity (0 where empty, like the volume renderer's
``Σ w·t``); ``normal = Σ w·n / opacity`` (alpha-normalised world normals, 0 where empty);
``extras["means2d"]`` (B,N,2), whose ``.grad`` after backward is the image-space gradient that
densification accumulates (pixels), and ``extras["radii"]`` (B,N) int32 footprint half-sizes in
pixels, 0 where a Gaussian is culled in that view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..background.base import Background
from ..core.config import NonNegativeFloat, PositiveFloat
from ..core.errors import UserError
from ..data.cameras import CameraBatch
from ..geometry.base import Geometry
from ..materials.base import Material
from ..ops.splat import rasterize_gaussians, splat_backend
from .base import Renderer, RenderOutput


@runtime_checkable
class SplatGeometry(Protocol):
    """What the renderer reads from a Gaussian geometry (activated, differentiable tensors)."""

    @property
    def means(self) -> Tensor:
        """(N,3) centres."""

    @property
    def quats(self) -> Tensor:
        """(N,4) unit quaternions (w, x, y, z)."""

    @property
    def scales(self) -> Tensor:
        """(N,3) standard deviations along the rotated axes, > 0."""

    @property
    def opacities(self) -> Tensor:
        """(N,1) in [0,1]."""

    @property
    def features(self) -> Tensor:
        """(N,F) material features."""

    def normals(self) -> Tensor:
        """(N,3) unit normals: the rotated axis of the smallest scale."""


def opencv_cameras(cameras: CameraBatch) -> tuple[Tensor, Tensor]:
    """Our OpenGL cameras → (viewmats (B,4,4) world → OpenCV camera, Ks (B,3,3) in pixels)."""
    c2w = cameras.c2w
    rot = c2w[:, :3, :3] * c2w.new_tensor([1.0, -1.0, -1.0])  # columns: right, down, forward
    viewmats = torch.zeros_like(c2w)
    viewmats[:, :3, :3] = rot.transpose(1, 2)
    viewmats[:, :3, 3] = -(rot.transpose(1, 2) @ c2w[:, :3, 3:])[..., 0]
    viewmats[:, 3, 3] = 1.0
    focal = 0.5 * cameras.height / torch.tan(cameras.fovy.to(c2w) / 2)
    ks = torch.zeros_like(c2w[:, :3, :3])
    ks[:, 0, 0], ks[:, 1, 1] = focal, focal
    ks[:, 0, 2], ks[:, 1, 2], ks[:, 2, 2] = cameras.width / 2, cameras.height / 2, 1.0
    return viewmats, ks


class SplatRenderer(Renderer):
    """Differentiable rasterization of 3-D Gaussians (gsplat on CUDA, the pure-torch twin elsewhere)."""

    @dataclass
    class Config:
        implementation: Literal["auto", "torch", "gsplat"] = "auto"
        """Splatting backend (ops/splat.py): gsplat for CUDA inputs when installed, else the twin."""
        near_plane: PositiveFloat = 0.01
        """Gaussians closer to the camera plane than this (camera z) are culled."""
        far_plane: PositiveFloat = 1e10
        """...and farther than this."""
        eps2d: NonNegativeFloat = 0.3
        """Low-pass filter: added to each 2-D covariance's diagonal (pixels²), so every Gaussian
        covers about a pixel (3DGS, gsplat)."""

    def __init__(self, cfg=None, where: str = "renderer") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        splat_backend(self.cfg.implementation, None)  # an unknown or missing backend is an error now
        if self.cfg.far_plane <= self.cfg.near_plane:
            raise UserError(f"{where}.far_plane must be above near_plane, got {self.cfg.far_plane}")

    def forward(
        self,
        cameras: CameraBatch,
        geometry: Geometry,
        material: Material,
        background: Background,
        shading: str = "diffuse",
    ) -> RenderOutput:
        if not isinstance(geometry, SplatGeometry):
            raise UserError(f"renderer=splat draws 3-D Gaussians (geometry=gaussians), got {type(geometry).__name__}")
        c = self.cfg
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        means, feats = geometry.means, geometry.features
        n = means.shape[0]
        # 1. cameras
        viewmats, ks = (t.to(means) for t in opencv_cameras(cameras))
        cam_pos = cameras.c2w[:, :3, 3].to(means)

        # 2. shading per view and Gaussian, normals facing the camera
        to_cam = cam_pos[:, None, :] - means[None]  # (B,N,3)
        normals = geometry.normals()[None].expand(b, n, 3)
        facing = torch.where((normals * to_cam).sum(-1, keepdim=True) < 0, -normals, normals)
        flat = lambda t: t.expand(b, n, t.shape[-1]).reshape(b * n, -1)  # noqa: E731
        rgb = material(
            flat(feats[None]),
            flat(nn.functional.normalize(-to_cam, dim=-1)),
            flat(facing),
            flat(cameras.light_position[:, None, :].to(means)),
            flat(means[None]),
            shading,
        ).reshape(b, n, 3)

        # 3. splat colour and normal together (the op adds camera z)
        out = rasterize_gaussians(
            means,
            geometry.quats,
            geometry.scales,
            geometry.opacities.reshape(n),
            torch.cat([rgb, facing], dim=-1),
            viewmats,
            ks,
            w,
            h,
            near=c.near_plane,
            far=c.far_plane,
            eps2d=c.eps2d,
            implementation=c.implementation,
        )
        rays_d = cameras.rays_d.to(means)
        forward = -cameras.c2w[:, None, None, :3, 2].to(means)  # the OpenGL camera looks down −Z
        cos = (rays_d * forward).sum(-1, keepdim=True)
        opacity = out.alpha
        rgb = out.colors[..., :3] + (1.0 - opacity) * background(rays_d)
        normal = out.colors[..., 3:] / opacity.clamp(min=1e-6)  # |Σ w·n| ≤ Σ w: stays within the unit ball
        return RenderOutput(
            rgb=rgb,
            opacity=opacity,
            depth=out.depth / cos,
            normal=normal,
            extras={"means2d": out.means2d, "radii": out.radii},
        )
