"""Captioning the object with BLIP (or BLIP-2): the text prompt of the text-guided terms.

Anything-3D captions the segmented object on a white background with BLIP; Make-It-3D uses
BLIP-2. Both go through transformers: ``BlipForConditionalGeneration`` or
``Blip2ForConditionalGeneration``, chosen by the model's ``config.json`` (``model_type`` ``blip``
or ``blip-2``), with the processor saved beside it (``AutoProcessor``: its PIL image processor
and its tokenizer; no torchvision). Captions are unconditional (no text prefix), beam search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.config import PositiveInt, parse_structured
from .models import WeightsDtype, model_dir, require_model_type, torch_device, torch_dtype

MODEL_CLASSES = {"blip": "BlipForConditionalGeneration", "blip-2": "Blip2ForConditionalGeneration"}
"""transformers class of each captioning ``model_type``."""


def locate_captioner(name_or_path: str, where: str = "--blip") -> tuple[str, str]:
    """(model directory, ``model_type``) of a BLIP/BLIP-2 model (no weights loaded)."""
    directory = model_dir(name_or_path, where)
    kind = require_model_type(directory, where, tuple(MODEL_CLASSES), "a BLIP or BLIP-2 captioning model")
    return directory, kind


class Captioner:
    """``Captioner(cfg).caption(rgb)`` → one line of text."""

    @dataclass
    class Config:
        model: str = "Salesforce/blip-image-captioning-large"
        """Hub id (local HF cache only) or directory of a BLIP or BLIP-2 model with its processor."""
        device: str = "auto"
        """auto (CUDA when available), cpu, cuda, cuda:N."""
        dtype: WeightsDtype = "auto"
        """Weights dtype; auto: float16 on CUDA, float32 elsewhere."""
        max_new_tokens: PositiveInt = 30
        """Longest caption, in tokens."""
        num_beams: PositiveInt = 3
        """Beam search width (1: greedy)."""

    def __init__(self, cfg: Any = None, where: str = "--blip") -> None:
        import transformers

        self.cfg = parse_structured(self.Config, cfg, where)
        directory, self.kind = locate_captioner(self.cfg.model, where)
        self.device = torch_device(self.cfg.device, where)
        self.dtype = torch_dtype(self.cfg.dtype, self.device)
        self.processor = transformers.AutoProcessor.from_pretrained(directory, local_files_only=True)
        model_class = getattr(transformers, MODEL_CLASSES[self.kind])
        self.model = model_class.from_pretrained(directory, local_files_only=True).eval()
        self.model.to(self.device, self.dtype).requires_grad_(False)

    @torch.no_grad()
    def caption(self, rgb: np.ndarray) -> str:
        """Caption of ``rgb`` (H,W,3 uint8), whitespace collapsed."""
        from PIL import Image

        inputs = self.processor(images=Image.fromarray(rgb), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        ids = self.model.generate(
            pixel_values=pixels, max_new_tokens=self.cfg.max_new_tokens, num_beams=self.cfg.num_beams
        )
        return " ".join(self.processor.batch_decode(ids, skip_special_tokens=True)[0].split())
