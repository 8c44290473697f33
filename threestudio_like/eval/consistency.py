"""Multi-view consistency of rendered depth: the forward–backward reprojection error between
neighbouring views of an orbit (the geometric check of multi-view stereo fusion, used as a
consistency measure for generated views as with Pippo's reprojection error).

For views i and j: every pixel p of view i on the object (opacity > 0.5) is lifted to the 3-D
point at its rendered depth, projected into view j, where view j's depth is read (bilinearly,
only where all four neighbouring pixels are on the object), lifted again and projected back into
view i at p'. The error is ``|p − p'|`` in pixels: ≈ 0 when both depth maps show one surface,
large where they disagree (a shape that changes with the view). Not counted: pixels that leave
view j's image or land off its object, and points view j cannot see — farther from camera j than
the depth it renders there (by more than :data:`OCCLUDED`): hidden behind another part of the
object. A surface that view j renders behind view i's is still caught: from j to i its points
lie in front of what view i renders.

Depth is the distance along the ray (``RenderOutput.depth``); cameras follow ``data/cameras.py``
(OpenGL camera frame, pixel centres at ``(col + .5, row + .5)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.cameras import CameraBatch
from .evaluator import Scores

ON_OBJECT = 0.5
"""Opacity above which a pixel is on the object."""
OCCLUDED = 0.01
"""A point farther from camera j than j's rendered depth by more than this fraction of it is
hidden in view j."""
CONSISTENT_PX = 1.0
"""A pixel whose round trip lands within this many pixels counts as consistent."""


def _focal(cameras: CameraBatch) -> Tensor:
    return 0.5 * cameras.height / torch.tan(cameras.fovy / 2)


def project(points: Tensor, cameras: CameraBatch, k: int) -> tuple[Tensor, Tensor]:
    """(P,3) world points → (P,2) pixel coordinates (x right, y down; pixel centres at +.5) in view
    ``k`` and (P,) bool: in front of the camera."""
    c2w = cameras.c2w[k].to(points)
    local = (points - c2w[:3, 3]) @ c2w[:3, :3]  # R^T (X − t)
    z = -local[:, 2]
    f = _focal(cameras)[k].to(points)
    safe = torch.where(z > 1e-8, z, torch.ones_like(z))
    x = cameras.width / 2 + f * local[:, 0] / safe
    y = cameras.height / 2 - f * local[:, 1] / safe
    return torch.stack([x, y], -1), z > 1e-8


def lift(pixels: Tensor, depth: Tensor, cameras: CameraBatch, k: int) -> Tensor:
    """(P,2) pixel coordinates of view ``k`` and (P,) distances along the rays → (P,3) world points."""
    c2w = cameras.c2w[k].to(depth)
    f = _focal(cameras)[k].to(depth)
    d = torch.stack(
        [
            (pixels[:, 0] - cameras.width / 2) / f,
            -(pixels[:, 1] - cameras.height / 2) / f,
            -torch.ones_like(depth),
        ],
        -1,
    )
    d = F.normalize(d @ c2w[:3, :3].T, dim=-1)
    return c2w[:3, 3] + d * depth[:, None]


def _sample(image: Tensor, pixels: Tensor) -> Tensor:
    """Bilinear samples (P,) of an (H,W) image at (P,2) pixel coordinates (0 outside)."""
    h, w = image.shape
    grid = torch.stack([2 * pixels[:, 0] / w - 1, 2 * pixels[:, 1] / h - 1], -1)
    return F.grid_sample(image[None, None], grid[None, None], align_corners=False, padding_mode="zeros")[0, 0, 0]


def round_trip_errors(depth: Tensor, opacity: Tensor, cameras: CameraBatch, i: int, j: int) -> Tensor:
    """Pixel errors (P,) of the round trip i → j → i for view i's object pixels that land on view
    j's object and are not hidden there; ``depth``/``opacity`` (N,H,W,1)."""
    depth, opacity = depth[..., 0].double(), opacity[..., 0].double()
    h, w = depth.shape[-2:]
    rows, cols = torch.nonzero(opacity[i] > ON_OBJECT, as_tuple=True)
    p = torch.stack([cols.double() + 0.5, rows.double() + 0.5], -1)
    points = lift(p, depth[i, rows, cols], cameras, i)
    q, in_front = project(points, cameras, j)
    on_j = (opacity[j] > ON_OBJECT).double()
    coverage = _sample(on_j, q)
    keep = in_front & (coverage > 1 - 1e-6)  # all four neighbours on the object
    dj = _sample(depth[j] * on_j, q[keep]) / coverage[keep]
    visible = (points[keep] - cameras.c2w[j, :3, 3].to(points)).norm(dim=-1) <= dj * (1 + OCCLUDED)
    back, _ = project(lift(q[keep][visible], dj[visible], cameras, j), cameras, i)
    return (back - p[keep][visible]).norm(dim=-1)


def depth_reprojection(depth: Tensor, opacity: Tensor, cameras: CameraBatch) -> Scores:
    """Over every pair of orbit neighbours (i, i+1), the last view's neighbour being the first for
    an orbit of 3 or more views, in both directions: ``reprojection_error_px`` (mean round-trip
    error), ``reprojection_consistent_fraction`` (the fraction of checked pixels within
    :data:`CONSISTENT_PX`) and ``reprojection_pixels`` (how many were checked)."""
    n = depth.shape[0]
    pairs = [(i, (i + 1) % n) for i in range(n if n >= 3 else n - 1)]
    errors = [round_trip_errors(depth, opacity, cameras, a, b) for i, j in pairs for a, b in ((i, j), (j, i))]
    e = torch.cat(errors) if errors else torch.zeros(0, dtype=torch.float64)
    if e.numel() == 0:
        return {"reprojection_pixels": 0}
    return {
        "reprojection_error_px": float(e.mean()),
        "reprojection_consistent_fraction": float((e < CONSISTENT_PX).double().mean()),
        "reprojection_pixels": int(e.numel()),
    }
