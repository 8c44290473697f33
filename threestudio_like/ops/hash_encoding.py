"""Multi-resolution hash-grid encoding (Instant-NGP) with tiny-cuda-nn's exact grid convention.

``HashGridEncoding`` maps points ``x`` of shape ``(..., D)`` in ``[0, 1]`` to features of shape
``(..., n_levels * n_features_per_level)`` (float32). Its parameters are one flat vector laid out
exactly like tiny-cuda-nn's ``GridEncodingTemplated`` (``include/tiny-cuda-nn/encodings/grid.h``
and ``common_device.h``, checked against commit 6ee3546 of NVlabs/tiny-cuda-nn), so a checkpoint
moves between the pure-torch twin below and the tcnn backend unchanged. What is matched:

* level ``l``: ``scale = exp2f(l * log2f(per_level_scale)) * base_resolution - 1`` evaluated in
  float32 (``grid_scale``); ``resolution = ceil(scale) + 1`` (``grid_resolution``);
* position: ``pos = x * scale + 0.5``; ``cell = floor(pos)``, ``frac = pos - cell`` (``pos_fract``;
  tcnn uses one fused multiply-add, we round twice — positions differ by at most 1 ulp, and since
  the interpolation is continuous across cells the outputs differ by about 1e-7);
* table size per level (``params_in_level``): ``resolution^D`` rounded up to a multiple of 8,
  capped at ``2^log2_hashmap_size``; level offsets are the running sum of those sizes; the vector
  holds ``offset[n_levels] * n_features_per_level`` floats, entry ``e`` of level ``l`` at
  ``params[(offset[l] + e) * F : ... + F]``;
* index (``grid_index``): row-major ``sum_d cell_d * resolution^d`` (uint32 arithmetic) when
  ``resolution <= MAX_BASES[D]`` and ``resolution^D <= table size`` (a *dense* level), else the
  coherent prime hash ``xor_d cell_d * prime_d`` with primes ``(1, 2654435761, 805459861, ...)``;
  both taken modulo the level's table size. Corner ``c`` has bit ``d`` set when it is the upper
  neighbour along dimension ``d``;
* interpolation ``linear`` (weights ``frac`` / ``1 - frac``) or ``smoothstep``
  (``frac^2 (3 - 2 frac)``); init uniform in ``[-1e-4, 1e-4]`` (tcnn: same range, its own RNG).

The torch twin is a custom autograd function that runs level by level (each level's table stays
in cache): it computes the 8 corner indices and the 3 fractions, gathers the corners and lerps
them one dim at a time (4, 2, then 1 pair, instead of 8 weights and a sum); backward reuses the
indices and fractions (kept up to :data:`CORNER_CACHE_BYTES`, recomputed beyond), spreads the
output gradient onto the corners by the transposed lerps and ``scatter_add_``\\ s it into the
flat parameter gradient. It gives no gradient
with respect to ``x``. With ``input_grad: true`` the encoding instead runs a plain differentiable
torch expression of the same interpolation, so autograd yields the exact (analytic) derivative
``d out / d x = scale * d interp / d frac`` — and second derivatives, needed for normals from
autograd that enter a loss — about 4x slower (forward + backward) on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..core.config import Configurable, PositiveFloat, PositiveInt, Range
from ..core.errors import UserError
from .backend import choose_backend
from .hash_encoding_tcnn import tcnn_available

#: tiny-cuda-nn's ``coherent_prime_hash`` factors, one per input dimension.
COHERENT_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
#: tiny-cuda-nn's ``MAX_BASES``: largest resolution whose row-major index fits in uint32, per D.
MAX_DENSE_RESOLUTION = (0x0, 0xFFFFFFFF, 0xFFFF, 0x659, 0xFF, 0x54, 0x28, 0x17)
_UINT32 = 0xFFFFFFFF
CORNER_CACHE_BYTES = 256 * 2**20
"""Forward keeps each level's corner indices and fractions for backward (instead of recomputing
them) while they fit in this many bytes (88 bytes per point and level in 3-D)."""


@dataclass(frozen=True)
class GridLevel:
    """Geometry of one level: float32 ``scale``, vertices per side, table slice, indexing mode."""

    scale: float
    resolution: int
    offset: int
    """First table entry of this level in the flat table (entries, not floats)."""
    size: int
    """Number of table entries of this level (the modulus of its index)."""
    dense: bool
    """Row-major indexing (True) or the coherent prime hash (False)."""
    strides: tuple[int, ...]
    """Per-dimension index multipliers: ``resolution^d`` if dense, else the hash primes."""


def grid_levels(
    n_input_dims: int, n_levels: int, log2_hashmap_size: int, base_resolution: int, per_level_scale: float
) -> list[GridLevel]:
    """The per-level layout tiny-cuda-nn computes in ``GridEncodingTemplated``'s constructor."""
    log2_scale = np.log2(np.float32(per_level_scale))  # std::log2 on a float -> float
    hashmap = 1 << log2_hashmap_size
    levels, offset = [], 0
    for level in range(n_levels):
        scale = np.exp2(np.float32(level) * log2_scale) * np.float32(base_resolution) - np.float32(1.0)
        resolution = int(math.ceil(float(scale))) + 1
        dense_params = min(resolution**n_input_dims, 2**31 - 1)  # tcnn caps at uint32 max / 2
        size = min(-(-dense_params // 8) * 8, hashmap)  # next multiple of 8, then the hashmap cap
        dense = resolution <= MAX_DENSE_RESOLUTION[n_input_dims] and resolution**n_input_dims <= size
        strides = tuple(resolution**d for d in range(n_input_dims)) if dense else COHERENT_PRIMES[:n_input_dims]
        levels.append(GridLevel(float(scale), resolution, offset, size, dense, strides))
        offset += size
    return levels


def _wrap_int32(value: int) -> int:
    """The int32 with the same low 32 bits as ``value`` (int32 products wrap like uint32 ones)."""
    value &= _UINT32
    return value - (1 << 32) if value >= 1 << 31 else value


def level_cells(xt: Tensor, level: GridLevel, smoothstep: bool, inside: bool = False) -> tuple[Tensor, Tensor]:
    """Corner table indices ``(2^D, N)`` (corner-major) and interpolation fractions ``(D, N)``.

    ``xt`` is the transposed input ``(D, N)``; ``inside`` promises ``0 <= xt <= 1``. Corner ``c``
    takes the upper neighbour along dim ``d`` iff bit ``d`` of ``c`` is set (tcnn's order); the
    fractions are the upper neighbours' weights per dim (smoothstepped if asked).
    Indices are within the level's table. Hashed levels compute the hash in wrapping int32,
    whose low bits equal tcnn's uint32 ones (masking to the power-of-two size commutes with xor).
    Dense levels: for inputs in the unit cube the row-major index is below ``2 * size``, so one
    conditional subtraction (branch-free, on int32) is the modulo, skipped when no corner can
    reach the table's end; otherwise int64 with tcnn's uint32 wrap, then modulo.
    """
    pos = xt * level.scale + 0.5
    cell = torch.floor(pos)
    frac = pos.sub_(cell)
    if smoothstep:
        frac = frac * frac * (3.0 - 2.0 * frac)
    exact_dense = level.dense and not inside
    cell = cell.to(torch.int64 if exact_dense else torch.int32)
    strides = level.strides if exact_dense else tuple(_wrap_int32(p) for p in level.strides)
    index = None
    for d, stride in enumerate(strides):
        pair = cell.new_empty(2, cell.shape[1])
        torch.mul(cell[d], stride, out=pair[0])
        torch.add(pair[0], stride, out=pair[1])
        if level.dense:
            index = pair if index is None else (pair[:, None] + index[None]).flatten(0, 1)
        else:
            pair.bitwise_and_(level.size - 1)  # hashed tables have a power-of-two size
            index = pair if index is None else (pair[:, None] ^ index[None]).flatten(0, 1)
    if exact_dense:
        index = (index & _UINT32) % level.size
    elif level.dense and _dense_may_wrap(level):
        over = index - level.size  # in [-size, size): negative keeps index, else index - size
        index = over.add_((over >> 31).bitwise_and_(level.size))
    return index, frac


def _dense_may_wrap(level: GridLevel) -> bool:
    """Whether a point of the unit cube has a corner index ``>= size`` on a dense level: the
    largest position is ``x = 1``'s, ``float32(scale + 0.5)`` (rounding is monotonic), whose
    upper corner is one above its floor along every dim."""
    top = int(np.floor(np.float32(level.scale) + np.float32(0.5))) + 1
    return top * sum(level.strides) >= level.size


def corner_weights(frac: Tensor) -> Tensor:
    """Multilinear weights ``(2^D, N)`` of the corners, in :func:`level_cells`' corner order."""
    weight = None
    for f in frac:
        pair = torch.stack((1.0 - f, f))
        weight = pair if weight is None else (pair[:, None] * weight[None]).flatten(0, 1)
    return weight


def level_corners(xt: Tensor, level: GridLevel, smoothstep: bool, inside: bool = False) -> tuple[Tensor, Tensor]:
    """Corner table indices and weights of one level, both ``(2^D, N)``; see :func:`level_cells`."""
    index, frac = level_cells(xt, level, smoothstep, inside)
    return index, corner_weights(frac)


def _entry_view(params: Tensor, n_features: int) -> Tensor:
    """The flat parameters as one element per table entry where possible: float for F = 1,
    complex (two floats) for F = 2, ``(entries, F/2)`` complex for F = 4, 8. Gathering and
    scatter-adding whole 8-byte entries is 3-7x faster on CPU than per float."""
    if n_features == 1:
        return params
    table = torch.view_as_complex(params.view(-1, 2))
    return table if n_features == 2 else table.view(-1, n_features // 2)


class _HashGridFunction(torch.autograd.Function):
    """Level-by-level gather and lerps forward; backward reuses (or recomputes) the corners, spreads
    the output gradient onto them dim by dim and ``scatter_add_``\\ s it into the parameter
    gradient. No gradient with respect to ``x``."""

    @staticmethod
    def forward(
        ctx, x: Tensor, params: Tensor, levels: Sequence[GridLevel], n_features: int, smoothstep: bool, n_active: int
    ) -> Tensor:  # type: ignore[override]
        xt = x.t().contiguous()
        n, dims = x.shape[0], x.shape[1]
        inside = bool(x.numel() == 0 or (xt.min() >= 0 and xt.max() <= 1))
        table = _entry_view(params, n_features)
        entry_shape = table.shape[1:]
        out = x.new_empty(len(levels), n, n_features)  # level-major while filling
        out[n_active:] = 0
        keep = params.requires_grad and n * n_active * _cache_bytes_per_point(dims) <= CORNER_CACHE_BYTES
        corners = []
        for i, level in enumerate(levels[:n_active]):
            index, frac = level_cells(xt, level, smoothstep, inside)
            frac = _fractions_like(frac, table)
            value = table[level.offset : level.offset + level.size].index_select(0, index.view(-1))
            value = value.view(*(2,) * dims, n, *entry_shape)
            for d in reversed(range(1, dims)):  # corner bit d is dim d's neighbour; the last dim is outermost
                value = torch.lerp(value[0], value[1], frac[d])
            torch.lerp(value[0], value[1], frac[0], out=_out_view(out[i], table))
            if keep:
                corners.append((index.to(torch.int64), frac))
        ctx.save_for_backward(xt)
        ctx.corners = corners
        ctx.n_params, ctx.inside = params.numel(), inside
        ctx.levels, ctx.n_features, ctx.smoothstep, ctx.n_active = levels, n_features, smoothstep, n_active
        return out.transpose(0, 1).reshape(n, len(levels) * n_features)  # n may be 0

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (xt,) = ctx.saved_tensors
        n_f, n = ctx.n_features, xt.shape[1]
        grad_params = xt.new_zeros(ctx.n_params)
        grad_table = _entry_view(grad_params, n_f)
        width = 1 if grad_table.dim() == 1 else grad_table.shape[1]
        grad_flat = grad_table.view(-1)
        # level-major copy, so each level's gradient is contiguous (complex ops on strided
        # or broadcast operands are several times slower)
        grad_out = grad_out.reshape(n, len(ctx.levels), n_f).transpose(0, 1).contiguous()
        for i, level in enumerate(ctx.levels[: ctx.n_active]):
            if ctx.corners:
                index, frac = ctx.corners[i]
            else:
                index, frac = level_cells(xt, level, ctx.smoothstep, ctx.inside)
                frac = _fractions_like(frac, grad_table)
            src = _out_view(grad_out[i], grad_table)
            for f in frac:  # the transpose of forward's lerps: (1 - f) * g to the lower, f * g to the upper
                spread = src.new_empty(2, *src.shape)
                torch.mul(src, f, out=spread[1])
                torch.sub(src, spread[1], out=spread[0])
                src = spread
            index = index.to(torch.int64)  # no-op for cached corners
            if width > 1:
                index = index[..., None] * width + torch.arange(width, device=index.device)
            start = level.offset * width
            grad_flat[start : start + level.size * width].scatter_add_(0, index.view(-1), src.view(-1))
        return None, grad_params, None, None, None, None


def _cache_bytes_per_point(dims: int) -> int:
    """Bytes kept per point and level for backward: int64 corner indices and the fractions (≤ 8 bytes each)."""
    return 8 * 2**dims + 8 * dims


def _fractions_like(frac: Tensor, table: Tensor) -> Tensor:
    """Fractions ``(D, N)`` in the table's dtype, shaped to broadcast against its entries."""
    frac = frac.to(table.dtype)
    return frac if table.dim() == 1 else frac[..., None]


def _out_view(level_out: Tensor, table: Tensor) -> Tensor:
    """One level's ``(N, F)`` float output (or gradient) seen as ``N`` table entries."""
    if not table.is_complex():
        return level_out.view(-1)
    return torch.view_as_complex(level_out.view(level_out.shape[0], *table.shape[1:], 2))


def hash_grid_reference(
    x: Tensor, params: Tensor, levels: Sequence[GridLevel], n_features: int, smoothstep: bool, n_active: int
) -> Tensor:
    """Same result as the fast path, built from differentiable torch ops (gradients to ``x`` and
    ``params``, any order). ``x`` ``(N, D)`` → ``(N, n_levels * n_features)``."""
    xt = x.t()
    with torch.no_grad():
        inside = bool(x.numel() == 0 or (xt.min() >= 0 and xt.max() <= 1))
    table = _entry_view(params, n_features)
    out = []
    for i, level in enumerate(levels):
        if i >= n_active:
            out.append(x.new_zeros(x.shape[0], n_features))
            continue
        index, _ = level_corners(xt.detach(), level, smoothstep, inside)
        pos = xt * level.scale + 0.5
        frac = pos - torch.floor(pos).detach()
        if smoothstep:
            frac = frac * frac * (3.0 - 2.0 * frac)
        weight = None
        for d in range(xt.shape[0]):
            pair = torch.stack((1.0 - frac[d], frac[d]))
            weight = pair if weight is None else (pair[:, None] * weight[None]).flatten(0, 1)
        entries = table[level.offset : level.offset + level.size].index_select(0, index.view(-1))
        entries = entries.view(*index.shape, *table.shape[1:])
        weight = weight.to(entries.dtype)
        value = (entries * (weight if table.dim() == 1 else weight[..., None])).sum(0)
        out.append((value if n_features == 1 else torch.view_as_real(value)).reshape(-1, n_features))
    return torch.cat(out, dim=1)


class HashGridEncoding(Configurable, nn.Module):
    """Instant-NGP multi-resolution hash grid, tcnn-compatible parameters.

    ``forward(x: (..., D) in [0, 1]) -> (..., n_levels * n_features_per_level)`` in the
    parameters' dtype (float32 unless converted).
    Parameter ``params``: flat float32 vector in tcnn's layout (see module docstring).
    """

    @dataclass
    class Config:
        n_levels: PositiveInt = 16
        """Number of resolution levels."""
        n_features_per_level: Literal[1, 2, 4, 8] = 2
        """Features stored per table entry (1, 2, 4 or 8, as tcnn allows)."""
        log2_hashmap_size: Annotated[int, Range(ge=1, le=30)] = 19
        """log2 of the largest per-level table size (entries)."""
        base_resolution: PositiveInt = 16
        """Vertices per side of the coarsest level."""
        per_level_scale: PositiveFloat = 1.447269237440378
        """Growth factor of the resolution from one level to the next."""
        interpolation: Literal["linear", "smoothstep"] = "linear"
        """Interpolation between the 2^D cell corners."""
        implementation: Literal["auto", "torch", "tcnn"] = "auto"
        """auto (tcnn if installed and the input is on CUDA, else torch) | torch | tcnn (ops/backend.py)."""
        input_grad: bool = False
        """Propagate gradients to the input points (autograd normals); slower torch path, taken only
        when the input requires a gradient (not for density queries without one)."""

    def __init__(self, cfg=None, n_input_dims: int = 3, where: str = "encoding") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        c = self.cfg
        if not 1 <= n_input_dims < len(MAX_DENSE_RESOLUTION):
            raise UserError(
                f"{where}: a hash grid encodes 1 to {len(MAX_DENSE_RESOLUTION) - 1} dims, got {n_input_dims}"
            )
        self.where = where
        self.n_input_dims = n_input_dims
        self.n_output_dims = c.n_levels * c.n_features_per_level
        self.levels = grid_levels(n_input_dims, c.n_levels, c.log2_hashmap_size, c.base_resolution, c.per_level_scale)
        n_params = (self.levels[-1].offset + self.levels[-1].size) * c.n_features_per_level
        self.params = nn.Parameter(torch.empty(n_params).uniform_(-1e-4, 1e-4))
        self._tcnn = None
        self._backend(None)  # a missing tcnn is an error now, not at the first forward

    def _backend(self, device: Optional[torch.device]) -> str:
        """'tcnn' or 'torch' for inputs on ``device`` (:func:`~.backend.choose_backend`)."""
        return choose_backend(self.cfg.implementation, "tcnn", tcnn_available, device, f"{self.where}.implementation")

    def forward(self, x: Tensor, n_active_levels: Optional[int] = None) -> Tensor:
        """Encode ``x`` ``(..., D)``; levels ``>= n_active_levels`` (default all) are zero."""
        lead = x.shape[:-1]
        x = x.reshape(-1, self.n_input_dims).to(self.params.dtype)
        n_active = self.cfg.n_levels if n_active_levels is None else max(0, min(n_active_levels, self.cfg.n_levels))
        if self._backend(x.device) == "tcnn":
            if self._tcnn is None:
                from .hash_encoding_tcnn import TcnnHashGrid

                self._tcnn = TcnnHashGrid(self.n_input_dims, self.cfg)
            out = self._tcnn(x, self.params)
            if n_active < self.cfg.n_levels:
                out = out * (
                    torch.arange(self.n_output_dims, device=x.device) < n_active * self.cfg.n_features_per_level
                )
        else:
            args = (
                x,
                self.params,
                self.levels,
                self.cfg.n_features_per_level,
                self.cfg.interpolation == "smoothstep",
                n_active,
            )
            wants_input_grad = self.cfg.input_grad and torch.is_grad_enabled() and x.requires_grad
            out = hash_grid_reference(*args) if wants_input_grad else _HashGridFunction.apply(*args)
        return out.reshape(*lead, self.n_output_dims)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"n_input_dims={self.n_input_dims}, n_levels={c.n_levels}, F={c.n_features_per_level}, "
            f"log2_T={c.log2_hashmap_size}, n_params={self.params.numel()}, impl={c.implementation}"
        )
