"""CLIP similarity (CLIP score): cosine between CLIP embeddings of images and a text or image target.

``clip_similarity(images, target, model)`` embeds B images (B,H,W,3) in [0,1] with a
``CLIPModel``'s vision tower + projection (preprocessed in torch,
:func:`~threestudio_like.ops.clip_preprocess.clip_preprocess`) and compares them with the
embedding of one or B texts (text tower + projection) or images. ``ClipGuidance``
(``guidance/clip.py``) trains with ``1 − cos`` of the same embeddings; ``load_clip`` there loads
a model from disk.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import UserError
from ..ops.clip_preprocess import ClipImageNormalization, clip_preprocess


def clip_image_embeddings(model: nn.Module, images: Tensor, norm: ClipImageNormalization) -> Tensor:
    """(B,H,W,3) in [0,1] → (B,D) *unnormalized* projected image embeddings of a ``CLIPModel``."""
    dtype = next(model.parameters()).dtype
    pixels = clip_preprocess(images.permute(0, 3, 1, 2), norm).to(dtype)
    pooled = model.vision_model(pixel_values=pixels).pooler_output
    return model.visual_projection(pooled)


def clip_text_embeddings(model: nn.Module, tokenizer: Any, texts: Sequence[str]) -> Tensor:
    """N texts → (N,D) projected text embeddings of a ``CLIPModel``."""
    device = next(model.parameters()).device
    tokens = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    ).to(device)
    pooled = model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    return model.text_projection(pooled)


def clip_similarity(
    images: Tensor,
    text_or_images: Union[str, Sequence[str], Tensor],
    model: nn.Module,
    tokenizer: Any = None,
    norm: Optional[ClipImageNormalization] = None,
) -> Tensor:
    """Cosine similarity (B,) between B images (B,H,W,3) in [0,1] and a target: one text, B texts,
    one image (1,h,w,3) or B images (B,h,w,3). One target is compared with every image."""
    norm = norm or ClipImageNormalization.from_processor(None, model.config.vision_config.image_size)
    a = clip_image_embeddings(model, images, norm)
    if isinstance(text_or_images, Tensor):
        b = clip_image_embeddings(model, text_or_images.to(images), norm)
    else:
        if tokenizer is None:
            raise UserError("clip_similarity with text needs the CLIP tokenizer; pass tokenizer=")
        texts = [text_or_images] if isinstance(text_or_images, str) else list(text_or_images)
        b = clip_text_embeddings(model, tokenizer, texts)
    if b.shape[0] not in (1, a.shape[0]):
        raise UserError(f"clip_similarity: {b.shape[0]} targets for {a.shape[0]} images; give 1 or {a.shape[0]}")
    return F.cosine_similarity(a, b.to(a), dim=-1)
