"""Six fixed views as targets: Zero123++'s tiled output (or any 6 images a user brings).

Zero123++ (v1.1) turns one image into six 320² views tiled in a 3×2 grid (960 tall × 640 wide),
read left to right, top to bottom. Their cameras have *absolute* elevations alternating
30°, −20° and azimuths 30° + 60°·k relative to the input view (v1.2: 20°, −10°).

* :func:`zero123pp_cameras` builds those six cameras in our convention (``data/cameras.py``);
* :func:`split_grid` cuts a tiled image into its views (:func:`load_view_grid` reads one);
* :class:`MultiViewReconstructionLoss` compares renders at the six cameras with the tiles;
* :class:`MultiViewTerm`, the loss term, renders the six cameras every step and returns
  ``mv_rgb`` and ``mv_mask`` (unweighted; the stage's ``loss`` dict weights them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.errors import UserError
from ..data.cameras import CameraBatch, make_cameras
from ..data.image import read_image
from .regularizers import LossTerm

if TYPE_CHECKING:  # pragma: no cover
    from .score_distillation import StepContext

ZERO123PP_ELEVATIONS_V11 = (30.0, -20.0)
"""Zero123++ v1.1 absolute elevations (degrees), alternating over the six views."""
ZERO123PP_ELEVATIONS_V12 = (20.0, -10.0)
"""Zero123++ v1.2 absolute elevations (degrees)."""
ELEVATIONS = {"v1.1": ZERO123PP_ELEVATIONS_V11, "v1.2": ZERO123PP_ELEVATIONS_V12}
"""The elevations of each Zero123++ version (:class:`MultiViewTerm`'s ``version``)."""


def zero123pp_poses(
    input_azimuth_deg: float = 0.0, elevations_deg: Sequence[float] = ZERO123PP_ELEVATIONS_V11
) -> tuple[Tensor, Tensor]:
    """(6,) elevations and (6,) azimuths in degrees, in grid order (row-major, 3 rows × 2 cols).

    View k: elevation ``elevations_deg[k % 2]``, azimuth ``input_azimuth + 30 + 60·k``
    wrapped to [0, 360).
    """
    k = torch.arange(6, dtype=torch.float64)
    elevation = torch.tensor([elevations_deg[i % 2] for i in range(6)], dtype=torch.float64)
    azimuth = (input_azimuth_deg + 30.0 + 60.0 * k) % 360.0
    return elevation, azimuth


def zero123pp_cameras(
    distance: float,
    fovy_deg: float,
    height: int,
    width: int,
    input_azimuth_deg: float = 0.0,
    elevations_deg: Sequence[float] = ZERO123PP_ELEVATIONS_V11,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> CameraBatch:
    """The six Zero123++ cameras (B=6, grid order) at ``distance`` with vertical FOV ``fovy_deg``.

    ``input_azimuth_deg`` is the azimuth of the input image's camera in our world (0 = front,
    +X). Zero123++ v1.1 renders use a 30° FOV; pick ``distance`` so the object fills the view
    as in the tiles.
    """
    elevation, azimuth = zero123pp_poses(input_azimuth_deg, elevations_deg)
    kw = dict(dtype=dtype, device=device)
    return make_cameras(
        elevation.to(**kw),
        azimuth.to(**kw),
        torch.full((6,), float(distance), **kw),
        torch.full((6,), float(fovy_deg), **kw),
        height,
        width,
    )


def split_grid(image: Tensor, rows: int = 3, cols: int = 2) -> Tensor:
    """A tiled image (H, W, C) → (rows·cols, H/rows, W/cols, C), tiles in row-major order."""
    if image.ndim != 3:
        raise UserError(f"split_grid expects one (H, W, C) image, got shape {tuple(image.shape)}")
    h, w, c = image.shape
    if h % rows or w % cols:
        raise UserError(
            f"a {rows}×{cols} view grid needs height divisible by {rows} and width by {cols}, got {h}×{w}; "
            "pass the uncropped grid image (Zero123++: 960×640)"
        )
    th, tw = h // rows, w // cols
    return image.reshape(rows, th, cols, tw, c).permute(0, 2, 1, 3, 4).reshape(rows * cols, th, tw, c)


def load_view_grid(path: str, rows: int = 3, cols: int = 2) -> tuple[Tensor, Optional[Tensor]]:
    """Read a tiled image file → (views (N,h,w,3) in [0,1], masks (N,h,w,1) from alpha or None)."""
    array = read_image(path, what="multi-view grid image")
    if array.shape[-1] in (1, 2):  # grey (+ alpha) → RGB (+ alpha)
        array = np.concatenate([np.repeat(array[..., :1], 3, axis=-1), array[..., 1:]], axis=-1)
    tiles = split_grid(torch.from_numpy(np.ascontiguousarray(array)), rows, cols)
    if tiles.shape[-1] == 4:
        return tiles[..., :3].contiguous(), tiles[..., 3:].contiguous()
    return tiles[..., :3].contiguous(), None


class MultiViewReconstructionLoss(Configurable, nn.Module):
    """Photometric loss between renders at the six cameras and six target views.

    ``forward(rgb (N,H,W,3), target (N,h,w,3), mask (N,h,w,1) | None, opacity (N,H,W,1) | None)``
    → ``{"mv_rgb": …, ["mv_mask": …]}``. Targets and masks are resized (area/bilinear) to the
    render size. With a mask the RGB term covers only object pixels (``masked_rgb: true``) or the
    target composited over ``background``; with a mask and ``opacity`` a mask term is added.
    """

    @dataclass
    class Config:
        kind: Literal["l2", "l1"] = "l2"
        """``l2`` (MSE) or ``l1``."""
        masked_rgb: bool = True
        """With a mask: compare only object pixels (False: composite the target over ``background``)."""
        background: Optional[list] = None
        """[r, g, b] the target is composited over when ``masked_rgb`` is False (default white)."""
        lambda_mask: float = 0.0
        """Weight of the opacity-vs-mask MSE term (0 = off)."""

    def __init__(self, cfg: Any = None, where: str = "multiview_loss") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)

    def _per_pixel(self, a: Tensor, b: Tensor) -> Tensor:
        return (a - b) ** 2 if self.cfg.kind == "l2" else (a - b).abs()

    def forward(
        self, rgb: Tensor, target: Tensor, mask: Optional[Tensor] = None, opacity: Optional[Tensor] = None
    ) -> dict[str, Tensor]:
        if rgb.shape[0] != target.shape[0]:
            raise UserError(f"got {rgb.shape[0]} renders for {target.shape[0]} target views; they must match")
        size = rgb.shape[1:3]
        target = _resize(target.to(rgb), size)
        mask = None if mask is None else _resize(mask.to(rgb), size)
        if mask is None:
            out = {"mv_rgb": self._per_pixel(rgb, target).mean()}
        elif self.cfg.masked_rgb:
            per = self._per_pixel(rgb, target) * mask
            out = {"mv_rgb": per.sum() / (mask.sum() * rgb.shape[-1]).clamp_min(1e-8)}
        else:
            bg = torch.tensor(self.cfg.background or [1.0, 1.0, 1.0], dtype=rgb.dtype, device=rgb.device)
            out = {"mv_rgb": self._per_pixel(rgb, target * mask + bg * (1 - mask)).mean()}
        if self.cfg.lambda_mask and mask is not None and opacity is not None:
            out["mv_mask"] = self.cfg.lambda_mask * F.mse_loss(opacity, mask)
        return out


def _resize(images: Tensor, size: Sequence[int]) -> Tensor:
    """(N,h,w,C) → (N,H,W,C): area when shrinking, bilinear when enlarging, identity if equal."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    x = images.permute(0, 3, 1, 2)
    shrink = images.shape[1] >= size[0] and images.shape[2] >= size[1]
    x = (
        F.interpolate(x, size=tuple(size), mode="area")
        if shrink
        else F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    )
    return x.permute(0, 2, 3, 1)


class MultiViewTerm(LossTerm):
    """Reconstruction of a six-view grid image at the Zero123++ cameras."""

    @dataclass
    class Config:
        grid: str = ""
        """The tiled image (3 rows × 2 columns, read row by row; RGBA gives masks)."""
        version: Literal["v1.1", "v1.2"] = "v1.1"
        """Camera elevations: v1.1 (30°/−20°) or v1.2 (20°/−10°)."""
        input_azimuth_deg: float = 0.0
        """Azimuth of the input image's camera in our world (the views are at +30° + 60°·k)."""
        distance: float = 3.2
        """Camera distance of the six views."""
        fovy_deg: float = 30.0
        """Vertical FOV of the six views."""
        height: int = 64
        """Render size compared with the (resized) tiles."""
        width: int = 64
        """Render width."""
        kind: Literal["l2", "l1"] = "l2"
        """l2 (MSE) or l1."""
        masked_rgb: bool = True
        """With masks: compare only object pixels."""
        background: Optional[list] = None
        """[r,g,b] the tiles are composited over when masked_rgb is false (default white)."""

    def __init__(self, cfg: Any = None, where: str = "terms.mv", name: str = "mv") -> None:
        super().__init__(cfg, where, name)
        c = self.cfg
        views, masks = load_view_grid(c.grid)
        self.register_buffer("views", views, persistent=False)
        self.register_buffer("masks", masks, persistent=False)
        self.loss = MultiViewReconstructionLoss(
            {"kind": c.kind, "masked_rgb": c.masked_rgb, "background": c.background, "lambda_mask": 1.0}, where=where
        )

    def own_render_pixels(self, step: int) -> int:
        return self.views.shape[0] * self.cfg.height * self.cfg.width

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        c = self.cfg
        cams = zero123pp_cameras(
            c.distance,
            c.fovy_deg,
            c.height,
            c.width,
            c.input_azimuth_deg,
            ELEVATIONS[c.version],
            device=self.views.device,
        )
        render = ctx.system.render(cams, shading="albedo")
        return self.loss(render.rgb, self.views, self.masks, render.opacity)
