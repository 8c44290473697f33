"""Ground-truth score of a toy-world run against the true toy shape ("a blue sphere").

:func:`score_mesh` gives the volumetric IoU of a mesh against a toy shape and against every
other toy shape (the true one should win by a margin), the Chamfer distance to the shape's
reference surface (:meth:`ToyShape.mesh`), and the colour error of the mean surface albedo against
the toy colour (and which toy colour it is nearest to).

Also, for text-to-3D (a prompt fixes no turn about the vertical axis): the same IoUs with every
true shape turned to its best yaw (``iou_any_yaw``, ``best_other_any_yaw``,
``iou_best_other_any_yaw``, ``iou_margin_any_yaw``) — for the shapes symmetric about z they equal
the plain ones; for a cube they tell a cube turned 30° from a rounded box. The targets are stated
on the plain IoU.

:class:`ToyShapeEvaluator` scores a run's final surface this way; the toy experiments
(``configs/experiment/default.yaml``, ``toy_zero123.yaml``) list it in ``evaluators``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from ..export.mesh_ops import clean_mesh
from ..geometry.base import Mesh
from ..toyworld.shapes import COLORS, SHAPES, ColorName, ShapeName, ToyShape, parse_prompt, turn_about_z
from .evaluator import Evaluator, RunInputs, Scores
from .shape_metrics import InsideFn, chamfer_distance, grid_inside, volumetric_iou

if TYPE_CHECKING:  # pragma: no cover
    from ..systems.score_distillation import ScoreDistillationSystem

RESOLUTION = 64
"""Scoring grid: 64³ cell centres over [-1, 1]³; it agrees with 96³ within 0.01 IoU (at 24³ the
true cube's cell centres hold 14 % less than its volume, tests/test_toy_shapes.py)."""

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


@torch.no_grad()
def score_mesh(
    mesh: Mesh,
    shape: ToyShape,
    color: Optional[str] = None,
    albedo_fn: Optional[Callable[[Tensor], Tensor]] = None,
    resolution: int = RESOLUTION,
    extent: float = 1.0,
    n_surface: int = 4000,
    max_faces: int = 20000,
) -> Optional[Scores]:
    """Scores of ``mesh`` against ``shape`` (see module docstring); the colour error when both
    ``color`` (a key of ``COLORS``) and ``albedo_fn`` ((N,3) points → (N,3) albedo) are given.
    None for an empty mesh. The inside test (:func:`grid_inside`, cost ∝ grid columns × faces)
    runs on a copy cleaned, oriented and decimated to ``max_faces``."""
    if mesh.num_faces == 0:
        return None
    coarse, _ = clean_mesh(Mesh(mesh.v_pos.detach().cpu().float(), mesh.t_pos_idx.cpu()), decimate_target=max_faces)
    occupied = grid_inside(coarse, resolution, extent)  # computed once, compared with every shape

    def inside(p: Tensor) -> Tensor:
        return occupied

    ious = {name: volumetric_iou(inside, s.inside, resolution, extent) for name, s in SHAPES.items()}
    any_yaw = {name: iou_any_yaw(inside, s, resolution, extent) for name, s in SHAPES.items()}
    best_other, best_other_any_yaw = (max((k for k in d if k != shape.name), key=d.get) for d in (ious, any_yaw))
    g = torch.Generator().manual_seed(0)
    surface = mesh.sample_surface(n_surface, g)
    out: Scores = {
        "toy_shape": shape.name,
        "iou": ious[shape.name],
        "iou_best_other": ious[best_other],
        "best_other_shape": best_other,
        "iou_margin": ious[shape.name] - ious[best_other],
        "iou_any_yaw": any_yaw[shape.name],
        "best_other_any_yaw": best_other_any_yaw,
        "iou_best_other_any_yaw": any_yaw[best_other_any_yaw],
        "iou_margin_any_yaw": any_yaw[shape.name] - any_yaw[best_other_any_yaw],
        "chamfer": chamfer_distance(surface, shape.mesh().sample_surface(n_surface, g)),
        **{f"iou_{k}": v for k, v in ious.items()},
    }
    if color is not None and albedo_fn is not None:
        mean = albedo_fn(surface).float().mean(0)
        distance = {name: float((mean.cpu() - torch.tensor(rgb)).norm()) for name, rgb in COLORS.items()}
        out["color"] = color
        out["color_error"] = distance[color]
        out["color_nearest"] = min(distance, key=distance.get)  # the toy colour the albedo is closest to
    return out


class ToyShapeEvaluator(Evaluator):
    """The final surface (the geometry's isosurface) and its albedo scored against a toy shape
    and colour with :func:`score_mesh`."""

    @dataclass
    class Config:
        shape: Optional[ShapeName] = None
        """The toy shape to score against; null: the one the input image's file name names
        (``red_cube.png``), else the prompt's; when neither names one the run is not scored."""
        color: Optional[ColorName] = None
        """The toy colour the mean albedo is compared with; null: the one named with the shape;
        none named: no colour error."""

    def target(self, inputs: RunInputs) -> Optional[tuple[ToyShape, Optional[str]]]:
        """(shape, colour or None) to score against, or None when there is none."""
        parsed = next(filter(None, map(parse_prompt, inputs.descriptions())), None)
        shape = SHAPES[self.cfg.shape] if self.cfg.shape is not None else (parsed[0] if parsed else None)
        if shape is None:
            return None
        return shape, self.cfg.color if self.cfg.color is not None else (parsed[1] if parsed else None)

    def evaluate(self, system: ScoreDistillationSystem, inputs: RunInputs) -> Optional[Scores]:
        target = self.target(inputs)
        if target is None:
            return None
        geometry, material = system.geometry, system.material

        def albedo(points: Tensor) -> Tensor:
            return material.appearance(geometry(points.to(system.device)).features)["albedo"]

        shape, color = target
        return score_mesh(geometry.isosurface(), shape, color, albedo)

    def summary(self, scores: Scores) -> str:
        s = scores
        line = (
            f"toy-world score: IoU {s['iou']:.3f} vs {s['toy_shape']} (best other {s['best_other_shape']} "
            f"{s['iou_best_other']:.3f}; at the best yaw {s['iou_any_yaw']:.3f} vs {s['best_other_any_yaw']} "
            f"{s['iou_best_other_any_yaw']:.3f}), Chamfer {s['chamfer']:.3f}"
        )
        if "color_error" in s:
            line += f", colour error {s['color_error']:.3f} (nearest toy colour: {s['color_nearest']})"
        return line
