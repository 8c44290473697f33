"""Where the preprocessing models come from and where they run.

A model is given like the priors' (:func:`~threestudio_like.guidance.pretrained.resolve_pretrained_dir`):
a local directory, or a Hugging Face hub id resolved from the local cache only — nothing is
downloaded. Which kind of model a directory holds is read from its ``config.json`` before any
weights are loaded, so a wrong model is refused at once.
"""

from __future__ import annotations

import json
import os
from typing import Literal, Optional

import torch

from ..core.errors import UserError
from ..guidance.pretrained import resolve_pretrained_dir

WeightsDtype = Literal["auto", "float32", "float16", "bfloat16"]
"""``auto``: float16 on CUDA, float32 elsewhere."""


def model_dir(name_or_path: str, where: str) -> str:
    """The local directory of ``name_or_path`` (UserError naming ``where``, e.g. ``--sam``, if none)."""
    try:
        return resolve_pretrained_dir(name_or_path)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def model_type(directory: str) -> Optional[str]:
    """``model_type`` of a transformers model directory's ``config.json`` (None if unreadable)."""
    try:
        with open(os.path.join(directory, "config.json")) as f:
            return json.load(f).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def require_model_type(directory: str, where: str, accepted: tuple[str, ...], what: str) -> str:
    """The directory's ``model_type`` if it is one of ``accepted``, else a UserError saying what is needed."""
    found = model_type(directory)
    if found not in accepted:
        held = f"a '{found}' model" if found else "no transformers model (no readable config.json)"
        raise UserError(f"{where} '{directory}' holds {held}; it needs {what}")
    return found


def torch_device(name: str, where: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda…`` without CUDA is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{where}: device '{name}' but CUDA is not available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"{where}: cannot parse device '{name}' (auto, cpu, cuda, cuda:1…)") from None


def torch_dtype(name: WeightsDtype, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
