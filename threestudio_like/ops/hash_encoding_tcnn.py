"""tiny-cuda-nn backend of :class:`~threestudio_like.ops.hash_encoding.HashGridEncoding`.

``tinycudann`` is imported lazily (it probes CUDA when imported). The tcnn encoding is built on
the first CUDA call; it does not own the parameters: the caller's flat vector (same layout, see
``hash_encoding.py``) is handed to it on every call, so optimizers, checkpoints and the torch twin
all see one tensor. tcnn keeps parameters in fp16 on most GPUs; outputs are cast to float32.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor


@lru_cache(maxsize=1)
def tcnn_available() -> bool:
    """True when ``tinycudann`` imports (checked once)."""
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def tcnn_encoding_config(cfg: Any) -> dict:
    """tcnn ``HashGrid`` encoding config equal to a ``HashGridEncoding.Config``."""
    return {
        "otype": "HashGrid",
        "type": "Hash",
        "hash": "CoherentPrime",
        "n_levels": cfg.n_levels,
        "n_features_per_level": cfg.n_features_per_level,
        "log2_hashmap_size": cfg.log2_hashmap_size,
        "base_resolution": cfg.base_resolution,
        "per_level_scale": cfg.per_level_scale,
        "interpolation": {"linear": "Linear", "smoothstep": "Smoothstep"}[cfg.interpolation],
    }


class TcnnHashGrid:
    """Calls a ``tcnn.Encoding`` with an externally owned parameter vector.

    ``__call__(x: (N, D) float32 CUDA, params: (n_params,) float32) -> (N, n_levels * F)`` float32.
    """

    def __init__(self, n_input_dims: int, cfg: Any) -> None:
        self.n_input_dims = n_input_dims
        self.config = tcnn_encoding_config(cfg)
        self._encodings: dict[torch.device, Any] = {}

    def _encoding(self, device: torch.device, n_params: int):
        if device not in self._encodings:
            import tinycudann as tcnn

            with torch.cuda.device(device):
                enc = tcnn.Encoding(self.n_input_dims, self.config)
            if enc.params.numel() != n_params:
                raise RuntimeError(
                    f"tcnn hash grid has {enc.params.numel()} parameters, the torch layout {n_params}: "
                    "the level-offset computation no longer matches this tinycudann version"
                )
            self._encodings[device] = enc
        return self._encodings[device]

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        enc = self._encoding(x.device, params.numel())
        # tcnn's Module.forward reads ``self.params``; point it at the shared vector (any tensor,
        # bypassing nn.Module's Parameter-only check) so gradients flow to the caller's tensor.
        enc._parameters["params"] = params
        return enc(x.contiguous()).float()
