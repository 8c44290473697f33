"""nerfacc (CUDA) backend of :class:`~.volume.VolumeRenderer`: ray marching and weights.

The same two steps as the torch twin in :mod:`.volume`, done by nerfacc's kernels. nerfacc is
imported inside the functions (its CUDA extension is built on first use), never at import time.
Both backends read the same :class:`~.occupancy_grid.OccupancyGrid` buffers, so a checkpoint does
not depend on the backend.
"""

from __future__ import annotations

import importlib.util

from torch import Tensor


def nerfacc_available() -> bool:
    """Whether ``import nerfacc`` can succeed (checked without importing it)."""
    return importlib.util.find_spec("nerfacc") is not None


def march_rays_nerfacc(
    rays_o: Tensor, rays_d: Tensor, t_min: Tensor, t_max: Tensor, binaries: Tensor, aabbs: Tensor, step_size: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Fixed-step marching through the occupied cells.

    rays_o/rays_d (R,3) (unit directions), t_min/t_max (R,) segment to march (already jittered by
    the caller when stratified), binaries (L,X,Y,Z) bool, aabbs (L,6). Intervals are
    ``[t_min + k·step, t_min + (k+1)·step]``; one is kept when its midpoint is before ``t_max``
    and lies in an occupied cell. Returns ray_indices (S,) long sorted by ray, t_starts (S,),
    t_ends (S,).
    """
    import nerfacc

    intervals, samples, _ = nerfacc.traverse_grids(
        rays_o.contiguous(),
        rays_d.contiguous(),
        binaries.contiguous(),
        aabbs.contiguous(),
        near_planes=t_min.contiguous(),
        far_planes=t_max.contiguous(),
        step_size=step_size,
        cone_angle=0.0,
    )
    t_starts = intervals.vals[intervals.is_left]
    t_ends = intervals.vals[intervals.is_right]
    return samples.ray_indices.long(), t_starts, t_ends


def render_weights_nerfacc(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int
) -> tuple[Tensor, Tensor]:
    """Packed (S,) inputs → weights (S,), transmittance (S,) (differentiable in ``sigmas``)."""
    import nerfacc

    weights, trans, _ = nerfacc.render_weight_from_density(
        t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays
    )
    return weights, trans


def visible_nerfacc(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int, early_stop_eps: float
) -> Tensor:
    """(S,) bool: samples whose transmittance is still above ``early_stop_eps``."""
    import nerfacc

    return nerfacc.render_visibility_from_density(
        t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays, early_stop_eps=early_stop_eps, alpha_thre=0.0
    )
