"""Occupancy grid over the scene box, for skipping empty space in volume rendering.

Semantics follow nerfacc's ``OccGridEstimator`` (Instant-NGP): the box ``[-r, r]^3`` (level 0;
level ``l`` covers ``[-2^l r, 2^l r]^3``) is cut into ``resolution^3`` cells per level. Each cell
keeps an exponential moving *maximum* of its occupancy, ``occ = density(x) · step_size`` at a
random point ``x`` of the cell (≈ the opacity of one render step through it)::

    occs[cell] = max(ema_decay · occs[cell], occ)

A cell is *occupied* when ``occs > min(threshold, mean(occs))``: the mean caps the threshold
so that a scene that is faint everywhere (early in training) keeps its densest cells.
During the first ``warmup_steps`` every cell is re-sampled on each update; afterwards a random
quarter of the cells plus up to as many occupied cells. Before the first update every cell
counts as occupied, so a fresh grid skips nothing.

State lives in buffers (``occs`` (L,R,R,R) float, ``binaries`` (L,R,R,R) bool, indexed
``[level, ix, iy, iz]`` as nerfacc's ``traverse_grids`` expects), so it checkpoints with the
renderer. The box radius is not part of the state: it is passed to each call (it belongs to
the geometry).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..core.errors import UserError

DensityFn = Callable[[Tensor], Tensor]
"""points (N,3) → density (N,1) or (N,)."""


class OccupancyGrid(nn.Module):
    """Binary occupancy of ``levels × resolution³`` cells; see the module docstring."""

    def __init__(
        self,
        resolution: int = 32,
        levels: int = 1,
        threshold: float = 0.01,
        ema_decay: float = 0.95,
        warmup_steps: int = 256,
        eval_chunk: int = 65536,
    ) -> None:
        super().__init__()
        if resolution < 1 or levels < 1:
            raise UserError(f"occupancy grid resolution ({resolution}) and levels ({levels}) must be ≥ 1")
        if not 0.0 <= ema_decay <= 1.0:
            raise UserError(f"occupancy grid ema_decay must be in [0, 1], got {ema_decay}")
        self.resolution, self.levels = resolution, levels
        self.threshold, self.ema_decay, self.warmup_steps = threshold, ema_decay, warmup_steps
        self.eval_chunk = eval_chunk
        shape = (levels, resolution, resolution, resolution)
        self.register_buffer("occs", torch.zeros(shape))
        self.register_buffer("binaries", torch.ones(shape, dtype=torch.bool))

    @property
    def cells_per_level(self) -> int:
        return self.resolution**3

    def aabbs(self, radius: float) -> Tensor:
        """(L,6) boxes ``(xmin, ymin, zmin, xmax, ymax, zmax)`` of the levels (nerfacc layout)."""
        half = radius * 2.0 ** torch.arange(self.levels, dtype=self.occs.dtype, device=self.occs.device)
        return torch.cat([-half[:, None].expand(-1, 3), half[:, None].expand(-1, 3)], dim=1)

    @torch.no_grad()
    def occupied(self, points: Tensor, radius: float) -> Tensor:
        """points (...,3) → (...) bool: the point lies in an occupied cell of the finest level
        that contains it; points outside every level are unoccupied."""
        res = self.resolution
        scaled = points / radius
        extent = scaled.abs().amax(dim=-1)
        inside = extent <= 2.0 ** (self.levels - 1)
        if self.levels == 1:
            level = torch.zeros_like(extent, dtype=torch.long)
        else:  # finest level whose box [-2^l r, 2^l r] holds the point
            level = torch.ceil(torch.log2(extent.clamp(min=1e-12))).clamp(0, self.levels - 1).long()
            scaled = scaled / torch.pow(2.0, level.to(scaled.dtype))[..., None]
        cell = ((scaled + 1.0) * (0.5 * res)).long().clamp_(0, res - 1)
        flat = ((level * res + cell[..., 0]) * res + cell[..., 1]) * res + cell[..., 2]
        return self.binaries.view(-1)[flat] & inside

    @torch.no_grad()
    def occupied_bounds(self, radius: float) -> Optional[tuple[Tensor, Tensor]]:
        """World-space box (min (3,), max (3,)) around all occupied cells; None if none is."""
        idx = torch.nonzero(self.binaries)
        if idx.shape[0] == 0:
            return None
        half = radius * torch.pow(2.0, idx[:, :1].to(self.occs.dtype))
        ijk = idx[:, 1:].to(self.occs.dtype)
        lo = (ijk / self.resolution * 2.0 - 1.0) * half
        hi = ((ijk + 1.0) / self.resolution * 2.0 - 1.0) * half
        return lo.amin(dim=0), hi.amax(dim=0)

    @torch.no_grad()
    def update(
        self,
        density_fn: DensityFn,
        radius: float,
        step: int,
        step_size: float,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        """One EMA update: sample cells (all of them before ``warmup_steps``), evaluate
        ``density_fn`` at a random point of each, ``occ = density · step_size``, then re-binarise."""
        device, n = self.occs.device, self.cells_per_level
        occs = self.occs.view(self.levels, n)
        for lvl in range(self.levels):
            if step < self.warmup_steps:
                cells = torch.arange(n, device=device)
            else:
                cells = torch.randint(n, (n // 4,), generator=generator, device=_gen_device(generator, device)).to(
                    device
                )
                occupied = torch.nonzero(self.binaries[lvl].flatten())[:, 0]
                if occupied.numel() > n // 4:
                    pick = torch.randint(
                        occupied.numel(), (n // 4,), generator=generator, device=_gen_device(generator, device)
                    ).to(device)
                    occupied = occupied[pick]
                cells = torch.cat([cells, occupied])
            ijk = torch.stack(torch.unravel_index(cells, (self.resolution,) * 3), dim=-1).to(occs.dtype)
            jitter = torch.rand(
                ijk.shape, generator=generator, dtype=occs.dtype, device=_gen_device(generator, device)
            ).to(device)
            half = radius * 2.0**lvl
            points = ((ijk + jitter) / self.resolution * 2.0 - 1.0) * half
            occ = torch.cat([density_fn(chunk).reshape(-1) for chunk in points.split(self.eval_chunk)])
            occ = occ.to(occs.dtype) * step_size
            occs[lvl, cells] = torch.maximum(occs[lvl, cells] * self.ema_decay, occ)
        thre = min(self.threshold, occs.mean().item())
        self.binaries.copy_(self.occs > thre)

    def occupied_fraction(self) -> float:
        """Fraction of occupied cells (all levels)."""
        return self.binaries.float().mean().item()


def _gen_device(generator: Optional[torch.Generator], device: torch.device) -> torch.device:
    """Random numbers are drawn on the generator's device (then moved) so a CPU generator
    also drives CUDA state."""
    return generator.device if generator is not None else device
