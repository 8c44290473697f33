"""The toy world's shapes: analytic signed distance functions with a known colour.

Every shape fits in a ball of radius ≈ 0.5 around the origin, +Z up (``data/cameras.py``), and
has ``sdf(points (N,3)) -> (N,)`` (negative inside), ``inside(points) -> bool`` and ``mesh()``, its
reference surface (marching cubes of the SDF). The ``mug`` has
its handle on the back (−X; azimuth 0 is the front), so front and back views differ.
``parse_prompt("a blue sphere, side view")`` finds the shape and colour a prompt names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from ..geometry.base import Mesh
from ..ops.marching_cubes import marching_cubes

ShapeName = Literal["sphere", "cube", "cylinder", "cone", "torus", "mug"]
"""The toy shapes' names (the keys of :data:`SHAPES`), for config fields."""
ColorName = Literal["red", "green", "blue", "yellow"]
"""The toy colours' names (the keys of :data:`COLORS`), for config fields."""

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.2, 0.7, 0.25),
    "blue": (0.15, 0.3, 0.85),
    "yellow": (0.9, 0.8, 0.15),
}


def _sphere(p: Tensor) -> Tensor:
    return p.norm(dim=-1) - 0.45


def box_sdf(p: Tensor, half: Tensor | float, radius: float = 0.0) -> Tensor:
    """Exact distance to the box ``|x| ≤ half`` (per axis) with its edges rounded to ``radius``."""
    q = p.abs() - (torch.as_tensor(half, dtype=p.dtype) - radius)
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0) - radius


def turn_about_z(points: Tensor, degrees: float) -> Tensor:
    """``points`` (N,3) turned by ``degrees`` about the vertical (z) axis, counter-clockwise from above."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    x, y = points[:, 0], points[:, 1]
    return torch.stack([c * x - s * y, s * x + c * y, points[:, 2]], 1)


def _cube(p: Tensor) -> Tensor:
    return box_sdf(p, 0.35)


def _cylinder_sdf(p: Tensor, radius: float, half_height: float) -> Tensor:
    d = torch.stack([p[:, :2].norm(dim=-1) - radius, p[:, 2].abs() - half_height], dim=-1)
    return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)


def _cylinder(p: Tensor) -> Tensor:
    return _cylinder_sdf(p, 0.3, 0.4)


def _cone(p: Tensor) -> Tensor:
    """Base radius 0.4 at z = −0.4, apex at z = +0.45 (exact distance to a capped cone)."""
    h, r = 0.85, 0.4
    q = torch.stack([p[:, :2].norm(dim=-1), p[:, 2] + 0.4], dim=-1)  # (radial, height above base)
    # distance to the slanted side segment from (r, 0) to (0, h)
    a, b = torch.tensor([r, 0.0], dtype=p.dtype), torch.tensor([0.0, h], dtype=p.dtype)
    ab = b - a
    t = (((q - a) @ ab) / (ab @ ab)).clamp(0, 1)
    d_side = (q - (a + t[:, None] * ab)).norm(dim=-1)
    d_base = torch.where(q[:, 0] <= r, q[:, 1].abs(), (q - a).norm(dim=-1))
    inside = (q[:, 1] >= 0) & (q[:, 1] <= h) & (q[:, 0] <= r * (1 - q[:, 1] / h))
    d = torch.minimum(d_side, d_base)
    return torch.where(inside, -d, d)


def _torus(p: Tensor) -> Tensor:
    q = torch.stack([p[:, :2].norm(dim=-1) - 0.32, p[:, 2]], dim=-1)
    return q.norm(dim=-1) - 0.13


MUG_HANDLE_AZIMUTH_DEG = 180.0
"""The azimuth (degrees, 0 on +X as the cameras') of the mug's handle: its back, −X."""


def _mug(p: Tensor) -> Tensor:
    """A cylinder (r 0.28, half height 0.32) with a ring handle on its back (−X)."""
    body = _cylinder_sdf(p, 0.28, 0.32)
    h = p - torch.tensor([-0.3, 0.0, 0.0], dtype=p.dtype)  # the handle's centre, at MUG_HANDLE_AZIMUTH_DEG
    ring = torch.stack([torch.stack([h[:, 0], h[:, 2]], -1).norm(dim=-1) - 0.17, h[:, 1]], dim=-1).norm(dim=-1) - 0.05
    return torch.minimum(body, ring)


@dataclass(frozen=True)
class ToyShape:
    name: str
    sdf: Callable[[Tensor], Tensor]
    round_about_z: bool = True
    """Unchanged by any turn about the vertical axis (the cube and the mug are not)."""

    def inside(self, points: Tensor) -> Tensor:
        return self.sdf(points.float()) < 0

    def mesh(self, resolution: int = 64, extent: float = 1.0) -> Mesh:
        """The reference surface: marching cubes of the SDF's zero level set on a ``resolution``³
        grid over [−extent, extent]³."""
        axis = torch.linspace(-extent, extent, resolution)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        values = -self.sdf(grid).reshape(resolution, resolution, resolution)  # > 0 inside
        return marching_cubes(values, 0.0, [-extent] * 3, [extent] * 3)


SHAPES: dict[str, ToyShape] = {
    s.name: s
    for s in (
        ToyShape("sphere", _sphere),
        ToyShape("cube", _cube, round_about_z=False),
        ToyShape("cylinder", _cylinder),
        ToyShape("cone", _cone),
        ToyShape("torus", _torus),
        ToyShape("mug", _mug, round_about_z=False),
    )
}


def parse_prompt(prompt: str) -> Optional[tuple[ToyShape, Optional[str]]]:
    """(shape, colour name or None) named in ``prompt``, or None if it names no toy shape."""
    words = re.findall(r"[a-z]+", (prompt or "").lower())
    shape = next((SHAPES[w] for w in words if w in SHAPES), None)
    if shape is None:
        return None
    return shape, next((w for w in words if w in COLORS), None)
