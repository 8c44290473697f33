"""Two-view fitting (issue 4): a NeRF and a DMTet mesh each fit renders of a cube made by the
raster twin. The image error must fall far below what the initial shapes give: the threshold
is a PSNR that a wrong silhouette cannot reach (one wrong pixel row on a 32² view costs ≈ 3% of
pixels, i.e. PSNR ≈ 15 dB against a white/red image with error 1 per channel)."""

import math

import pytest
import torch
import trimesh

from threestudio_like.background.base import SolidBackground
from threestudio_like.data.cameras import make_cameras
from threestudio_like.geometry.dmtet import DMTetGeometry
from threestudio_like.geometry.implicit_volume import ImplicitVolume
from threestudio_like.materials.base import NoMaterial
from threestudio_like.ops.rasterize import Rasterizer
from threestudio_like.renderers.raster import RasterRenderer
from threestudio_like.renderers.volume import VolumeRenderer

RES = 32


def _cameras():
    t = lambda *v: torch.tensor([float(x) for x in v])  # noqa: E731
    return make_cameras(t(20, 35), t(30, 120), t(2.5, 2.5), t(40, 40), RES, RES)


def _target(cams):
    """A red cube of half-size 0.4 on white, rendered by the raster twin (hard silhouettes)."""
    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    v = torch.tensor(box.vertices, dtype=torch.float32)
    f = torch.tensor(box.faces, dtype=torch.int32)
    clip = torch.einsum("bij,vj->bvi", cams.mvp, torch.cat([v, torch.ones(len(v), 1)], 1))
    rast, _ = Rasterizer("torch").rasterize(clip.contiguous(), f, (RES, RES))
    mask = (rast[..., 3:] > 0).float()
    red = torch.tensor([1.0, 0.0, 0.0])
    return mask * red + (1 - mask)


def _psnr(a, b):
    return -10 * math.log10(float(((a - b) ** 2).mean()))


def _fit(geometry, renderer, cams, target, steps, lr):
    material, background = NoMaterial(), SolidBackground()
    opt = torch.optim.Adam(geometry.parameters(), lr=lr)
    first = None
    for step in range(steps):
        renderer.update_step(0, step)
        out = renderer(cams, geometry, material, background, shading="albedo")
        loss = ((out.rgb - target) ** 2).mean()
        first = first if first is not None else _psnr(out.rgb.detach(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    renderer.eval()
    with torch.no_grad():
        final = _psnr(renderer(cams, geometry, material, background, shading="albedo").rgb, target)
    return first, final


@pytest.mark.slow
def test_nerf_fits_two_views_of_a_cube():
    torch.manual_seed(0)
    cams = _cameras()
    target = _target(cams)
    geo = ImplicitVolume(
        {
            "radius": 1.0,
            "normal_type": "none",
            "isosurface_resolution": 32,
            "pos_encoding_config": {
                "n_levels": 8,
                "log2_hashmap_size": 14,
                "base_resolution": 8,
                "per_level_scale": 1.5,
            },
        }
    )
    ren = VolumeRenderer(
        {"num_samples_per_ray": 48, "grid_resolution": 16, "grid_warmup_steps": 0, "grid_update_every": 8}
    )
    first, final = _fit(geo, ren, cams, target, steps=150, lr=0.03)
    assert first < 12.0, first  # the initial blob is far off
    assert final > 20.0, (first, final)


@pytest.mark.slow
def test_dmtet_fits_two_views_of_a_cube():
    torch.manual_seed(0)
    cams = _cameras()
    target = _target(cams)
    geo = DMTetGeometry(
        {
            "radius": 1.0,
            "isosurface_resolution": 16,
            "shape_init_radius": 0.6,
            "pos_encoding_config": {"n_levels": 4, "log2_hashmap_size": 12, "base_resolution": 4},
        }
    )
    first, final = _fit(geo, RasterRenderer({"implementation": "torch"}), cams, target, steps=150, lr=0.01)
    assert final > 20.0 and final > first + 3.0, (first, final)
