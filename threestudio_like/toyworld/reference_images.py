"""The shipped toy renders for image-to-3D: ``python -m threestudio_like.toyworld.reference_images``.

One RGBA PNG per toy shape (``assets/toy-images/<colour>_<shape>.png``, the file name is what
the toy-world scorer reads), rendered unlit (albedo, the image-to-3D shading) by our raster
renderer from the reference camera of ``configs/experiment/toy_zero123.yaml``
(:data:`REFERENCE_CAMERA`), 4× supersampled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..data.cameras import make_cameras
from .dataset import render_toy
from .priors import ASSETS

REFERENCE_CAMERA = dict(elevation_deg=15.0, azimuth_deg=0.0, distance=1.8, fovy_deg=45.0)
"""The input view of the toy image-to-3D runs (its distance/FOV are the Zero123 dataset's)."""
IMAGES = ("blue_sphere", "red_cube", "green_cylinder", "yellow_cone", "red_torus", "blue_mug")


def write_reference_images(out_dir: str | Path, size: int = 128, supersample: int = 4) -> list[Path]:
    import imageio.v3 as iio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = REFERENCE_CAMERA
    cams = make_cameras(
        torch.tensor([c["elevation_deg"]]),
        torch.tensor([c["azimuth_deg"]]),
        torch.tensor([c["distance"]]),
        torch.tensor([c["fovy_deg"]]),
        size * supersample,
        size * supersample,
    )
    paths = []
    for name in IMAGES:
        color, shape = name.split("_")
        rgb, alpha = render_toy(shape, color, cams, shading="albedo", supersample=supersample)
        # un-premultiply over white so that compositing the RGBA over white gives the render back
        a = alpha[0]
        fg = ((rgb[0] - (1 - a)) / a.clamp(min=1e-6)).clamp(0, 1) * (a > 0)
        rgba = torch.cat([fg, a], -1)
        path = out / f"{name}.png"
        iio.imwrite(path, (rgba.numpy() * 255).round().astype(np.uint8))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ASSETS / "toy-images"))
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    for path in write_reference_images(args.out, args.size):
        print(path)


if __name__ == "__main__":
    main()
