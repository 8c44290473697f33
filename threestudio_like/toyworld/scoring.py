"""Ground-truth scoring of a run whose prompt names a toy shape ("a blue sphere").

``score_mesh(mesh, prompt, albedo_fn)`` → the volumetric IoU against the prompted shape and
against every other toy shape (the prompted one should win by a margin), the Chamfer distance to
the prompted shape's surface, and the colour error of the mean surface albedo against the
prompted colour (and which toy colour it is nearest to). None when the prompt names no toy shape.

Also, for text-to-3D (a prompt fixes no turn about the vertical axis): the same IoUs with every
true shape turned to its best yaw (``iou_any_yaw``, ``best_other_any_yaw``,
``iou_best_other_any_yaw``, ``iou_margin_any_yaw``) — for the shapes symmetric about z they equal
the plain ones; for a cube they tell a cube turned 30° from a rounded box. The targets are stated
on the plain IoU.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..eval.shape_metrics import InsideFn, chamfer_distance, grid_inside, sample_surface, volumetric_iou
from ..export.mesh_ops import clean_mesh
from ..geometry.base import Mesh
from ..ops.marching_cubes import marching_cubes
from .shapes import COLORS, SHAPES, ToyShape, parse_prompt, turn_about_z

RESOLUTION = 64
"""Scoring grid: 64³ cell centres over [-1, 1]³. At 24³ (before session 8) the true cube held 14 %
less than its volume and runs' cube IoUs came out up to 0.1 higher; 64³ agrees with 96³ within 0.01."""

YAWS_DEG = tuple(range(0, 360, 5))
"""Turns about the vertical (z) axis tried by the any-yaw IoU."""


def iou_any_yaw(inside: InsideFn, shape: ToyShape, resolution: int, extent: float) -> float:
    """Largest :func:`volumetric_iou` of ``inside`` with ``shape`` turned about z by any angle of
    :data:`YAWS_DEG` (the shape turned by +θ = its inside test on the points turned by −θ)."""
    if shape.round_about_z:
        return volumetric_iou(inside, shape.inside, resolution, extent)
    def turned(deg: int) -> InsideFn:
        return lambda p: shape.inside(turn_about_z(p, -deg))

    return max(volumetric_iou(inside, turned(deg), resolution, extent) for deg in YAWS_DEG)


def shape_mesh(shape: ToyShape, resolution: int = 64, extent: float = 1.0) -> Mesh:
    """Marching-cubes mesh of the shape's zero level set."""
    axis = torch.linspace(-extent, extent, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    values = -shape.sdf(grid).reshape(resolution, resolution, resolution)  # > 0 inside
    return marching_cubes(values, 0.0, [-extent] * 3, [extent] * 3)


@torch.no_grad()
def score_mesh(mesh: Mesh, prompt: str, albedo_fn: Optional[Callable[[Tensor], Tensor]] = None,
               resolution: int = RESOLUTION, extent: float = 1.0, n_surface: int = 4000,
               max_faces: int = 20000) -> Optional[dict]:
    """Scores of ``mesh`` (see module docstring). The inside test (:func:`grid_inside`, cost
    ∝ grid columns × faces) runs on a copy cleaned, oriented and decimated to ``max_faces``."""
    parsed = parse_prompt(prompt)
    if parsed is None or mesh.num_faces == 0:
        return None
    shape, color = parsed
    coarse, _ = clean_mesh(Mesh(mesh.v_pos.detach().cpu().float(), mesh.t_pos_idx.cpu()), decimate_target=max_faces)
    occupied = grid_inside(coarse, resolution, extent)  # computed once, compared with every shape

    def inside(p: Tensor) -> Tensor:
        return occupied

    ious = {name: volumetric_iou(inside, s.inside, resolution, extent) for name, s in SHAPES.items()}
    any_yaw = {name: iou_any_yaw(inside, s, resolution, extent) for name, s in SHAPES.items()}
    best_other, best_other_any_yaw = (max((k for k in d if k != shape.name), key=d.get) for d in (ious, any_yaw))
    g = torch.Generator().manual_seed(0)
    surface = sample_surface(mesh, n_surface, g)
    out = {
        "toy_shape": shape.name,
        "iou": ious[shape.name],
        "iou_best_other": ious[best_other],
        "best_other_shape": best_other,
        "iou_margin": ious[shape.name] - ious[best_other],
        "iou_any_yaw": any_yaw[shape.name],
        "best_other_any_yaw": best_other_any_yaw,
        "iou_best_other_any_yaw": any_yaw[best_other_any_yaw],
        "iou_margin_any_yaw": any_yaw[shape.name] - any_yaw[best_other_any_yaw],
        "chamfer": chamfer_distance(surface, sample_surface(shape_mesh(shape), n_surface, g)),
        **{f"iou_{k}": v for k, v in ious.items()},
    }
    if color is not None and albedo_fn is not None:
        mean = albedo_fn(surface).float().mean(0)
        distance = {name: float((mean.cpu() - torch.tensor(rgb)).norm()) for name, rgb in COLORS.items()}
        out["color"] = color
        out["color_error"] = distance[color]
        out["color_nearest"] = min(distance, key=distance.get)  # the toy colour the albedo is closest to
    return out
