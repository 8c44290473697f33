"""Toy photos: a toy object composited onto a cluttered background, with its truths.

The world the photo preprocessing (SAM, BLIP, depth: ``threestudio_like.preprocess``) is trained
and measured in. ``python -m threestudio_like.toyworld.photos`` writes the shipped ones
(``assets/toy-photos``: :func:`write_photos`). Each photo is deterministic from its seed
(:meth:`ToyPhotoMaker.photo`):

1. the **object**: a toy shape × colour rendered by our raster renderer and Lambertian material
   (the toy dataset's, :class:`~.dataset.ToyShapeGeometry`) from a Zero123-style camera (distance
   1.8, FOV 45°, looking at the origin; elevation and azimuth drawn), lit by a point light near the
   camera (or unlit albedo), 2× supersampled, in a square render frame whose side sets the
   object's size in the photo (it spans about 0.6 of its frame);
2. the **background**: a flat colour, a linear gradient or smooth colour noise, then a few clutter
   rectangles and discs, some of them in a toy colour (jittered), so that colour alone does not
   give the object away;
3. with ``distractor_prob``, a smaller **distractor** toy of another shape or colour, placed
   farther from the photo's centre than the object (it may be cut by the photo's edge or tucked
   behind the object);
4. the object composited on top, its whole silhouette inside the photo and its centre within
   ``max_offset`` of the photo's centre, then pixel noise over everything.

Truths: the object's mask (its coverage ≥ 0.5, visible everywhere since it is on top), its depth
(the renderer's distance along each ray, on the mask; 0 elsewhere), the caption ``"a red cube"``,
the camera's elevation and azimuth, the mask's box, and an interior point (the mask pixel
farthest from its edge), a point prompt for SAM.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..background.base import SolidBackground
from ..core.atomic import atomic_write_text
from ..data.cameras import make_cameras, spherical_to_position
from ..geometry.base import Mesh
from ..materials.base import DiffuseWithPointLight
from ..renderers.raster import RasterRenderer
from .dataset import ToyShapeGeometry
from .priors import ASSETS
from .shapes import COLORS, SHAPES

CAMERA_DISTANCE = 1.8
"""The object's camera: the Zero123 dataset's distance and field of view (``dataset.ZERO123_CAMERAS``)."""
CAMERA_FOVY = 45.0


@dataclass
class ToyPhotoConfig:
    size: int = 96
    """Photo side, in pixels (square)."""
    elevation_range: tuple[float, float] = (-10.0, 60.0)
    """Camera elevation, degrees (the toy image-to-3D cameras' range)."""
    frame_scale: tuple[float, float] = (0.75, 1.2)
    """Side of the object's render frame, as a fraction of the photo side (the object spans ~0.6 of it)."""
    max_offset: float = 0.15
    """Largest distance of the object's centre from the photo's centre, per axis, as a fraction of the side."""
    albedo_prob: float = 0.15
    """Fraction of objects rendered unlit (albedo) instead of lit by the point light."""
    clutter: tuple[int, int] = (0, 6)
    """Fewest and most clutter shapes (rectangles, discs) on the background."""
    lookalike_prob: float = 0.3
    """Fraction of clutter shapes painted in a (jittered) toy colour."""
    distractor_prob: float = 0.5
    """Fraction of photos with a distractor toy."""
    distractor_scale: tuple[float, float] = (0.35, 0.6)
    """The distractor's render frame, as a fraction of the object's."""
    noise: tuple[float, float] = (0.0, 0.03)
    """Range of the pixel noise's standard deviation (colour in [0, 1])."""
    supersample: int = 2
    """Render the toys at this multiple of their frame size and average down (antialiasing)."""


@dataclass
class ToyPhoto:
    """One photo and its truths (pixel (x, y): column x, row y from the top-left)."""

    rgb: np.ndarray
    """(H,W,3) uint8."""
    mask: np.ndarray
    """(H,W) bool: the object."""
    depth: np.ndarray
    """(H,W) float32: distance along the ray to the object on the mask, 0 elsewhere."""
    shape: str
    color: str
    elevation: float
    """Of the object's camera, degrees."""
    azimuth: float
    caption: str
    object_box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) of the mask, x1/y1 exclusive."""
    point: tuple[int, int]
    """(x, y): the mask pixel farthest from the mask's edge."""
    frame: tuple[int, int, int]
    """(x0, y0, side): where the object's render frame lies in the photo."""
    shading: str
    """``diffuse`` (lit) or ``albedo``."""
    distractor: Optional[tuple[str, str]]
    """(shape, colour) of the distractor toy, if any."""
    distractor_mask: np.ndarray
    """(H,W) bool: the distractor's visible part (empty without one)."""
    seed: int

    def truth(self) -> dict[str, Any]:
        """The json-able truths (everything but the arrays)."""
        arrays = ("rgb", "mask", "depth", "distractor_mask")
        record = {k: v for k, v in asdict(self).items() if k not in arrays}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}


