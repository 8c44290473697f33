"""Triplane feature encoding (EG3D / RODIN / TripoSR style).

:class:`TriplaneEncoding` holds three axis-aligned feature planes, ``planes`` (3, R, R, C) for
the xy, xz and yz planes (``planes[p, row, col]``: ``col`` follows the first coordinate of the
pair, ``row`` the second). A point ``u`` in [0,1]^3 is projected onto each plane and bilinearly
interpolated with the plane's texels on the corners (``grid_sample(align_corners=True)``
semantics); the three C-vectors are summed (C outputs) or concatenated (3C outputs). Sampling
is a gather written in torch, so it is differentiable twice (analytic normals with
``create_graph``), which ``grid_sample`` is not.

Use it as ``pos_encoding_config: {otype: Triplane, resolution: 128, n_channels: 32}`` of an
``ImplicitVolume`` (``configs/geometry/triplane.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from ..core.config import Configurable, PositiveInt, Range
from ..core.errors import UserError

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # xy, xz, yz: (column coordinate, row coordinate)


def sample_plane(plane: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup. plane (R,R,C) indexed [row, col]; uv (N,2) in [0,1] as (col, row)
    → (N,C). Equals ``grid_sample(plane.permute(2,0,1)[None], (2 uv - 1)[None,None],
    align_corners=True)``."""
    res = plane.shape[0]
    xy = uv.clamp(0.0, 1.0) * (res - 1)
    cell = xy.detach().floor().clamp(0, res - 2)
    f = xy - cell  # (N,2) fractional position, differentiable wrt uv
    col, row = cell[:, 0].long(), cell[:, 1].long()
    flat = plane.reshape(res * res, -1)
    idx = row * res + col
    fx, fy = f[:, :1], f[:, 1:]
    return (flat[idx] * (1 - fx) + flat[idx + 1] * fx) * (1 - fy) + (
        flat[idx + res] * (1 - fx) + flat[idx + res + 1] * fx
    ) * fy


class TriplaneEncoding(Configurable, nn.Module):
    """(N,3) points in [0,1]^3 → (N, C) (``sum``) or (N, 3C) (``concat``) plane features."""

    @dataclass
    class Config:
        resolution: Annotated[int, Range(ge=2)] = 128
        """Texels per side of each plane."""
        n_channels: PositiveInt = 32
        """Feature channels per plane."""
        reduction: Literal["sum", "concat"] = "sum"
        """How the three plane features combine."""
        init_std: float = 0.1
        """Standard deviation of the normal initialisation of the planes."""

    def __init__(self, cfg=None, n_input_dims: int = 3, where: str = "encoding") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        c = self.cfg
        if n_input_dims != 3:
            raise UserError(f"{where}: a Triplane encoding takes 3-D points, got {n_input_dims}-D")
        self.planes = nn.Parameter(torch.randn(3, c.resolution, c.resolution, c.n_channels) * c.init_std)
        self.n_output_dims = c.n_channels * (3 if c.reduction == "concat" else 1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [sample_plane(self.planes[p], x[:, list(axes)]) for p, axes in enumerate(PLANE_AXES)]
        return torch.cat(feats, dim=-1) if self.cfg.reduction == "concat" else feats[0] + feats[1] + feats[2]
