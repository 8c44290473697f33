"""Coordinate conventions of files: up axis, units and unit-cube normalization.

Our world is +Z up (``data/cameras.py``); glTF, Blender's and most DCC tools' OBJ/PLY importers
expect +Y up, so exports default to +Y. Going from +Z up to +Y up is the rotation
``(x, y, z) → (x, z, −y)`` (−90° about X): a proper rotation, so triangle winding and outward
normals are preserved, and the front of the object (+X, azimuth 0) stays +X. :func:`to_up_axis`
converts on output (export), :func:`from_up_axis` on input (meshes loaded by
``geometry/explicit_mesh.py``). OBJ and PLY files say which axis is up and what the units are in
their header comments (:func:`header_comments`).
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


def header_comments(up_axis: str, unit_cube: bool) -> list[str]:
    """The comment lines an OBJ/PLY header carries: its up axis and its units."""
    units = (
        "normalized: centred at the origin, longest side 1"
        if unit_cube
        else "the run's world units, unscaled (Blender and glTF read 1 unit as 1 m)"
    )
    return [f"up_axis: {up_axis} (right-handed; front of the object +X)", f"units: {units}"]
