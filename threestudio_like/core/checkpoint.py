"""Atomic checkpoints with every RNG state, loadable with ``weights_only=True``.

A checkpoint is a dict of tensors and plain python values::

    {"format": 1, "stage_index": int, "stage": str, "global_step": int,
     "model": state_dict, "optimizers": [state_dict...], "schedulers": [state_dict...],
     "rng": {"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [ByteTensor...]},
     "extra": {...}}

It is written to a temporary file in the same directory, flushed, fsync'ed and renamed over
the target, so an interrupted write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write
from .errors import UserError

FORMAT_VERSION = 1


def get_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": _encode_python_rng(random.getstate()),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_decode_python_rng(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _encode_python_rng(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _decode_python_rng(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(x) for x in d["internal"].tolist()), d["gauss"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically to ``path`` (temp file in the same dir + fsync + rename)."""
    buffer = io.BytesIO()  # serialised first, so a full disk is an OSError of the plain write below
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    try:
        return atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    except OSError as e:  # ENOSPC, EDQUOT, EIO...: the previous file is untouched
        raise UserError(
            f"cannot write checkpoint {path} ({e.strerror or e}); the previous checkpoint is kept: free disk "
            f"space, then continue with resume={Path(path).parent.parent}"
        ) from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a threestudio_like checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise UserError(f"checkpoint {path} is not a threestudio_like checkpoint (format {FORMAT_VERSION})")
    return payload
