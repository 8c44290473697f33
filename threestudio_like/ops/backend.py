"""The one rule that picks between a pure-torch op and its optional CUDA backend.

Used by the hash grid (tcnn), the rasterizer (nvdiffrast) and the volume sampler (nerfacc),
each with ``implementation: auto | torch | <fast>``:

* ``torch``: always the pure-torch twin;
* ``<fast>``: the CUDA backend; an error naming the install extra when it is not installed,
  and an error when the inputs are not on CUDA;
* ``auto``: the CUDA backend when it is installed and the inputs are on CUDA, else torch.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..core.errors import UserError

INSTALL_HINT = "pip install -e .[cuda]"
"""How to install the optional CUDA backends (the ``cuda`` extra of setup.py)."""


def choose_backend(
    requested: str,
    fast_name: str,
    is_available: Callable[[], bool],
    device: Optional[torch.device],
    where: str,
    install_hint: str = INSTALL_HINT,
) -> str:
    """``"torch"`` or ``fast_name`` for inputs on ``device`` by the rule in the module docstring.

    ``requested`` is the ``implementation`` setting (``auto``, ``torch`` or ``fast_name``),
    ``is_available()`` says whether the fast backend imports, ``where`` names the setting in
    errors. With ``device=None`` only the request is checked (at construction, before any input
    is seen): a missing fast backend raises, and ``auto`` answers ``"torch"``.
    """
    choices = ("auto", "torch", fast_name)
    if requested not in choices:
        raise UserError(f"{where} must be one of {'|'.join(choices)}, got '{requested}'")
    if requested == "torch":
        return "torch"
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if requested == "auto":
        return fast_name if on_cuda and is_available() else "torch"
    if not is_available():
        raise UserError(
            f"{where}: {fast_name} was asked for but is not installed; run `{install_hint}` or set it to torch"
        )
    if device is not None and not on_cuda:
        raise UserError(f"{where}: {fast_name} needs CUDA tensors, got {device}; use auto or torch on CPU")
    return fast_name
