"""Dense voxel feature grid (DVGO / Plenoxels style): the cheapest encoding on a CPU.

:class:`DenseGridEncoding` holds ``grid`` (R, R, R, C) with ``grid[i, j, k]`` the features at
``u = (i, j, k) / (R − 1)`` (corners included, x first). A point ``u`` in [0,1]^3 gets the
trilinear interpolation of its cell's eight corners — ``grid_sample(align_corners=True)``
semantics — written as one gather in torch, so it is differentiable twice (analytic normals).
Use it as ``pos_encoding_config: {otype: DenseGrid, resolution: 32, n_channels: 8}`` of an
``ImplicitVolume``: one lookup per point instead of a hash grid's one per level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from ..core.config import Configurable, PositiveInt, Range
from ..core.errors import UserError

_CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])  # (8,3)


def sample_grid(grid: Tensor, u: Tensor) -> Tensor:
    """Trilinear lookup. grid (R,R,R,C), u (N,3) in [0,1] → (N,C)."""
    res = grid.shape[0]
    x = u.clamp(0.0, 1.0) * (res - 1)
    cell = x.detach().floor().clamp(0, res - 2)
    f = x - cell  # (N,3) fractional position, differentiable wrt u
    corners = _CORNERS.to(u.device)
    idx = ((cell.long()[:, None, :] + corners) * torch.tensor([res * res, res, 1], device=u.device)).sum(-1)  # (N,8)
    w = torch.where(corners.bool(), f[:, None, :], 1.0 - f[:, None, :]).prod(-1)  # (N,8)
    values = grid.reshape(res**3, -1)[idx.reshape(-1)].reshape(*idx.shape, grid.shape[-1])  # (N,8,C); N may be 0
    return (values * w[..., None]).sum(1)


class DenseGridEncoding(Configurable, nn.Module):
    """(N,3) points in [0,1]^3 → (N, C) trilinearly interpolated grid features."""

    @dataclass
    class Config:
        resolution: Annotated[int, Range(ge=2)] = 32
        """Grid samples per side (corners included)."""
        n_channels: PositiveInt = 8
        """Feature channels per sample."""
        init_std: float = 0.1
        """Standard deviation of the normal initialisation."""

    def __init__(self, cfg=None, n_input_dims: int = 3, where: str = "encoding") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        c = self.cfg
        if n_input_dims != 3:
            raise UserError(f"{where}: a DenseGrid encoding takes 3-D points, got {n_input_dims}-D")
        self.grid = nn.Parameter(torch.randn(c.resolution, c.resolution, c.resolution, c.n_channels) * c.init_std)
        self.n_output_dims = c.n_channels

    def forward(self, x: Tensor) -> Tensor:
        return sample_grid(self.grid, x)
