"""Input encodings for coordinate networks and :func:`make_encoding`, the one factory that builds
any of them from its config (``otype`` plus that encoding's ``Config`` fields):

* ``HashGrid`` — :class:`~threestudio_like.ops.hash_encoding.HashGridEncoding`, Instant-NGP hash grid;
* ``ProgressiveBandHashGrid`` — :class:`ProgressiveBandHashGrid`, a hash grid whose fine levels are
  switched on during training (threestudio's coarse-to-fine schedule);
* ``Frequency`` — :class:`FrequencyEncoding`, NeRF positional encoding in tiny-cuda-nn's layout;
* ``Triplane`` — :class:`~threestudio_like.ops.triplane.TriplaneEncoding`, three feature planes (3-D);
* ``DenseGrid`` — :class:`~threestudio_like.ops.dense_grid.DenseGridEncoding`, a voxel grid (3-D).

Every encoding maps ``(..., n_input_dims)`` to ``(..., n_output_dims)`` and has ``n_output_dims``
(the triplane and dense grid take ``(N, 3)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..core.config import Configurable, NonNegativeInt, PositiveInt, to_container
from ..core.errors import UserError
from ..core.schedule import Updateable
from .dense_grid import DenseGridEncoding
from .hash_encoding import HashGridEncoding
from .triplane import TriplaneEncoding


class FrequencyEncoding(Configurable, nn.Module):
    """``x -> [x?, sin(2^k π x_d), cos(2^k π x_d) for d, k]`` (NeRF positional encoding).

    Layout after the optional raw input: dimension-major, then frequency, then (sin, cos) —
    tcnn's ``Frequency`` encoding. ``(..., D) -> (..., D * (2 * n_frequencies + include_input))``.
    """

    @dataclass
    class Config:
        n_frequencies: NonNegativeInt = 6
        """Number of octaves k = 0 .. n_frequencies - 1."""
        include_input: bool = False
        """Prepend the raw input (NeRF does; tcnn's Frequency encoding does not)."""

    def __init__(self, cfg=None, n_input_dims: int = 3, where: str = "encoding") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.n_input_dims = n_input_dims
        self.n_output_dims = n_input_dims * (2 * self.cfg.n_frequencies + int(self.cfg.include_input))
        freqs = math.pi * 2.0 ** torch.arange(self.cfg.n_frequencies, dtype=torch.float32)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        angles = x[..., :, None] * self.freqs.to(x)  # (..., D, K)
        enc = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).flatten(-3)  # (..., D*K*2)
        return torch.cat((x, enc), dim=-1) if self.cfg.include_input else enc


class ProgressiveBandHashGrid(HashGridEncoding, Updateable):
    """Hash grid whose levels ``>= current_level`` output zero (and get no gradient).

    ``current_level = min(start_level + max(step - start_step, 0) // update_steps, n_levels)``,
    updated by ``on_update_step`` (threestudio's ``ProgressiveBandHashGrid``). Same parameters and
    state-dict keys as :class:`HashGridEncoding`, so either loads the other's checkpoint.
    """

    @dataclass
    class Config(HashGridEncoding.Config):
        start_level: int = 4
        """Levels active from the start."""
        start_step: int = 0
        """Training step at which further levels start to switch on."""
        update_steps: PositiveInt = 500
        """Steps between switching on one more level."""

    def __init__(self, cfg=None, n_input_dims: int = 3, where: str = "encoding") -> None:
        super().__init__(cfg, n_input_dims, where)
        self.current_level = min(max(self.cfg.start_level, 0), self.cfg.n_levels)

    def on_update_step(self, epoch: int, global_step: int) -> None:
        c = self.cfg
        self.current_level = min(c.start_level + max(global_step - c.start_step, 0) // c.update_steps, c.n_levels)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x, n_active_levels=self.current_level)


ENCODINGS: dict[str, type[nn.Module]] = {
    "HashGrid": HashGridEncoding,
    "ProgressiveBandHashGrid": ProgressiveBandHashGrid,
    "Frequency": FrequencyEncoding,
    "Triplane": TriplaneEncoding,
    "DenseGrid": DenseGridEncoding,
}


def make_encoding(
    cfg: Mapping[str, Any], n_input_dims: int, where: str = "encoding", input_grad: bool = False
) -> nn.Module:
    """Build the encoding named by ``cfg["otype"]`` (one of :data:`ENCODINGS`); the other keys are
    that class's ``Config`` fields. The result has ``n_output_dims`` and maps
    ``(..., n_input_dims)`` to ``(..., n_output_dims)``.

    ``input_grad``: the caller differentiates the output with respect to the input (analytic
    normals), so a hash grid defaults to its differentiable path (its ``input_grad: true``); the
    other encodings always are differentiable.
    """
    data = dict(to_container(cfg) or {})
    otype = data.pop("otype", None)
    if otype not in ENCODINGS:
        raise UserError(f"{where}.otype: '{otype}' is not one of {', '.join(ENCODINGS)}")
    if input_grad and issubclass(ENCODINGS[otype], HashGridEncoding):
        data.setdefault("input_grad", True)
    return ENCODINGS[otype](data, n_input_dims=n_input_dims, where=where)
