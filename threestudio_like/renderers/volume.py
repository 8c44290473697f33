"""Volume rendering of an implicit geometry with empty-space skipping.

Per ray (pixel) of a :class:`~threestudio_like.data.cameras.CameraBatch`:

1. **Segment**: intersect the ray with the scene box ``[-r, r]^3`` (``r = geometry.cfg.radius``),
   clipped to ``[near_plane, far_plane]``.
2. **Samples**: fixed-step marching, ``step = 2√3·r / num_samples_per_ray`` (the box diagonal
   holds ``num_samples_per_ray`` steps; shorter segments get fewer). Intervals are
   ``[t0 + k·step, t0 + (k+1)·step]`` from ``t0 = t_near`` (shifted by ``U[0,1)·step`` per ray
   while training with ``randomized``); an interval is kept while its midpoint ``t_mid`` is
   before ``t_far``. This is nerfacc's marching, so both backends sample the same points.
3. **Skipping** (``estimator: occgrid``): drop samples whose midpoint lies in an empty cell of
   the :class:`~.occupancy_grid.OccupancyGrid`, and, outside training, samples behind a
   transmittance below ``early_stop_eps`` (found by a no-grad density pass). Kept samples keep
   their spacing, so where the grid is right the image equals ``estimator: uniform``.
4. **Geometry** at the kept samples only (packed tensors, S samples, ``ray_indices`` (S,)).
5. **Weights**: ``α = 1 − exp(−σ·δ)``, ``T = exp(−Σ_{j<i} σ_j δ_j)`` per ray, ``w = T·α``.
6. **Accumulate** ``rgb = Σ w·c``, ``opacity = Σ w``, ``depth = Σ w·t_mid`` (not divided by the
   opacity: 0 where empty), ``normal = Σ w·n``; composite ``rgb + (1 − opacity)·background``.

Steps 2 and 5 run in torch here or in nerfacc's CUDA kernels (``implementation``, chosen by
:func:`~threestudio_like.ops.backend.choose_backend`), see :mod:`.volume_nerfacc`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ..background.base import Background
from ..core.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability
from ..core.errors import UserError
from ..data.cameras import CameraBatch
from ..materials.base import Material
from ..ops.backend import choose_backend
from .base import Renderer, RenderOutput
from .occupancy_grid import OccupancyGrid
from .volume_nerfacc import march_rays_nerfacc, nerfacc_available, render_weights_nerfacc, visible_nerfacc

# ----------------------------------------------------------------------------- torch twin ops


def ray_aabb_intersect(
    rays_o: Tensor, rays_d: Tensor, box_min: float | Tensor, box_max: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Slab test against the box ``[box_min, box_max]`` (floats or (3,) tensors). rays (R,3) →
    t_near (R,), t_far (R,); a ray misses the box when ``t_far <= t_near``. ``t_near`` may be
    negative (origin inside the box)."""
    safe_d = torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    inv = 1.0 / safe_d
    t0 = (box_min - rays_o) * inv
    t1 = (box_max - rays_o) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far


