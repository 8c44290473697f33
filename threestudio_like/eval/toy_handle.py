"""Where a toy mug's handle is: the handle-aware half of the Janus probe (docs/toy-world.md).

A text-to-3D mug with a handle on every side (the Janus problem) or none scores close to the
toy cylinder by IoU alone; this finds the handle. On the scoring grid (64³ cell centres over
[−1, 1]³), the occupied cells in the mug's height band farther than :data:`HANDLE_RADIUS` from the
shape's vertical axis (through the median x and y of its occupied cells, so an off-centre
result is not read as a handle) are the handle; each votes for its azimuth (degrees, 0 on +X,
as the cameras') with the weight of its distance beyond that radius. The handle's azimuth is the
direction of the weighted vote sum; its **concentration** is that sum's length over the total
weight (1: all on one side, ≈ 0: a rim all round). It is a handle when its volume is at least
:data:`MIN_VOLUME` and its concentration at least :data:`MIN_CONCENTRATION`.
"""

from __future__ import annotations

import math
from typing import Optional, TypedDict

import torch
from torch import Tensor

from ..export.mesh_ops import clean_mesh
from ..geometry.base import Mesh
from .shape_metrics import grid_inside, grid_points
from .toy_shape import RESOLUTION

HANDLE_RADIUS = 0.36
"""Cells farther than this from the axis are handle: beyond the mug's body (0.28) and the toy
cylinder (0.3) by two scoring-grid cells (0.031 each)."""
HALF_HEIGHT = 0.5
"""The height band |z| ≤ this (the mug's body: 0.32, its handle: 0.22)."""
MIN_VOLUME = 1e-3
"""Least handle volume (world units³): the true mug's beyond the radius is 2.8e-3."""
MIN_CONCENTRATION = 0.5
"""Least concentration: a handle within about ±60° of one direction."""


class Handle(TypedDict):
    handle_azimuth: Optional[float]
    """Degrees in (−180, 180], 0 on +X; None when there is no handle."""
    handle_volume: float
    """Volume of the cells beyond the radius (world units³)."""
    handle_concentration: float
    """Length of the weighted azimuth vote over its total weight (0 when there is nothing)."""


def find_handle(occupied: Tensor, resolution: int = RESOLUTION, extent: float = 1.0) -> Handle:
    """The handle (module docstring) of the (R³,) occupancy ordered as :func:`grid_points`."""
    points = grid_points(resolution, extent)
    inside = occupied.reshape(-1).bool()
    if not inside.any():
        return Handle(handle_azimuth=None, handle_volume=0.0, handle_concentration=0.0)
    axis = points[inside, :2].quantile(0.5, dim=0)  # halfway between the middle two: 0 for a symmetric shape
    offset = points[:, :2] - axis
    radius = offset.norm(dim=-1)
    beyond = inside & (radius > HANDLE_RADIUS) & (points[:, 2].abs() <= HALF_HEIGHT)
    volume = float(beyond.sum()) * (2 * extent / resolution) ** 3
    weight = (radius - HANDLE_RADIUS)[beyond]
    if weight.numel() == 0:
        return Handle(handle_azimuth=None, handle_volume=0.0, handle_concentration=0.0)
    direction = offset[beyond] / radius[beyond, None]
    vote = (weight[:, None] * direction).sum(0)
    concentration = float(vote.norm() / weight.sum())
    found = volume >= MIN_VOLUME and concentration >= MIN_CONCENTRATION
    azimuth = math.degrees(math.atan2(float(vote[1]), float(vote[0]))) if found else None
    return Handle(handle_azimuth=azimuth, handle_volume=volume, handle_concentration=concentration)


def mesh_handle(mesh: Mesh, resolution: int = RESOLUTION, extent: float = 1.0, max_faces: int = 20000) -> Handle:
    """:func:`find_handle` of a mesh's inside (:func:`grid_inside` of a copy cleaned, oriented
    and decimated to ``max_faces``, as the toy-shape score takes it)."""
    if mesh.num_faces == 0:
        return find_handle(torch.zeros(resolution**3, dtype=torch.bool), resolution, extent)
    coarse, _ = clean_mesh(Mesh(mesh.v_pos.detach().cpu().float(), mesh.t_pos_idx.cpu()), decimate_target=max_faces)
    return find_handle(grid_inside(coarse, resolution, extent), resolution, extent)


def azimuth_error(azimuth: Optional[float], truth: float) -> Optional[float]:
    """``azimuth − truth`` wrapped to (−180, 180] degrees; None when there is no handle."""
    if azimuth is None:
        return None
    return 180.0 - (180.0 - (azimuth - truth)) % 360.0
