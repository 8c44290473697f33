"""The toy dataset: renders of the toy shapes in the toy colours, deterministic from a seed.

Each image is one (shape, colour) seen from a camera drawn by the systems' own
:class:`~threestudio_like.data.cameras.RandomCameraSampler` (the camera config of the default
experiment, :data:`SD_CAMERAS`; the Zero123 prior uses :data:`ZERO123_CAMERAS`: no jitter, the
object centred), rendered by our :class:`~threestudio_like.renderers.raster.RasterRenderer` with
the :class:`~threestudio_like.materials.base.DiffuseWithPointLight` material under the sampler's
point light (or unlit albedo, ``albedo_prob``) over a white background or, with ``backdrop``,
over the world-fixed :class:`~threestudio_like.background.base.AzimuthBackdrop` (the shipped toy
SD prior's world), 2× supersampled.
Captions follow the prompt processor: ``"a red cube"`` or, with view suffixes,
``"a red cube, front view"`` (:func:`~threestudio_like.prompt.views.view_names`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..background.base import AzimuthBackdrop, SolidBackground
from ..data.cameras import CameraBatch, RandomCameraSampler
from ..geometry.base import GeometryOutput, Mesh, SurfaceGeometry
from ..materials.base import DiffuseWithPointLight
from ..prompt.views import view_names, view_prompt
from ..renderers.raster import RasterRenderer
from .shapes import COLORS, SHAPES

SD_CAMERAS: dict[str, Any] = dict(
    elevation_range=[-10.0, 60.0],
    azimuth_range=[-180.0, 180.0],
    distance_range=[1.8, 2.2],
    fovy_range=[40.0, 45.0],
    camera_perturb=0.05,
    center_perturb=0.05,
)
"""The text-to-3D cameras: ``configs/experiment/default.yaml``'s ``data`` (a test keeps them
equal); the sampler's up jitter and point light apply."""
ZERO123_CAMERAS: dict[str, Any] = dict(
    elevation_range=[-10.0, 60.0],
    azimuth_range=[-180.0, 180.0],
    distance_range=[1.8, 1.8],
    fovy_range=[45.0, 45.0],
    camera_perturb=0.0,
    center_perturb=0.0,
    up_perturb=0.0,
    light_distance_range=[1.8, 1.8],
    light_position_perturb=0.0,
)
"""The image-to-3D cameras (``configs/experiment/toy_zero123.yaml``): a fixed distance and field
of view, looking at the origin, as Zero123's pose conditioning assumes; lit renders are lit from
the camera (a headlight), so that a view's shading follows from its pose alone."""


def sd_background() -> AzimuthBackdrop:
    """The background the shipped toy SD prior was trained over and the default experiment renders
    over (``configs/background/backdrop.yaml``: :class:`AzimuthBackdrop`'s defaults; a test keeps
    them equal)."""
    return AzimuthBackdrop()


@dataclass
class ToyDatasetConfig:
    n_images: int = 24000
    """Number of renders (spread evenly over shapes × colours)."""
    size: int = 32
    """Image side in pixels."""
    supersample: int = 2
    """Render at ``size × supersample`` and average down (antialiasing)."""
    albedo_prob: float = 0.2
    """Fraction of chunks rendered unlit (albedo), as the systems' ``albedo`` shading steps."""
    cameras: dict = field(default_factory=lambda: dict(SD_CAMERAS))
    """RandomCameraSampler fields."""
    chunk: int = 64
    """Renders per raster call."""
    backdrop: bool = False
    """Render over :func:`sd_background` instead of white."""
    seed: int = 0


class ToyShapeGeometry(SurfaceGeometry):
    """A toy shape as an explicit geometry: its marching-cubes mesh, a constant albedo."""

    def __init__(self, mesh: Mesh, color: tuple[float, float, float]) -> None:
        super().__init__()
        self._mesh = mesh
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32))

    def mesh(self) -> Mesh:
        return self._mesh

    def forward(self, points: Tensor, output_normal: bool = False) -> GeometryOutput:
        return GeometryOutput(features=self.color.to(points).expand(points.shape[0], 3))