def march_rays_torch(
    rays_o: Tensor,
    rays_d: Tensor,
    t_min: Tensor,
    t_max: Tensor,
    step_size: float,
    max_steps: int,
    grid: Optional[OccupancyGrid] = None,
    radius: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Torch twin of :func:`.volume_nerfacc.march_rays_nerfacc` (same intervals).

    rays (R,3), t_min/t_max (R,) → ray_indices (S,) long sorted by ray, t_starts (S,), t_ends (S,).
    Intervals ``[t_min + k·step, t_min + (k+1)·step]`` for ``k < max_steps`` whose midpoint is
    before ``t_max``; with ``grid``, only those whose midpoint is in an occupied cell. The grid
    path first clips each ray to the box around the occupied cells (whole steps skipped, the
    comb of samples is unchanged), so its cost follows the occupied region, not the scene box.
    """
    dtype, device = rays_o.dtype, rays_o.device
    k0 = torch.zeros_like(t_min)
    t_end = t_max
    n_cols = max_steps
    if grid is not None:
        bounds = grid.occupied_bounds(radius)
        if bounds is None:
            empty = torch.zeros(0, dtype=dtype, device=device)
            return torch.zeros(0, dtype=torch.long, device=device), empty, empty
        b_near, b_far = ray_aabb_intersect(rays_o, rays_d, bounds[0].to(dtype), bounds[1].to(dtype))
        t_end = torch.minimum(t_max, b_far)
        # first k whose midpoint reaches the occupied box; number of midpoints before t_end
        k0 = torch.ceil((b_near - t_min) / step_size - 0.5).clamp(min=0)
        k_end = torch.ceil((t_end - t_min) / step_size - 0.5).clamp(min=0, max=max_steps)
        n_cols = int((k_end - k0).max().clamp(min=0).item()) if k0.numel() else 0
    k = k0[:, None] + torch.arange(n_cols, dtype=dtype, device=device)  # (R,C)
    t_start = t_min[:, None] + k * step_size
    t_mid = t_start + 0.5 * step_size
    keep = (t_mid < t_end[:, None]) & (k < max_steps)
    if grid is not None:
        points = rays_o[:, None, :] + t_mid[..., None] * rays_d[:, None, :]
        keep &= grid.occupied(points, radius)
    ray_idx, col = torch.nonzero(keep, as_tuple=True)
    t_starts = t_start[ray_idx, col]
    return ray_idx, t_starts, t_starts + step_size


def packed_exclusive_sum(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Per-ray exclusive cumulative sum of packed values (S,) whose ``ray_indices`` (S,) are
    grouped by ray (sorted). Scattered into a zero-padded (R, max samples per ray) layout, so the
    sum never runs across rays (no cancellation in float32); differentiable in ``values``."""
    if values.numel() == 0:
        return values.clone()
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = torch.cumsum(counts, 0) - counts
    col = torch.arange(values.shape[0], device=values.device) - starts[ray_indices]
    dense = values.new_zeros(n_rays, int(counts.max()))
    dense = dense.index_put((ray_indices, col), values)
    exclusive = torch.cumsum(dense, dim=1) - dense
    return exclusive[ray_indices, col]


def render_weights_torch(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int
) -> tuple[Tensor, Tensor]:
    """Packed (S,) → weights ``T·(1 − exp(−σδ))`` (S,), transmittance T (S,)."""
    sigma_delta = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sigma_delta)
    trans = torch.exp(-packed_exclusive_sum(sigma_delta, ray_indices, n_rays))
    return trans * alphas, trans


@torch.no_grad()
def visible_torch(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int, early_stop_eps: float
) -> Tensor:
    """(S,) bool: transmittance still above ``early_stop_eps`` at the sample."""
    _, trans = render_weights_torch(t_starts, t_ends, sigmas, ray_indices, n_rays)
    return trans > early_stop_eps


