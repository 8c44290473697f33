"""Image-to-3D: reconstruct the input image at its camera (Zero123, Magic123, Make-It-3D).

Zero123 and Make-It-3D reconstruct the input view directly while a diffusion prior scores
novel views. :class:`ReferenceViewTerm` renders the reference camera every step and returns,
unweighted (the stage's ``loss`` dict weights them):

* ``<name>_rgb`` — :func:`reference_rgb_loss`: MSE (or L1) on the object's pixels, or on the
  whole image against the reference composited over ``rgb_background``;
* ``<name>_mask`` — :func:`reference_mask_loss`: BCE (or MSE) between rendered opacity and the
  object mask;
* ``<name>_depth`` (when ``depth`` is given) — :func:`depth_correlation_loss`:
  ``1 − Pearson(d_render, d_mono)`` over the foreground (Make-It-3D's negative Pearson depth
  prior): invariant to the unknown scale and shift of a monocular depth estimate, 0 for affinely
  related depths, 2 for negated ones;
* ``<name>_normal_smooth`` (when the render has normals) — :func:`normal_smoothness_loss`: total
  variation (mean squared neighbour difference) of the rendered normals on the object, or
  threestudio's form on the whole normal image (``normal_smooth_form``).

The reference view is rendered at ``height``×``width`` (numbers or schedules: threestudio's
Zero123 recipe grows it with the training views); the image is re-read when the size changes.

Shapes: images ``(B,H,W,3)``, masks/opacity/depth ``(B,H,W,1)``; a mask is 1 on the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.config import Range, Schedule
from ..core.errors import UserError
from ..core.schedule import schedule_value
from ..data.cameras import CameraBatch, make_cameras
from ..data.image import load_depth, load_image, load_rgba
from .regularizers import LossTerm, normal_image_smoothness

if TYPE_CHECKING:  # pragma: no cover
    from .score_distillation import StepContext


def reference_rgb_loss(
    rgb: Tensor,
    ref_rgb: Tensor,
    mask: Optional[Tensor] = None,
    background: Optional[Tensor] = None,
    kind: str = "mse",
) -> Tensor:
    """Mean squared (``kind="mse"``) or absolute (``"l1"``) error between a render and the
    reference image.

    ``rgb``, ``ref_rgb`` (B,H,W,3); ``mask`` (B,H,W,1) or None; ``background`` (3,) or
    (B,H,W,3) or None.

    * ``mask`` given, ``background`` None: over the object's pixels only,
      ``Σ m·err(rgb, ref) / (3·Σ m)``;
    * ``background`` given: the reference is composited over it (``ref·m + bg·(1 − m)``, with
      ``m = 1`` when there is no mask) and compared on the whole image;
    * neither: over the whole image.
    """
    if kind not in ("mse", "l1"):
        raise UserError(f"rgb loss kind must be 'mse' or 'l1', got '{kind}'")
    err = (lambda a, b: (a - b) ** 2) if kind == "mse" else (lambda a, b: (a - b).abs())  # noqa: E731
    if background is not None:
        m = torch.ones_like(ref_rgb[..., :1]) if mask is None else mask
        target = ref_rgb * m + background.to(ref_rgb) * (1.0 - m)
        return err(rgb, target).mean()
    if mask is None:
        return err(rgb, ref_rgb).mean()
    return (err(rgb, ref_rgb) * mask).sum() / (mask.sum() * rgb.shape[-1]).clamp_min(1e-8)


def reference_mask_loss(opacity: Tensor, mask: Tensor, kind: str = "bce") -> Tensor:
    """Rendered opacity (B,H,W,1) vs object mask (B,H,W,1) in [0,1]: mean BCE or MSE."""
    if kind == "bce":
        return F.binary_cross_entropy(opacity.clamp(1e-5, 1.0 - 1e-5), mask.to(opacity))
    if kind == "mse":
        return F.mse_loss(opacity, mask.to(opacity))
    raise UserError(f"mask loss kind must be 'bce' or 'mse', got '{kind}'")


def pearson_correlation(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two 1-D tensors of equal length (a scalar in [−1, 1])."""
    xc, yc = x - x.mean(), y - y.mean()
    return (xc * yc).sum() / (xc.norm() * yc.norm()).clamp_min(eps)


