"""T5 text embeddings for DeepFloyd IF (``prompt_processor=t5``).

The same prompts, views, negative prompt, Perp-Neg and on-disk cache as
:class:`~.processor.PromptProcessor`; only the encoder differs: the IF pipeline's
``tokenizer/`` (``T5Tokenizer``) and ``text_encoder/`` (``T5EncoderModel``, T5 v1.1 XXL for
``DeepFloyd/IF-I-XL-v1.0``), prompts padded to ``max_length`` tokens and encoded with their
attention mask, as diffusers' ``IFPipeline.encode_prompt`` and threestudio's
``deep-floyd-prompt-processor`` do. The encoder runs on the run's device (fp16 weights on CUDA
with ``half_precision``; T5-XXL is 4.7 B parameters) and is loaded only when an embedding is
missing from the cache; embeddings are cached as fp32 (1,L,D), D = 4096 for T5-XXL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from ..core.config import PositiveInt
from ..core.errors import UserError
from ..guidance import pretrained
from ..guidance.deepfloyd_if import weights_variant
from .processor import PromptProcessor, model_fingerprint


class T5PromptProcessor(PromptProcessor):
    """``T5PromptProcessor(cfg)(device) -> PromptEmbeddings`` of T5 (see module docstring)."""

    @dataclass
    class Config(PromptProcessor.Config):
        pretrained_model_name_or_path: str = "DeepFloyd/IF-I-XL-v1.0"
        """DeepFloyd IF pipeline directory or hub id (local HF cache only) whose tokenizer/ and
        text_encoder/ (T5) encode the prompts."""
        max_length: PositiveInt = 77
        """Tokens each prompt is padded or truncated to (IF's 77)."""
        half_precision: bool = True
        """fp16 encoder weights on CUDA (always fp32 on CPU)."""
        variant: Optional[str] = "fp16"
        """Weight-file variant to load (IF ships ``fp16`` files; null: the fp32 ones). A
        checkpoint without the variant's files loads its default files."""

    def fingerprint(self, model_dir: str) -> str:
        """The model files (:func:`~.processor.model_fingerprint`), the encoder kind, the weight
        variant loaded and the padded length."""
        variant = weights_variant(model_dir, "text_encoder", self.cfg.variant)
        return json.dumps([model_fingerprint(model_dir), "t5", variant, self.cfg.max_length])

    @torch.no_grad()
    def encode(self, model_dir: str, texts: list[str], device: torch.device | str | None) -> list[Tensor]:
        """N (1,max_length,D) fp32 CPU embeddings (last hidden state, padding masked in attention)."""
        device = torch.device(device or "cpu")
        dtype = pretrained.weights_dtype(device, self.cfg.half_precision)
        tokenizer, encoder = load_t5(model_dir, self.cfg.variant)
        encoder.to(device=device, dtype=dtype)
        tokens = tokenizer(
            texts,
            padding="max_length",
            max_length=self.cfg.max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        hidden = encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))[0]
        return list(hidden.float().cpu().split(1, 0))


def load_t5(model_dir: str, variant: Optional[str] = None) -> tuple[Any, Any]:
    """The pipeline's ``tokenizer/`` (``T5Tokenizer``) and ``text_encoder/`` (``T5EncoderModel``),
    frozen, on CPU. IF ships its tokenizer as a SentencePiece model, which transformers reads
    with the ``sentencepiece`` package."""
    from transformers import T5EncoderModel, T5Tokenizer

    try:
        tokenizer = pretrained.load_component(T5Tokenizer, model_dir, "tokenizer")
    except ImportError as e:
        raise UserError(
            f"cannot read the T5 tokenizer of '{model_dir}' ({str(e).strip().splitlines()[0]}); "
            "pip install sentencepiece"
        ) from None
    variant = weights_variant(model_dir, "text_encoder", variant)
    encoder = pretrained.load_component(T5EncoderModel, model_dir, "text_encoder", variant=variant)
    return tokenizer, encoder.requires_grad_(False).eval()
