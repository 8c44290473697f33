"""CLIP's image preprocessing as a differentiable torch op (no PIL in the hot path).

What a CLIP image processor does, as numbers (:class:`ClipImageNormalization`): resize the short
side to ``size`` (bicubic, antialiased), centre-crop ``crop`` × ``crop``, then ``(x − mean) / std``.
Used by the CLIP guidance and similarity (``guidance/clip.py``, ``eval/clip_similarity.py``) and by
Zero123's image encoder (``guidance/zero123_pipeline.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipImageNormalization:
    """What CLIP's image processor does, as numbers: short side → ``size``, centre crop
    ``crop`` (square), then ``(x − mean) / std``."""

    size: int = 224
    crop: int = 224
    mean: Sequence[float] = OPENAI_CLIP_MEAN
    std: Sequence[float] = OPENAI_CLIP_STD

    @classmethod
    def from_processor(cls, processor: Any, image_size: int) -> ClipImageNormalization:
        """From a (transformers) CLIP image processor, a ``preprocessor_config.json`` dict, or
        None (OpenAI defaults at ``image_size``)."""
        if processor is None:
            return cls(image_size, image_size)
        get = processor.get if isinstance(processor, dict) else (lambda k, d=None: getattr(processor, k, d))
        size, crop = get("size") or {}, get("crop_size") or {}
        size = _edge(size, image_size)
        crop = _edge(crop, size) if get("do_center_crop", True) else size
        return cls(size, crop, tuple(get("image_mean") or OPENAI_CLIP_MEAN), tuple(get("image_std") or OPENAI_CLIP_STD))


def _edge(spec: Any, default: int) -> int:
    """An int from the processor's size forms: int, {"shortest_edge"}, {"height","width"}."""
    if isinstance(spec, int):
        return spec
    get = spec.get if isinstance(spec, dict) else (lambda k: getattr(spec, k, None))
    return int(get("shortest_edge") or get("height") or default)


def clip_preprocess(images: Tensor, norm: ClipImageNormalization) -> Tensor:
    """(B,3,H,W) in [0,1] → (B,3,crop,crop) CLIP pixel values (bicubic + antialias, differentiable)."""
    h, w = images.shape[-2:]
    scale = norm.size / min(h, w)
    new_h, new_w = max(norm.crop, round(h * scale)), max(norm.crop, round(w * scale))
    if (new_h, new_w) != (h, w):
        images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - norm.crop) // 2, (new_w - norm.crop) // 2
    images = images[..., top : top + norm.crop, left : left + norm.crop]
    mean = torch.tensor(norm.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std