def depth_correlation_loss(depth: Tensor, mono_depth: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """``1 − Pearson(depth, mono_depth)`` over the foreground, averaged over the batch.

    ``depth`` (B,H,W,1) rendered depth; ``mono_depth`` (B,H,W,1) monocular estimate *in the same
    orientation* (larger = farther; negate a disparity map first); ``mask`` (B,H,W,1), pixels
    with ``mask > 0.5`` are used (all pixels when None).
    """
    losses = []
    for b in range(depth.shape[0]):
        keep = ((mask[b] > 0.5) if mask is not None else torch.ones_like(depth[b], dtype=torch.bool)).reshape(-1)
        if int(keep.sum()) < 2:
            raise UserError(
                "depth correlation needs at least 2 foreground pixels in the reference mask; check the mask"
            )
        d = depth[b].reshape(-1)[keep]
        m = mono_depth[b].reshape(-1)[keep].to(d)
        losses.append(1.0 - pearson_correlation(d, m))
    return torch.stack(losses).mean()


def normal_smoothness_loss(normal: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Total variation of rendered normals (B,H,W,3): mean of squared differences between
    vertical and horizontal neighbours (over all channels); with ``mask`` (B,H,W,1), only pairs
    whose two pixels are both on the object count."""
    dy = (normal[:, 1:] - normal[:, :-1]) ** 2
    dx = (normal[:, :, 1:] - normal[:, :, :-1]) ** 2
    if mask is None:
        return 0.5 * (dy.mean() + dx.mean())
    my = mask[:, 1:] * mask[:, :-1]
    mx = mask[:, :, 1:] * mask[:, :, :-1]
    c = normal.shape[-1]
    ly = (dy * my).sum() / (my.sum() * c).clamp_min(1e-8)
    lx = (dx * mx).sum() / (mx.sum() * c).clamp_min(1e-8)
    return 0.5 * (ly + lx)


class ReferenceViewTerm(LossTerm):
    """Losses at the input image's camera (see module docstring)."""

    @dataclass
    class Config:
        image: str = ""
        """RGBA image (object segmented, background transparent)."""
        depth: Optional[str] = None
        """Optional monocular depth/disparity map of the image (.npy or grayscale image)."""
        depth_is_disparity: bool = True
        """The depth map is a disparity (DPT/MiDaS: larger = nearer)."""
        elevation_deg: float = 0.0
        """Elevation of the input view (degrees)."""
        azimuth_deg: float = 0.0
        """Azimuth of the input view (0 = front)."""
        distance: float = 3.2
        """Camera distance of the input view."""
        fovy_deg: float = 20.0
        """Vertical FOV of the input view."""
        height: Annotated[Any, Schedule(Range(gt=0))] = 128
        """Resolution at which the reference view is rendered and compared (number or schedule)."""
        width: Annotated[Any, Schedule(Range(gt=0))] = 128
        """Width of the reference render (number or schedule)."""
        rgb_background: Optional[list] = None
        """null: RGB loss on object pixels only; [r,g,b]: whole image over that colour."""
        rgb_loss: Literal["mse", "l1"] = "mse"
        """Per-pixel error of the RGB loss: squared or absolute."""
        mask_loss: Literal["bce", "mse"] = "bce"
        """Opacity vs mask: binary cross-entropy or squared error."""
        normal_smooth_form: Literal["object_mean", "image_sum"] = "object_mean"
        """``object_mean``: :func:`normal_smoothness_loss` on the object's pixels; ``image_sum``:
        threestudio's, :func:`~.regularizers.normal_image_smoothness` of the whole normal image."""
        guidance_image: Literal["binary_alpha", "file_alpha"] = "binary_alpha"
        """The image view-conditioned guidance (Zero123) is given: composited over white with the
        binarised mask at the render size, or with the file's own alpha at the file's size
        (threestudio's)."""
        shading: str = "albedo"
        """Shading of the reference render (the photo is compared with unlit albedo by default)."""

    def __init__(self, cfg: Any = None, where: str = "terms.ref", name: str = "ref") -> None:
        super().__init__(cfg, where, name)
        self.size = (0, 0)
        self._load(self.size_at(0), torch.device("cpu"))

    def size_at(self, step: int) -> tuple[int, int]:
        """(height, width) of the reference render at training step ``step``."""
        return int(schedule_value(self.cfg.height, step)), int(schedule_value(self.cfg.width, step))

    def own_render_pixels(self, step: int) -> int:
        h, w = self.size_at(step)
        return h * w

    def _load(self, size: tuple[int, int], device: torch.device) -> None:
        c = self.cfg
        rgb, mask = load_rgba(c.image, size)
        self.register_buffer("rgb", rgb.to(device), persistent=False)
        self.register_buffer("mask", mask.to(device), persistent=False)
        depth = load_depth(c.depth, size).to(device) if c.depth else None
        self.register_buffer("depth", depth, persistent=False)
        self.size = size

    def camera(self) -> CameraBatch:
        c = self.cfg
        t = lambda v: torch.tensor([float(v)], device=self.rgb.device)  # noqa: E731
        return make_cameras(t(c.elevation_deg), t(c.azimuth_deg), t(c.distance), t(c.fovy_deg), *self.size)

    def reference_image(self) -> tuple[Tensor, float, float, float]:
        """(rgb over white (1,H,W,3), elevation, azimuth, distance) for view-conditioned guidance."""
        c = self.cfg
        if c.guidance_image == "file_alpha":
            over_white = load_image(c.image, what="reference image").to(self.rgb.device)
        else:
            over_white = self.rgb * self.mask + (1 - self.mask)
        return over_white, c.elevation_deg, c.azimuth_deg, c.distance

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        c, n = self.cfg, self.name
        size = self.size_at(ctx.global_step)
        if size != self.size:
            self._load(size, self.rgb.device)
        render = ctx.system.render(self.camera(), shading=c.shading)
        bg = None if c.rgb_background is None else torch.tensor(c.rgb_background, dtype=render.rgb.dtype)
        out = {
            f"{n}_rgb": reference_rgb_loss(render.rgb, self.rgb, self.mask, bg, c.rgb_loss),
            f"{n}_mask": reference_mask_loss(render.opacity, self.mask, c.mask_loss),
        }
        if self.depth is not None:
            mono = -self.depth if c.depth_is_disparity else self.depth
            out[f"{n}_depth"] = depth_correlation_loss(render.depth, mono, self.mask)
        if render.normal is not None:
            if c.normal_smooth_form == "image_sum":
                out[f"{n}_normal_smooth"] = normal_image_smoothness(render.normal, render.opacity)
            else:
                out[f"{n}_normal_smooth"] = normal_smoothness_loss(render.normal, self.mask)
        return out