class ToyPhotoMaker:
    """``ToyPhotoMaker(cfg).photo(seed)`` → :class:`ToyPhoto` (see the module docstring)."""

    def __init__(self, cfg: Optional[ToyPhotoConfig] = None) -> None:
        self.cfg = cfg or ToyPhotoConfig()
        self.meshes: dict[str, Mesh] = {}
        self.renderer = RasterRenderer({"implementation": "torch"})
        self.material = DiffuseWithPointLight({"albedo_activation": "none"})
        self.black = SolidBackground({"color": [0.0, 0.0, 0.0]})

    def photo(self, seed: int) -> ToyPhoto:
        c, n = self.cfg, self.cfg.size
        rng = np.random.default_rng(seed)
        shape, color = str(rng.choice(list(SHAPES))), str(rng.choice(list(COLORS)))
        elevation = float(rng.uniform(*c.elevation_range))
        azimuth = float(rng.uniform(-180.0, 180.0))
        shading = "albedo" if rng.random() < c.albedo_prob else "diffuse"
        side = int(round(rng.uniform(*c.frame_scale) * n))
        rgb_obj, alpha_obj, depth_obj = self.render(shape, color, elevation, azimuth, side, shading, rng)
        x0, y0 = self.place_object(alpha_obj, rng)

        image = background(rng, n, c)
        distractor, distractor_alpha = None, np.zeros((n, n), np.float32)
        if rng.random() < c.distractor_prob:
            distractor = self.add_distractor(image, distractor_alpha, (shape, color), side, (x0, y0), alpha_obj, rng)
        alpha = paste(np.zeros((n, n), np.float32), alpha_obj, x0, y0)
        depth = paste(np.zeros((n, n), np.float32), depth_obj, x0, y0)
        premultiplied = paste(np.zeros((n, n, 3), np.float32), rgb_obj, x0, y0)
        image = image * (1.0 - alpha[..., None]) + premultiplied
        image = image + rng.normal(0.0, rng.uniform(*c.noise), image.shape)
        rgb = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)

        mask = alpha >= 0.5
        ys, xs = np.nonzero(mask)
        return ToyPhoto(
            rgb=rgb,
            mask=mask,
            depth=np.where(mask, depth, 0.0).astype(np.float32),
            shape=shape,
            color=color,
            elevation=elevation,
            azimuth=azimuth,
            caption=f"a {color} {shape}",
            object_box=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
            point=interior_point(mask),
            frame=(x0, y0, side),
            shading=shading,
            distractor=distractor,
            distractor_mask=(distractor_alpha >= 0.5) & ~mask,
            seed=seed,
        )

    @torch.no_grad()
    def render(
        self,
        shape: str,
        color: str,
        elevation: float,
        azimuth: float,
        side: int,
        shading: str,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(premultiplied rgb (side,side,3), coverage (side,side), depth on the coverage (side,side)),
        float32, of a toy seen from the photo camera at (``elevation``, ``azimuth``), its light
        within ±40° of the camera's direction."""
        if shape not in self.meshes:
            self.meshes[shape] = SHAPES[shape].mesh()
        hi = side * self.cfg.supersample
        t = lambda v: torch.tensor([float(v)])  # noqa: E731
        light = spherical_to_position(
            t(np.clip(elevation + rng.uniform(-40.0, 40.0), -80.0, 80.0)), t(azimuth + rng.uniform(-40.0, 40.0)), t(3.0)
        )
        cams = make_cameras(t(elevation), t(azimuth), t(CAMERA_DISTANCE), t(CAMERA_FOVY), hi, hi, light_position=light)
        geometry = ToyShapeGeometry(self.meshes[shape], COLORS[color])
        out = self.renderer(cams, geometry, self.material, self.black, shading)
        rgb, alpha, depth = (
            F.avg_pool2d(x.permute(0, 3, 1, 2), self.cfg.supersample)[0]
            for x in (out.rgb, out.opacity, out.depth * out.opacity)
        )
        coverage = alpha[0].clamp(0.0, 1.0)
        depth = depth[0] / coverage.clamp(min=1e-6)
        return rgb.permute(1, 2, 0).clamp(0.0, 1.0).numpy(), coverage.numpy(), depth.numpy()

    def place_object(self, alpha: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left (x0, y0) of the object's frame: its silhouette inside the photo (1 pixel margin),
        its box's centre within ``max_offset`` of the photo's centre (as near as the size allows)."""
        n, reach = self.cfg.size, self.cfg.max_offset * self.cfg.size
        ys, xs = np.nonzero(alpha > 0)
        origin = []
        for lo, hi in ((xs.min(), xs.max() + 1), (ys.min(), ys.max() + 1)):
            first, last = 1 - lo, n - 1 - hi  # frame offsets that keep [lo, hi) inside [1, n-1)
            centred = n / 2 - (lo + hi) / 2
            a, b = max(first, int(np.ceil(centred - reach))), min(last, int(np.floor(centred + reach)))
            if a > b:  # larger than the photo allows with the offset: centre it
                a = b = int(round(centred))
            origin.append(int(rng.integers(a, b + 1)))
        return origin[0], origin[1]

    def add_distractor(
        self,
        image: np.ndarray,
        coverage: np.ndarray,
        main: tuple[str, str],
        main_side: int,
        main_origin: tuple[int, int],
        main_alpha: np.ndarray,
        rng: np.random.Generator,
    ) -> Optional[tuple[str, str]]:
        """Composite a smaller toy (not the object's shape × colour) into ``image`` in place (its
        coverage into ``coverage``), its
        centre at least 0.2 of the side farther from the photo's centre than the object's centre;
        None (and nothing drawn) when no such place is drawn in 50 tries."""
        c, n = self.cfg, self.cfg.size
        pairs = [(s, k) for s in SHAPES for k in COLORS if (s, k) != main]
        shape, color = pairs[int(rng.integers(len(pairs)))]
        side = max(8, int(round(main_side * rng.uniform(*c.distractor_scale))))
        ys, xs = np.nonzero(main_alpha > 0)
        main_centre = np.array([main_origin[0] + xs.mean(), main_origin[1] + ys.mean()])
        main_distance = np.abs(main_centre - n / 2).max()
        for _ in range(50):
            centre = rng.uniform(0.05 * n, 0.95 * n, 2)
            if np.abs(centre - n / 2).max() >= main_distance + 0.2 * n:
                break
        else:
            return None
        elevation, azimuth = rng.uniform(*c.elevation_range), rng.uniform(-180.0, 180.0)
        rgb, alpha, _ = self.render(shape, color, elevation, azimuth, side, "diffuse", rng)
        x0, y0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
        a = paste(coverage, alpha, x0, y0)
        image *= 1.0 - a[..., None]
        image += paste(np.zeros((n, n, 3), np.float32), rgb, x0, y0)
        return shape, color


def background(rng: np.random.Generator, n: int, cfg: ToyPhotoConfig) -> np.ndarray:
    """(n,n,3) float32 in [0,1]: a flat colour, a linear gradient or smooth noise (a colour mottled by
    ±0.3 a channel), then clutter."""
    kind = rng.choice(["flat", "gradient", "noise"], p=[0.2, 0.45, 0.35])
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    if kind == "flat":
        image = np.broadcast_to(rng.uniform(0.0, 1.0, 3), (n, n, 3)).copy()
    elif kind == "gradient":
        angle = rng.uniform(0.0, 2 * np.pi)
        t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) / np.sqrt(0.5) + 0.5
        a, b = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
        image = a + np.clip(t, 0.0, 1.0)[..., None] * (b - a)
    else:
        cells = int(rng.integers(2, 7))
        tint = rng.uniform(0.15, 0.85, (1, 3, 1, 1))
        coarse = torch.from_numpy((tint + rng.uniform(-0.3, 0.3, (1, 3, cells, cells))).astype(np.float32))
        image = F.interpolate(coarse, (n, n), mode="bicubic", align_corners=True)[0].permute(1, 2, 0).numpy()
    image = image.astype(np.float32)
    toy_colors = np.array(list(COLORS.values()), np.float32)
    for _ in range(int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))):
        if rng.random() < cfg.lookalike_prob:
            paint = toy_colors[int(rng.integers(len(toy_colors)))] * rng.uniform(0.6, 1.1)
        else:
            paint = rng.uniform(0.0, 1.0, 3)
        cx, cy = rng.uniform(0.0, 1.0, 2)
        w, h = rng.uniform(0.05, 0.25, 2)
        if rng.random() < 0.5:
            inside = (np.abs(xx - cx) < w) & (np.abs(yy - cy) < h)
        else:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < w**2
        image[inside] = np.clip(paint, 0.0, 1.0)
    return np.clip(image, 0.0, 1.0)


def paste(canvas: np.ndarray, patch: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """``canvas`` with ``patch`` written at top-left (x0, y0), the parts outside clipped (in place)."""
    h, w = canvas.shape[:2]
    ph, pw = patch.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
    if cx0 < cx1 and cy0 < cy1:
        canvas[cy0:cy1, cx0:cx1] = patch[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return canvas


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its edge (the first of equals in row order)."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return int(x), int(y)


def make_photos(n: int, seed: int, cfg: Optional[ToyPhotoConfig] = None, progress: bool = False) -> dict[str, Any]:
    """``n`` photos, photo ``i`` drawn from seed ``seed · 1_000_000 + i``: ``rgb`` (n,H,W,3) uint8,
    ``mask`` (n,H,W) bool, ``depth`` (n,H,W) float32, ``distractor_mask`` (n,H,W) bool tensors and
    ``truths`` (list of dicts)."""
    maker = ToyPhotoMaker(cfg)
    photos = []
    for i in range(n):
        photos.append(maker.photo(seed * 1_000_000 + i))
        if progress and (i + 1) % 500 == 0:
            print(f"made {i + 1}/{n} photos", flush=True)
    return {
        "rgb": torch.from_numpy(np.stack([p.rgb for p in photos])),
        "mask": torch.from_numpy(np.stack([p.mask for p in photos])),
        "depth": torch.from_numpy(np.stack([p.depth for p in photos])),
        "distractor_mask": torch.from_numpy(np.stack([p.distractor_mask for p in photos])),
        "truths": [p.truth() for p in photos],
    }


SHIPPED_SEEDS = (9_000_000, 9_000_001, 9_000_002, 9_000_003, 9_000_007)
"""Seeds of the photos in ``assets/toy-photos``: the first five shapes of seed 9's series (the
models train on seed 0's, the benchmark measures on seed 1's)."""
DEPTH_UNIT = 1e-4
"""World units per step of the 16-bit truth depth PNGs."""


def write_photos(out_dir: str | Path, seeds: Sequence[int] = SHIPPED_SEEDS) -> list[Path]:
    """Write each seed's photo as ``<colour>_<shape>.png`` into ``out_dir``, its true mask (8-bit)
    and depth (16-bit, :data:`DEPTH_UNIT` a step, 0 off the object) as ``truth/<name>_mask.png``
    and ``truth/<name>_depth.png``, and every photo's truths into ``truth.json``."""
    from PIL import Image

    out = Path(out_dir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    maker, truths, paths = ToyPhotoMaker(), {}, []
    for seed in seeds:
        photo = maker.photo(seed)
        name = f"{photo.color}_{photo.shape}"
        Image.fromarray(photo.rgb).save(out / f"{name}.png")
        Image.fromarray(photo.mask.astype(np.uint8) * 255).save(out / "truth" / f"{name}_mask.png")
        depth = np.round(photo.depth / DEPTH_UNIT).astype(np.uint16)
        Image.fromarray(depth).save(out / "truth" / f"{name}_depth.png")
        truths[f"{name}.png"] = {
            **photo.truth(),
            "mask": f"truth/{name}_mask.png",
            "depth": f"truth/{name}_depth.png",
            "depth_unit": DEPTH_UNIT,
        }
        paths.append(out / f"{name}.png")
    atomic_write_text(out / "truth.json", json.dumps(truths, indent=1) + "\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the shipped toy photos and their truths.")
    parser.add_argument("--out", default=str(ASSETS / "toy-photos"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SHIPPED_SEEDS))
    args = parser.parse_args()
    for path in write_photos(args.out, args.seeds):
        print(path)


if __name__ == "__main__":
    main()
