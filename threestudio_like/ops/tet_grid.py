"""Tetrahedral grid filling the cube ``[-1, 1]^3`` (the DMTet lattice), generated on the fly.

Resolution ``N`` = cells per side: ``(N+1)^3`` vertices on a regular lattice, each cube cell cut
into 6 tetrahedra along its main diagonal (Kuhn / Freudenthal subdivision). Every cell is cut
the same way, so the triangles on a shared cell face are the same for both neighbours: the grid
is conforming (each interior triangle belongs to exactly two tets) and marching tets on it
gives watertight meshes.

* ``vertices`` (V,3) float32, ``V = (N+1)^3``; vertex ``(i, j, k)`` (x, y, z lattice indices)
  sits at ``-1 + 2 (i, j, k) / N`` and has index ``(i (N+1) + j) (N+1) + k``.
* ``tets`` (T,4) int64, ``T = 6 N^3``, positively oriented:
  ``det(v1 - v0, v2 - v0, v3 - v0) > 0``.

For scale: threestudio's ``128_tets`` file (quartet) has about as many tets as ``N = 64`` here.

Command line (writes an ``.npz`` with ``vertices`` and ``tets``)::

    python -m threestudio_like.ops.tet_grid --resolution 128 --out tets_128.npz
"""

from __future__ import annotations

import argparse
import functools
import itertools
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.errors import UserError


def _cell_tets() -> Tensor:
    """(6,4,3) corner offsets of the six positively oriented Kuhn tets of the unit cell."""
    tets = []
    for perm in itertools.permutations(range(3)):
        corner = [0, 0, 0]
        path = [tuple(corner)]
        for axis in perm:  # walk from (0,0,0) to (1,1,1) one axis at a time
            corner[axis] = 1
            path.append(tuple(corner))
        t = torch.tensor(path, dtype=torch.float64)
        if torch.linalg.det(t[1:] - t[0]) < 0:
            path[1], path[2] = path[2], path[1]
        tets.append(path)
    return torch.tensor(tets, dtype=torch.int64)


def generate_tet_grid(resolution: int) -> tuple[Tensor, Tensor]:
    """The grid at ``resolution`` cells per side: ``(vertices (V,3) float32, tets (T,4) int64)``."""
    if not isinstance(resolution, int) or resolution < 1:
        raise UserError(f"tet grid resolution must be a positive integer, got {resolution!r}")
    n = resolution
    m = n + 1
    axis = torch.linspace(-1.0, 1.0, m, dtype=torch.float32)
    vertices = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    cells = torch.arange(n, dtype=torch.int64)
    ci, cj, ck = torch.meshgrid(cells, cells, cells, indexing="ij")
    base = ((ci * m + cj) * m + ck).reshape(-1, 1, 1)  # (C,1,1) index of each cell's (0,0,0) corner
    offsets = _cell_tets()
    local = (offsets[..., 0] * m + offsets[..., 1]) * m + offsets[..., 2]  # (6,4)
    tets = (base + local).reshape(-1, 4)
    return vertices, tets


@functools.lru_cache(maxsize=4)
def tet_grid(resolution: int) -> tuple[Tensor, Tensor]:
    """Cached :func:`generate_tet_grid` (CPU tensors shared between callers: never modify them
    in place; ``.to(device)`` makes a copy)."""
    return generate_tet_grid(resolution)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a tetrahedral grid of [-1,1]^3 to an .npz file.")
    parser.add_argument("--resolution", type=int, required=True, help="cells per side")
    parser.add_argument("--out", type=Path, required=True, help="output .npz (vertices, tets)")
    args = parser.parse_args(argv)
    vertices, tets = generate_tet_grid(args.resolution)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".partial.npz")
    np.savez_compressed(tmp, vertices=vertices.numpy(), tets=tets.numpy())
    tmp.replace(args.out)
    print(f"wrote {args.out}: {vertices.shape[0]} vertices, {tets.shape[0]} tets")


if __name__ == "__main__":
    main()
