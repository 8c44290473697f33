"""Texture baking: rasterize the mesh in UV space, query the appearance at each texel's surface
point, and dilate the result across chart seams.

1. Each UV vertex goes to clip space ``(2u − 1, 1 − 2v, 0, 1)``: texel ``(row i, col j)`` of an
   ``S × S`` texture (row 0 = top, ``v`` up as in :mod:`.uv_atlas`) is the rasterizer's pixel
   ``(i, j)``, centred at ``u = (j + .5)/S``, ``v = 1 − (i + .5)/S``.
2. The rasterizer gives each covered texel its triangle and barycentrics; the surface point is
   the barycentric mix of the triangle's 3-D corners (``t_pos_idx``).
3. ``appearance_fn(points (N,3)) -> {"albedo": (N,3), "roughness": (N,1)?, "metallic": (N,1)?}``
   is called on chunks of points without gradients; values are clamped to [0, 1].
4. Unseen surface: given the training ``views`` (:mod:`.visibility`), texels whose surface point
   no view saw take the inverse-distance mean of the nearest seen texels in 3-D — the field's
   value there was never constrained by the guidance and may hold anything (its initial value,
   colour pulled over from elsewhere).
5. Seams: texels just outside the charts get the mean of their covered neighbours, ring by ring,
   for ``dilate_px`` rings (bilinear and mipmapped sampling at a chart border then reads colours
   of the surface, not black); every texel still empty afterwards gets the mean colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.base import Mesh
from ..ops.rasterize import Rasterizer
from .visibility import Viewpoints, fill_from_seen, seen_points

AppearanceFn = Callable[[Tensor], Mapping[str, Tensor]]
"""points (N,3) world → {"albedo": (N,3), optional "roughness": (N,1), "metallic": (N,1)} in [0,1]."""

CHANNELS = {"albedo": 3, "roughness": 1, "metallic": 1}


@dataclass
class BakedTextures:
    """Texture maps (row 0 = top = ``v`` 1), float in [0,1] on the mesh's device."""

    albedo: Tensor
    """(S,S,3) base colour."""
    coverage: Tensor
    """(S,S) bool: texels whose centre lies on a triangle (before dilation)."""
    roughness: Optional[Tensor] = None
    """(S,S,1) or None when the appearance function gives none."""
    metallic: Optional[Tensor] = None
    """(S,S,1) or None when the appearance function gives none."""
    seen: Optional[Tensor] = None
    """(S,S) bool: covered texels some training view saw (None when no views were given)."""


def uv_surface_points(mesh: Mesh, texture_size: int, rasterizer: Rasterizer) -> tuple[Tensor, Tensor, Tensor]:
    """Covered texels of the UV layout: ``(texel flat index (N,), surface point (N,3), face (N,))``."""
    if mesh.v_tex is None or mesh.t_tex_idx is None:
        raise ValueError("uv_surface_points: mesh has no UV atlas (run uv_unwrap first)")
    uv = mesh.v_tex.to(mesh.v_pos.dtype)
    clip = torch.stack(
        [2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1], torch.zeros_like(uv[:, 0]), torch.ones_like(uv[:, 0])], dim=-1
    )
    tex_tri = mesh.t_tex_idx.to(torch.int32)
    rast, _ = rasterizer.rasterize(clip[None].contiguous(), tex_tri, (texture_size, texture_size))
    rast = rast[0].reshape(-1, 4)
    texel = torch.nonzero(rast[:, 3] > 0).squeeze(1)
    hit = rast[texel]
    face = hit[:, 3].round().long() - 1
    corners = mesh.v_pos[mesh.t_pos_idx[face]]  # (N,3 corners,3)
    w = torch.stack([hit[:, 0], hit[:, 1], 1 - hit[:, 0] - hit[:, 1]], dim=1)
    return texel, (w[:, :, None] * corners).sum(1), face


def dilate_texture(tex: Tensor, valid: Tensor, iterations: int) -> Tensor:
    """Grow ``tex`` (H,W,C) from ``valid`` (H,W) texels into empty ones, one ring per iteration
    (mean of the valid 8-neighbours); texels still empty at the end get the mean valid value."""
    if not bool(valid.any()):
        return tex
    channels = tex.shape[-1]
    x = (tex * valid[..., None]).permute(2, 0, 1)[None]
    m = valid.to(tex.dtype)[None, None]
    kernel = tex.new_ones(1, 1, 3, 3)
    for _ in range(iterations):
        if bool(m.min() > 0):
            break
        total = F.conv2d(x, kernel.expand(channels, 1, 3, 3), padding=1, groups=channels)
        count = F.conv2d(m, kernel, padding=1)
        grow = (count > 0) & (m == 0)
        x = torch.where(grow, total / count.clamp_min(1), x)
        m = torch.where(grow, torch.ones_like(m), m)
    out = x[0].permute(1, 2, 0)
    mean = tex[valid].mean(0)
    return torch.where(m[0, 0, ..., None] > 0, out, mean)


@torch.no_grad()
def bake_textures(
    mesh: Mesh,
    appearance_fn: AppearanceFn,
    texture_size: int = 1024,
    dilate_px: int = 8,
    chunk_size: int = 65536,
    rasterizer: Optional[Rasterizer] = None,
    views: Optional[Viewpoints] = None,
) -> BakedTextures:
    """Bake ``appearance_fn`` into ``texture_size``² maps over ``mesh``'s UV atlas; with ``views``
    (outward-oriented ``mesh``), texels none of them sees are filled from the seen ones."""
    rasterizer = rasterizer or Rasterizer("auto")
    texel, points, face = uv_surface_points(mesh, texture_size, rasterizer)
    n_texels = texture_size * texture_size
    coverage = torch.zeros(n_texels, dtype=torch.bool, device=points.device)
    coverage[texel] = True
    values: dict[str, list[Tensor]] = {}
    for start in range(0, len(points), chunk_size):
        out = appearance_fn(points[start : start + chunk_size])
        if "albedo" not in out:
            raise ValueError(f"appearance_fn must return 'albedo', got keys {sorted(out)}")
        for name, channels in CHANNELS.items():
            if out.get(name) is not None:
                values.setdefault(name, []).append(out[name].reshape(-1, channels).to(points.dtype).clamp(0, 1))
    seen = None
    if views is not None:
        seen = seen_points(mesh, points, mesh.face_normals()[face], views, rasterizer)
    maps: dict[str, Tensor] = {}
    for name, chunks in values.items():
        value = torch.cat(chunks)
        maps[name] = points.new_zeros(n_texels, value.shape[1])
        maps[name][texel] = value if seen is None else fill_from_seen(value, points, seen)
    if not maps:  # no covered texel: the atlas is degenerate
        maps["albedo"] = points.new_zeros(n_texels, 3)
    valid = coverage.view(texture_size, texture_size)
    done = {name: dilate_texture(t.view(texture_size, texture_size, -1), valid, dilate_px) for name, t in maps.items()}
    seen_map = None
    if seen is not None:
        seen_map = torch.zeros(n_texels, dtype=torch.bool, device=points.device)
        seen_map[texel] = seen
        seen_map = seen_map.view(texture_size, texture_size)
    return BakedTextures(
        albedo=done["albedo"],
        coverage=valid,
        roughness=done.get("roughness"),
        metallic=done.get("metallic"),
        seen=seen_map,
    )
