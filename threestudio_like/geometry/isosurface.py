"""Choosing and checking the density level at which a volume becomes a surface.

Used by every density volume (``isosurface()`` for export, and DMTet's ``create_from``).

``isosurface_threshold: auto`` resolves the level from the density grid itself:

1. **Otsu's split** of ``log(1 + density)``: the level that best separates the grid values into
   two classes (maximal between-class variance) — the gap between empty space and the object,
   whatever the density scale the training reached;
2. raised, if needed, so that at most ``max_fill`` of the grid is inside (an upper quantile
   bound: a level deep in the empty-space mode would turn the whole box into a blob);
3. raised, if needed, to ``min_threshold`` (a field whose densities all lie below it is empty).

Cavities: SDS and reference-view losses only see a volume from outside, and the trained density is
often a shell around a thinner, partly empty interior. :func:`enclosed_voids` finds the empty cells
no path of empty cells joins to the box's boundary; :func:`extract_isosurface` fills them (no
inner surfaces in an export) and DMTet's hand-off counts them as inside — on a 32³ tet grid a thin
shell's gaps would otherwise open the cavity to the outside and the hollow would survive the refine.

Whatever the level (auto or a number), :func:`check_threshold` refuses a grid that would give an
empty mesh or a completely filled box, with a :class:`UserError` that names the level tried, the
density range and a level to try instead — exports never come out empty silently.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from scipy.ndimage import binary_fill_holes
from torch import Tensor

from ..core.errors import UserError
from ..export.mesh_ops import remove_small_components
from ..ops.marching_cubes import marching_cubes
from .base import Mesh


def otsu_threshold(values: Tensor, n_bins: int = 256) -> float:
    """Otsu's level for 1-D ``values``: the bin edge maximising the between-class variance
    ``w0 w1 (mu0 - mu1)^2``; ``values.max()`` for a constant input."""
    v = values.reshape(-1).double()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    hist = torch.histc(v, bins=n_bins, min=lo, max=hi)
    centers = lo + (torch.arange(n_bins, dtype=torch.float64) + 0.5) * (hi - lo) / n_bins
    w0 = torch.cumsum(hist, 0)[:-1]
    s0 = torch.cumsum(hist * centers, 0)[:-1]
    total, s_total = hist.sum(), (hist * centers).sum()
    w1 = total - w0
    valid = (w0 > 0) & (w1 > 0)
    mu0 = s0 / w0.clamp(min=1)
    mu1 = (s_total - s0) / w1.clamp(min=1)
    between = torch.where(valid, w0 * w1 * (mu0 - mu1) ** 2, torch.full_like(w0, -1.0))
    k = int(torch.argmax(between))
    return lo + (k + 1) * (hi - lo) / n_bins  # upper edge of the last bin of the low class


def quantile(values: Tensor, q: float) -> float:
    """The ``q`` quantile (lower value, no interpolation) of any number of values
    (``torch.quantile`` stops at 2^24 elements, a 256^3 grid has more)."""
    v = values.reshape(-1)
    k = min(max(int(q * (v.numel() - 1)) + 1, 1), v.numel())
    return float(torch.kthvalue(v.cpu(), k).values)


def auto_threshold(density: Tensor, max_fill: float = 0.6, min_threshold: float = 1.0) -> float:
    """The ``auto`` level of a density grid (any shape): see the module docstring."""
    d = density.detach().reshape(-1).float().cpu()
    level = float(torch.expm1(torch.tensor(otsu_threshold(torch.log1p(d.clamp(min=0))))))
    if 0.0 < max_fill < 1.0:
        level = max(level, quantile(d, 1.0 - max_fill))
    return max(level, min_threshold)


def check_threshold(density: Tensor, threshold: float, where: str) -> None:
    """Raise :class:`UserError` unless some but not all of the grid is inside (``> threshold``)."""
    d = density.detach().reshape(-1).float()
    n_inside = int((d > threshold).sum())
    if 0 < n_inside < d.numel():
        return
    lo, hi = float(d.min()), float(d.max())
    state = "empty (no density above it)" if n_inside == 0 else "completely filled (every sample above it)"
    if hi - lo <= 1e-6 * max(abs(hi), 1.0):
        raise UserError(
            f"{where}: isosurface at threshold {threshold:g} is {state}: the density grid is constant "
            f"({lo:g}), so there is no surface; train longer or check the geometry's density_bias"
        )
    suggestion = quantile(d, 0.9)
    if not lo <= suggestion < hi:
        suggestion = 0.5 * (lo + hi)
    raise UserError(
        f"{where}: isosurface at threshold {threshold:g} is {state}; densities range over "
        f"[{lo:g}, {hi:g}]; set isosurface_threshold to a value inside it, e.g. {suggestion:.4g}, "
        "or to auto"
    )


def resolve_threshold(density: Tensor, spec: Any, max_fill: float, min_threshold: float, where: str) -> float:
    """The level for ``spec`` (a number or ``"auto"``) on this grid, checked by :func:`check_threshold`."""
    if spec == "auto":
        level = auto_threshold(density, max_fill, min_threshold)
    elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
        level = float(spec)
    else:
        raise UserError(f"{where}.isosurface_threshold: expected a number or 'auto', got {spec!r}")
    check_threshold(density, level, where)
    return level


def density_grid(
    density_fn: Callable[[Tensor], Tensor], resolution: int, radius: float, device: torch.device, chunk: int = 1 << 16
) -> Tensor:
    """``density_fn`` (N,3)→(N,1) sampled on ``resolution^3`` points spanning ``[-radius, radius]^3``
    (corners included), as an (R,R,R) grid in the axis order of :func:`marching_cubes`."""
    axis = torch.linspace(-radius, radius, resolution, device=device)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    with torch.no_grad():
        values = torch.cat([density_fn(p).reshape(-1) for p in points.split(chunk)])
    return values.reshape(resolution, resolution, resolution)


def at_nearest_grid_point(grid: Tensor, points: Tensor, radius: float) -> Tensor:
    """(N,) values of an (R,R,R) grid laid out as :func:`density_grid` (R points per axis over
    ``[-radius, radius]``, corners included) at the grid point nearest each of ``points`` (N,3)."""
    n = grid.shape[0]
    ijk = ((points / radius + 1) * 0.5 * (n - 1)).round().long().clamp(0, n - 1)
    return grid[ijk[:, 0], ijk[:, 1], ijk[:, 2]]


def enclosed_voids(inside: Tensor) -> Tensor:
    """(R,R,R) bool: the cells not ``inside`` that no path of face-adjacent cells outside
    ``inside`` joins to the grid's boundary (cavities)."""
    occupied = inside.detach().cpu().numpy().astype(bool)
    return torch.from_numpy(binary_fill_holes(occupied) & ~occupied).to(inside.device)


def extract_isosurface(
    density: Tensor,
    threshold: float,
    radius: float,
    where: str,
    remove_outliers: bool = True,
    outlier_fraction: float = 0.01,
) -> Mesh:
    """Marching cubes of a checked (R,R,R) density grid over ``[-radius, radius]^3``, its
    :func:`enclosed_voids` filled (raised to the grid's largest density); raises
    :class:`UserError` if nothing is left."""
    voids = enclosed_voids(density > threshold)
    if bool(voids.any()):
        density = torch.where(voids, density.max(), density)
    mesh = marching_cubes(density, threshold, [-radius] * 3, [radius] * 3)
    if remove_outliers:
        mesh, _ = remove_small_components(mesh, min_face_fraction=outlier_fraction)
    if mesh.num_faces == 0:
        lo, hi = float(density.min()), float(density.max())
        raise UserError(
            f"{where}: isosurface at threshold {threshold:g} has no faces (densities range over "
            f"[{lo:g}, {hi:g}]); raise isosurface_resolution or set isosurface_threshold closer to "
            f"{0.5 * (lo + hi):.4g}"
        )
    return mesh