@torch.no_grad()
def render_toy(
    shape: str,
    color: str,
    cameras: CameraBatch,
    shading: str = "diffuse",
    supersample: int = 1,
    mesh: Optional[Mesh] = None,
    background: Optional[nn.Module] = None,
) -> tuple[Tensor, Tensor]:
    """(rgb (B,H,W,3), opacity (B,H,W,1)) of a toy shape seen from ``cameras``, over
    ``background`` (default white). ``cameras`` must be built at ``supersample`` × the output size."""
    geometry = ToyShapeGeometry(mesh if mesh is not None else SHAPES[shape].mesh(), COLORS[color])
    material = DiffuseWithPointLight({"albedo_activation": "none"})
    background = background if background is not None else SolidBackground()
    out = RasterRenderer({"implementation": "torch"})(cameras, geometry, material, background, shading)
    rgb, alpha = out.rgb, out.opacity
    if supersample > 1:
        rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)
        alpha = F.avg_pool2d(alpha.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)
    return rgb.clamp(0, 1), alpha.clamp(0, 1)


def make_dataset(cfg: ToyDatasetConfig, progress: bool = False) -> dict[str, Tensor]:
    """Render the dataset. Returns ``images`` (N,H,W,3) uint8, ``alpha`` (N,H,W) uint8,
    ``shape``/``color`` (N,) indices into ``SHAPES``/``COLORS``, ``lit`` (N,) bool (lit, not
    albedo), ``c2w`` (N,4,4), ``elevation``,
    ``azimuth``, ``distance`` (N,) of the (jittered) cameras."""
    shapes, colors = list(SHAPES), list(COLORS)
    classes = [(s, c) for s in shapes for c in colors]
    generator = torch.Generator().manual_seed(cfg.seed)
    hi = cfg.size * cfg.supersample
    sampler = RandomCameraSampler({**cfg.cameras, "height": hi, "width": hi, "batch_size": cfg.chunk})
    meshes = {s: SHAPES[s].mesh() for s in shapes}
    background = sd_background() if cfg.backdrop else SolidBackground()
    out: dict[str, list[Tensor]] = {
        k: [] for k in ("images", "alpha", "shape", "color", "lit", "c2w", "elevation", "azimuth", "distance")
    }
    n_chunks = -(-cfg.n_images // cfg.chunk)
    for i in range(n_chunks):
        s, c = classes[i % len(classes)]
        cams = sampler.sample(generator)
        shading = "albedo" if torch.rand((), generator=generator).item() < cfg.albedo_prob else "diffuse"
        rgb, alpha = render_toy(s, c, cams, shading, cfg.supersample, meshes[s], background)
        out["images"].append((rgb * 255).round().to(torch.uint8))
        out["alpha"].append((alpha[..., 0] * 255).round().to(torch.uint8))
        out["shape"].append(torch.full((cfg.chunk,), shapes.index(s)))
        out["color"].append(torch.full((cfg.chunk,), colors.index(c)))
        out["lit"].append(torch.full((cfg.chunk,), shading != "albedo"))
        out["c2w"].append(cams.c2w.float())
        # the view the camera actually sees (after jitter), as the systems compute it
        out["elevation"].append(cams.elevation.float())
        out["azimuth"].append(cams.azimuth.float())
        out["distance"].append(cams.distance.float())
        if progress and (i + 1) % 50 == 0:
            print(f"rendered {(i + 1) * cfg.chunk}/{n_chunks * cfg.chunk}", flush=True)
    return {k: torch.cat(v)[: cfg.n_images] for k, v in out.items()}


def caption(shape_index: int, color_index: int, elevation: float, azimuth: float, with_view: bool) -> str:
    """``"a <colour> <shape>"``, plus ``", <view> view"`` by the prompt processor's rule."""
    text = f"a {list(COLORS)[color_index]} {list(SHAPES)[shape_index]}"
    if not with_view:
        return text
    view = view_names(torch.tensor([elevation]), torch.tensor([azimuth]))[0]
    return view_prompt(text, view)
