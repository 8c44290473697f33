"""Differentiable triangle rasterization: nvdiffrast's four ops behind one switch.

``Rasterizer(implementation)`` with ``auto | torch | nvdiffrast``: ``auto`` uses nvdiffrast for
CUDA inputs when it is installed, the pure-torch twin (:mod:`.rasterize_torch`) otherwise
(:func:`~.backend.choose_backend`).
Both follow nvdiffrast's conventions (see the twin's docstring for the few differences):

- ``rasterize(pos, tri, (H, W))``: pos (B,V,4) clip space (or (V,4) for one image), tri (F,3)
  int → ``(rast, None)``; rast (B,H,W,4) = (u, v, z/w, triangle_id + 1), zeros where empty.
  Pixel (row i, col j) samples NDC ``(2(j+.5)/W − 1, 2(i+.5)/H − 1)``: row 0 is ``y = −1``
  (our cameras' ``mvp`` flips y so that row 0 is the image top). No culling; nearest z/w wins.
  u, v are perspective-correct and differentiable wrt pos.
- ``interpolate(attr, rast, tri)``: attr (B,V,C) or (V,C) → ``(out (B,H,W,C), None)``.
- ``texture(tex, uv, filter_mode, boundary_mode)``: tex (B|1,Ht,Wt,C), uv (B,H,W,2) → (B,H,W,C).
- ``antialias(color, rast, pos, tri)``: color (B,H,W,C) → (B,H,W,C), blends across silhouette
  edges so that the image has gradients wrt pos there.

nvdiffrast's image-space derivatives (``rast_db``, mipmaps) are not part of this API: the
second value of ``rasterize`` is always None.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.errors import UserError
from .backend import choose_backend
from .rasterize_nvdiffrast import NvdiffrastBackend, nvdiffrast_available
from .rasterize_torch import antialias_torch, edge_topology, interpolate_torch, rasterize_torch, texture_torch

FILTER_MODES = ("linear", "nearest")
BOUNDARY_MODES = ("wrap", "clamp", "zero")


class Rasterizer:
    """Holds the chosen backend (and nvdiffrast's per-device context) for the four ops."""

    def __init__(self, implementation: str = "auto", device: torch.device | str | None = None) -> None:
        self.implementation = implementation
        self.backend_for(None)  # an unknown or missing backend is an error now
        self._contexts: dict[torch.device, NvdiffrastBackend] = {}
        self._topology_of: tuple[Tensor, int] | None = None  # (tri, its version) — a held reference
        self._topology: Tensor | None = None
        if device is not None and self.backend_for(torch.device(device)) == "nvdiffrast":
            self._nvdiffrast(torch.device(device))

    def backend_for(self, device: torch.device | None) -> str:
        """The backend used for inputs on ``device``: 'nvdiffrast' or 'torch'."""
        return choose_backend(
            self.implementation, "nvdiffrast", nvdiffrast_available, device, "rasterizer implementation"
        )

    # ------------------------------------------------------------------ ops

    def rasterize(self, pos: Tensor, tri: Tensor, resolution: tuple[int, int]) -> tuple[Tensor, None]:
        """pos (B,V,4) | (V,4) clip space, tri (F,3) int → (rast (B,H,W,4), None)."""
        if pos.dim() == 2:
            pos = pos[None]
        if pos.dim() != 3 or pos.shape[-1] != 4 or not pos.is_floating_point():
            raise ValueError(
                f"rasterize: pos must be float (B,V,4) clip coordinates, got {tuple(pos.shape)} {pos.dtype}"
            )
        _check_tri(tri)
        if len(resolution) != 2 or min(int(r) for r in resolution) <= 0:
            raise ValueError(f"rasterize: resolution must be (height, width) > 0, got {resolution}")
        resolution = (int(resolution[0]), int(resolution[1]))
        if self.backend_for(pos.device) == "nvdiffrast":
            return self._nvdiffrast(pos.device).rasterize(pos, tri, resolution), None
        return rasterize_torch(pos, tri, resolution), None

    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> tuple[Tensor, None]:
        """attr (B,V,C) | (V,C), rast (B,H,W,4) → (out (B,H,W,C), None); 0 where rast is empty."""
        _check_rast(rast, "interpolate")
        _check_tri(tri)
        if attr.dim() not in (2, 3) or (attr.dim() == 3 and attr.shape[0] not in (1, rast.shape[0])):
            raise ValueError(
                f"interpolate: attr must be (V,C) or (B,V,C) with B={rast.shape[0]}, got {tuple(attr.shape)}"
            )
        if self.backend_for(rast.device) == "nvdiffrast":
            return self._nvdiffrast(rast.device).interpolate(attr, rast, tri), None
        return interpolate_torch(attr, rast, tri), None

    def texture(self, tex: Tensor, uv: Tensor, filter_mode: str = "linear", boundary_mode: str = "wrap") -> Tensor:
        """tex (B|1,Ht,Wt,C), uv (B,H,W,2) in [0,1] (texel centres at (k+.5)/size) → (B,H,W,C)."""
        if filter_mode not in FILTER_MODES:
            raise UserError(f"unknown texture filter_mode '{filter_mode}'; choose {'|'.join(FILTER_MODES)}")
        if boundary_mode not in BOUNDARY_MODES:
            raise UserError(f"unknown texture boundary_mode '{boundary_mode}'; choose {'|'.join(BOUNDARY_MODES)}")
        if tex.dim() != 4 or uv.dim() != 4 or uv.shape[-1] != 2 or tex.shape[0] not in (1, uv.shape[0]):
            raise ValueError(
                f"texture: need tex (B|1,Ht,Wt,C) and uv (B,H,W,2), got {tuple(tex.shape)} and {tuple(uv.shape)}"
            )
        if self.backend_for(uv.device) == "nvdiffrast":
            return self._nvdiffrast(uv.device).texture(tex, uv, filter_mode, boundary_mode)
        return texture_torch(tex, uv, filter_mode, boundary_mode)

    def antialias(self, color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor) -> Tensor:
        """color (B,H,W,C), rast/pos/tri as given to rasterize → antialiased color (B,H,W,C)."""
        _check_rast(rast, "antialias")
        _check_tri(tri)
        if pos.dim() == 2:
            pos = pos[None]
        if color.dim() != 4 or color.shape[:3] != rast.shape[:3]:
            raise ValueError(
                f"antialias: color must be (B,H,W,C) matching rast {tuple(rast.shape[:3])}, got {tuple(color.shape)}"
            )
        if self.backend_for(color.device) == "nvdiffrast":
            return self._nvdiffrast(color.device).antialias(color, rast, pos, tri)
        return antialias_torch(color, rast, pos, tri, self._edge_topology(tri))

    # ------------------------------------------------------------------ helpers

    def _nvdiffrast(self, device: torch.device) -> NvdiffrastBackend:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._contexts:
            self._contexts[device] = NvdiffrastBackend(device)
        return self._contexts[device]

    def _edge_topology(self, tri: Tensor) -> Tensor:
        """Opposite-vertex table of ``tri``, reused while the same unmodified tensor comes back."""
        held = self._topology_of
        if held is None or held[0] is not tri or held[1] != tri._version:
            self._topology = edge_topology(tri)
            self._topology_of = (tri, tri._version)
        return self._topology


def _check_tri(tri: Tensor) -> None:
    if tri.dim() != 2 or tri.shape[1] != 3 or tri.is_floating_point():
        raise ValueError(f"tri must be an integer (F,3) tensor, got {tuple(tri.shape)} {tri.dtype}")


def _check_rast(rast: Tensor, op: str) -> None:
    if rast.dim() != 4 or rast.shape[-1] != 4:
        raise ValueError(f"{op}: rast must be (B,H,W,4) from rasterize, got {tuple(rast.shape)}")