def accumulate_along_rays(weights: Tensor, ray_indices: Tensor, n_rays: int, values: Optional[Tensor] = None) -> Tensor:
    """Σ over each ray's samples of ``w`` (values None) or ``w·values``: (S,), (S,C) → (R,1|C)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = src.new_zeros(n_rays, src.shape[1])
    return out.index_add(0, ray_indices, src)


# ----------------------------------------------------------------------------- renderer


class VolumeRenderer(Renderer):
    """Renders an implicit geometry (density + features) with a material over a background.

    ``forward(cameras, geometry, material, background, shading, generator) -> RenderOutput``;
    see the module docstring for the algorithm. Needs ``geometry(points (N,3), output_normal)``
    → GeometryOutput with ``density`` (N,1), ``features`` (N,F), ``normal`` (N,3);
    ``geometry.forward_density(points) -> (N,1)``; ``geometry.cfg.radius``.

    ``RenderOutput.extras``: ``weights``, ``t_mid``, ``intervals`` (S,1); ``ray_indices`` (S,)
    into the B·H·W rays (row-major); ``dirs`` (S,3) unit ray directions; ``normal_points`` (S,3)
    per-sample normals (when normals are computed; orientation loss ``Σ w·max(0, n·d)²``);
    ``num_samples`` (int) geometry evaluations with gradients (S).
    """

    @dataclass
    class Config:
        num_samples_per_ray: PositiveInt = 64
        """Steps along the scene box diagonal: render step = 2√3·radius / this."""
        randomized: bool = True
        """While training, shift each ray's samples by a random fraction of a step (stratified)."""
        near_plane: NonNegativeFloat = 0.0
        """Nothing is sampled closer than this to the camera (besides the scene box clip)."""
        far_plane: PositiveFloat = 1e10
        """Nothing is sampled farther than this from the camera (besides the scene box clip)."""
        implementation: Literal["auto", "torch", "nerfacc"] = "auto"
        """Marching/weights backend: auto (nerfacc on CUDA when installed, else torch) | torch | nerfacc."""
        estimator: Literal["occgrid", "uniform"] = "occgrid"
        """occgrid (skip empty cells and, in eval, occluded samples) | uniform (every step)."""
        grid_resolution: PositiveInt = 32
        """Occupancy grid cells per axis over the scene box."""
        grid_levels: PositiveInt = 1
        """Occupancy grid levels (level l covers 2^l × the box; samples stay in the box)."""
        occ_threshold: NonNegativeFloat = 0.01
        """A cell is occupied when its EMA of density·step (≈ opacity of one step) exceeds
        min(occ_threshold, mean over cells)."""
        grid_ema_decay: Probability = 0.95
        """Decay of the per-cell moving maximum."""
        grid_update_every: PositiveInt = 16
        """Update the grid every this many training steps (always at the first training step)."""
        grid_warmup_steps: NonNegativeInt = 256
        """Before this step every cell is re-sampled at each update; after, a random quarter plus
        occupied cells."""
        early_stop_eps: float = 1e-4
        """Outside training, drop samples behind a transmittance below this (0 = off; occgrid only)."""
        train_chunk_size: NonNegativeInt = 0
        """Rays rendered at once while training (0 = all)."""
        eval_chunk_size: NonNegativeInt = 16384
        """Rays rendered at once outside training (0 = all)."""
        return_normals: bool = False
        """Always compute normals (image ``normal`` and ``extras['normal_points']``), not only when
        the material's shading needs them."""

    def __init__(self, cfg=None, where: str = "renderer") -> None:
        nn.Module.__init__(self)
        c = self.parse_config(cfg, where)
        self.where = where
        self._backend(None)  # a missing nerfacc is an error now, not at the first render
        self.occupancy_grid: Optional[OccupancyGrid] = None
        if c.estimator == "occgrid":
            self.occupancy_grid = OccupancyGrid(
                c.grid_resolution, c.grid_levels, c.occ_threshold, c.grid_ema_decay, c.grid_warmup_steps
            )
        self._global_step = 0
        self._grid_updated_at: Optional[int] = None

    # --------------------------------------------------------------------- schedule / grid

    def on_update_step(self, epoch: int, global_step: int) -> None:
        self._global_step = global_step

    def render_step_size(self, radius: float) -> float:
        """Distance between samples: the box diagonal over ``num_samples_per_ray``."""
        return 2.0 * math.sqrt(3.0) * radius / self.cfg.num_samples_per_ray

    def update_occupancy_grid(
        self, geometry: nn.Module, step: int, generator: Optional[torch.Generator] = None
    ) -> None:
        """Run one occupancy grid update now (the renderer does it by itself while training)."""
        if self.occupancy_grid is None:
            raise UserError("this volume renderer has no occupancy grid; set estimator=occgrid")
        radius = float(geometry.cfg.radius)
        self.occupancy_grid.update(geometry.forward_density, radius, step, self.render_step_size(radius), generator)
        self._grid_updated_at = step

    def _maybe_update_grid(self, geometry: nn.Module, generator: Optional[torch.Generator]) -> None:
        """Update at steps 0, N, 2N… (N = ``grid_update_every``), once per step. Only the step
        decides, not what this object has seen: a resumed run (grid restored from its checkpoint)
        updates at the same steps as an uninterrupted one."""
        step = self._global_step
        if self._grid_updated_at != step and step % self.cfg.grid_update_every == 0:
            self.update_occupancy_grid(geometry, step, generator)

    def _backend(self, device: Optional[torch.device]) -> str:
        """'nerfacc' or 'torch' for rays on ``device``."""
        return choose_backend(
            self.cfg.implementation, "nerfacc", nerfacc_available, device, f"{self.where}.implementation"
        )

    # --------------------------------------------------------------------- rendering

    def forward(
        self,
        cameras: CameraBatch,
        geometry: nn.Module,
        material: Material,
        background: Background,
        shading: str = "diffuse",
        generator: Optional[torch.Generator] = None,
    ) -> RenderOutput:
        """Render B views (H×W). ``generator`` drives the jitter, the grid update and the background."""
        c = self.cfg
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        rays_o = cameras.rays_o.reshape(-1, 3)
        rays_d = cameras.rays_d.reshape(-1, 3)
        light = cameras.light_position.repeat_interleave(h * w, dim=0)
        n_rays = rays_o.shape[0]
        if self.training and self.occupancy_grid is not None:
            self._maybe_update_grid(geometry, generator)
        need_normal = c.return_normals or (material.requires_normal and shading != "albedo")
        chunk = c.train_chunk_size if self.training else c.eval_chunk_size
        chunk = n_rays if chunk <= 0 else chunk
        parts = [
            self._render_rays(
                rays_o[s : s + chunk],
                rays_d[s : s + chunk],
                light[s : s + chunk],
                s,
                geometry,
                material,
                shading,
                need_normal,
                generator,
            )
            for s in range(0, n_rays, chunk)
        ]
        merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0] if parts[0][k] is not None}

        bg = background(cameras.rays_d, generator=generator)
        opacity = merged.pop("opacity").reshape(b, h, w, 1)
        rgb = merged.pop("rgb").reshape(b, h, w, 3) + (1.0 - opacity) * bg
        depth = merged.pop("depth").reshape(b, h, w, 1)
        normal = merged.pop("normal").reshape(b, h, w, 3) if need_normal else None
        merged["num_samples"] = int(merged["weights"].shape[0])
        return RenderOutput(rgb=rgb, opacity=opacity, depth=depth, normal=normal, extras=merged)

    def _render_rays(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        light: Tensor,
        offset: int,
        geometry: nn.Module,
        material: Material,
        shading: str,
        need_normal: bool,
        generator: Optional[torch.Generator],
    ) -> dict[str, Optional[Tensor]]:
        """R rays (R,3) → per-ray rgb (R,3) opacity/depth (R,1) normal (R,3)|None and packed extras."""
        c = self.cfg
        n_rays = rays_o.shape[0]
        radius = float(geometry.cfg.radius)
        step = self.render_step_size(radius)
        backend = self._backend(rays_o.device)
        grid = self.occupancy_grid

        # 1. segment in the box, 2. marching (3. minus empty cells)
        t_min, t_max = ray_aabb_intersect(rays_o, rays_d, -radius, radius)
        t_min, t_max = t_min.clamp(min=c.near_plane), t_max.clamp(max=c.far_plane)
        if self.training and c.randomized:
            t_min = t_min + step * torch.rand(
                n_rays,
                generator=generator,
                dtype=rays_o.dtype,
                device=generator.device if generator is not None else rays_o.device,
            ).to(rays_o.device)
        if backend == "nerfacc":
            if grid is not None:
                binaries, aabbs = grid.binaries, grid.aabbs(radius)
            else:
                binaries = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=rays_o.device)
                aabbs = torch.tensor([[-radius] * 3 + [radius] * 3], dtype=rays_o.dtype, device=rays_o.device)
            ray_indices, t_starts, t_ends = march_rays_nerfacc(rays_o, rays_d, t_min, t_max, binaries, aabbs, step)
        else:
            ray_indices, t_starts, t_ends = march_rays_torch(
                rays_o, rays_d, t_min, t_max, step, c.num_samples_per_ray, grid, radius
            )
        weights_fn = render_weights_nerfacc if backend == "nerfacc" else render_weights_torch

        # 3. occluded samples (eval): a density pass without gradients
        if grid is not None and not self.training and c.early_stop_eps > 0 and ray_indices.numel() > 0:
            with torch.no_grad():
                t_mid = 0.5 * (t_starts + t_ends)
                pts = rays_o[ray_indices] + t_mid[:, None] * rays_d[ray_indices]
                sig = geometry.forward_density(pts).reshape(-1)
                visible_fn = visible_nerfacc if backend == "nerfacc" else visible_torch
                vis = visible_fn(t_starts, t_ends, sig, ray_indices, n_rays, c.early_stop_eps)
            ray_indices, t_starts, t_ends = ray_indices[vis], t_starts[vis], t_ends[vis]

        # 4. geometry and colour at the kept samples
        t_mid = 0.5 * (t_starts + t_ends)
        dirs = rays_d[ray_indices]
        points = rays_o[ray_indices] + t_mid[:, None] * dirs
        geo = geometry(points, output_normal=need_normal)
        sigmas = geo.density.reshape(-1)
        rgb_points = material(geo.features, dirs, geo.normal, light[ray_indices], points, shading)

        # 5. weights, 6. accumulation
        weights, _ = weights_fn(t_starts, t_ends, sigmas, ray_indices, n_rays)
        out = {
            "rgb": accumulate_along_rays(weights, ray_indices, n_rays, rgb_points),
            "opacity": accumulate_along_rays(weights, ray_indices, n_rays),
            "depth": accumulate_along_rays(weights, ray_indices, n_rays, t_mid[:, None]),
            "normal": accumulate_along_rays(weights, ray_indices, n_rays, geo.normal) if need_normal else None,
            "weights": weights[:, None],
            "t_mid": t_mid[:, None],
            "intervals": (t_ends - t_starts)[:, None],
            "ray_indices": ray_indices + offset,
            "dirs": dirs,
            "normal_points": geo.normal if need_normal else None,
        }
        return out
