"""Adapter to nvdiffrast's CUDA rasterizer (``pip install threestudio_like[cuda]``).

nvdiffrast is imported only when a :class:`NvdiffrastBackend` is created, never at import time.
Inputs are made contiguous float32 / int32 as nvdiffrast requires; shapes as in
:mod:`threestudio_like.ops.rasterize`.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor


def nvdiffrast_available() -> bool:
    """Whether ``import nvdiffrast.torch`` can succeed (checked without importing it)."""
    return importlib.util.find_spec("nvdiffrast") is not None


class NvdiffrastBackend:
    """One ``RasterizeCudaContext`` on one CUDA device and the four ops called through it."""

    def __init__(self, device: torch.device) -> None:
        import nvdiffrast.torch as dr

        self._dr = dr
        self.device = torch.device(device)
        self._context = dr.RasterizeCudaContext(device=self.device)

    def rasterize(self, pos: Tensor, tri: Tensor, resolution: tuple[int, int]) -> Tensor:
        rast, _ = self._dr.rasterize(
            self._context, pos.float().contiguous(), tri.int().contiguous(), resolution=list(resolution), grad_db=False
        )
        return rast

    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
        out, _ = self._dr.interpolate(attr.float().contiguous(), rast.contiguous(), tri.int().contiguous())
        return out

    def texture(self, tex: Tensor, uv: Tensor, filter_mode: str, boundary_mode: str) -> Tensor:
        return self._dr.texture(
            tex.float().contiguous(), uv.float().contiguous(), filter_mode=filter_mode, boundary_mode=boundary_mode
        )

    def antialias(self, color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor) -> Tensor:
        return self._dr.antialias(
            color.float().contiguous(), rast.contiguous(), pos.float().contiguous(), tri.int().contiguous()
        )
