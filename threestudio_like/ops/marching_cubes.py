"""Marching cubes of a sampled density field (PyMCubes), returning a :class:`Mesh`.

Axis order: ``values[i, j, k]`` is the field at
``(x_i, y_j, z_k) = bbox_min + (i, j, k) * (bbox_max - bbox_min) / (R - 1)`` — the first array
axis is x, the last is z (``torch.meshgrid(xs, ys, zs, indexing="ij")``), samples on the box's
corners included. Inside is ``value > threshold`` (a density); faces are counter-clockwise seen
from outside. Not differentiable (this is for export and stage hand-off; DMTet's
:mod:`.marching_tets` is the differentiable one). Runs on the CPU; the mesh comes back on the
device of ``values``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..geometry.base import Mesh


def marching_cubes(
    values: Tensor | np.ndarray,
    threshold: float,
    bbox_min: Sequence[float] | Tensor,
    bbox_max: Sequence[float] | Tensor,
) -> Mesh:
    """Isosurface ``values = threshold`` of a (R0,R1,R2) grid → Mesh (float32 vertices in world
    units, int64 faces); an empty Mesh (0 vertices, 0 faces) if the grid does not cross it."""
    import mcubes  # PyMCubes: a plain CPU extension, imported where it is used

    device = values.device if isinstance(values, Tensor) else torch.device("cpu")
    grid = values.detach().cpu().double().numpy() if isinstance(values, Tensor) else np.asarray(values, np.float64)
    if grid.ndim != 3 or min(grid.shape) < 2:
        raise ValueError(f"marching_cubes needs a 3-D grid with at least 2 samples per axis, got {grid.shape}")
    verts, faces = mcubes.marching_cubes(np.ascontiguousarray(grid), float(threshold))
    lo = torch.as_tensor(bbox_min, dtype=torch.float64).cpu()
    hi = torch.as_tensor(bbox_max, dtype=torch.float64).cpu()
    step = (hi - lo) / (torch.tensor(grid.shape, dtype=torch.float64) - 1)
    v = torch.from_numpy(np.asarray(verts, np.float64)).reshape(-1, 3) * step + lo
    f = torch.from_numpy(np.asarray(faces, np.int64)).reshape(-1, 3)
    return Mesh(v_pos=v.to(device=device, dtype=torch.float32), t_pos_idx=f.to(device))
