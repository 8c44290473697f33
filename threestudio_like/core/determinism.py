"""Bit-identical runs: torch's deterministic algorithms for a run, chosen by ``trainer.deterministic``.

On CPU the one non-deterministic op the systems hit is the backward of advanced indexing
(``x[idx]`` → ``index_put_(accumulate=True)``, which sums colliding rows in thread order); its
deterministic kernel costs nothing measurable there, so runs are deterministic on CPU by default.
On CUDA the deterministic kernels can be slower and some ops have none: ``trainer.deterministic=true``
turns them on, and torch warns once for each op that has no deterministic implementation.
"""

from __future__ import annotations

import os
from typing import Optional

import torch


def use_deterministic_algorithms(enabled: Optional[bool], device: torch.device) -> bool:
    """Turn torch's deterministic algorithms on or off for this process; ``None`` means on for
    CPU runs and off on CUDA. Returns whether they are on."""
    on = device.type == "cpu" if enabled is None else bool(enabled)
    if on and device.type == "cuda":
        # cuBLAS needs a fixed workspace to be deterministic; it is read when CUDA initialises
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    return on
