"""Coordinate conventions of files: up axis and unit-cube normalization.

Our world is +Z up (``data/cameras.py``); glTF and many viewers expect +Y up. Going from +Z up
to +Y up is the rotation ``(x, y, z) → (x, z, −y)`` (−90° about X): a proper rotation, so
triangle winding and outward normals are preserved. :func:`to_up_axis` converts on output
(export), :func:`from_up_axis` on input (meshes loaded by ``geometry/explicit_mesh.py``).
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import Tensor

from ..core.errors import UserError

UpAxis = Literal["+Z", "+Y"]
"""The up axis of a file (a config field of this type accepts only these)."""
UP_AXES: tuple[str, ...] = typing.get_args(UpAxis)


def to_up_axis(points: Tensor, up_axis: str) -> Tensor:
    """Points or directions (...,3) in our +Z-up world expressed in a frame with ``up_axis`` up."""
    if up_axis == "+Z":
        return points
    if up_axis == "+Y":
        return torch.stack([points[..., 0], points[..., 2], -points[..., 1]], dim=-1)
    raise UserError(f"unknown up_axis '{up_axis}'; choose one of {'|'.join(UP_AXES)}")


def from_up_axis(points: Tensor, up_axis: str) -> Tensor:
    """Points or directions (...,3) given in a frame with ``up_axis`` up, expressed in our +Z-up
    world (the inverse of :func:`to_up_axis`)."""
    if up_axis == "+Z":
        return points
    if up_axis == "+Y":
        return torch.stack([points[..., 0], -points[..., 2], points[..., 1]], dim=-1)
    raise UserError(f"unknown up_axis '{up_axis}'; choose one of {'|'.join(UP_AXES)}")


def unit_cube_transform(points: Tensor) -> tuple[Tensor, float]:
    """``(center (3,), scale)`` so that ``(points − center) · scale`` has its bounding box centred
    at the origin with its longest side 1 (inside [−0.5, 0.5]³)."""
    lo, hi = points.min(0).values, points.max(0).values
    extent = float((hi - lo).max())
    return (lo + hi) / 2, (1.0 / extent if extent > 0 else 1.0)
