"""CLIP as a guidance (AvatarCLIP / Make-It-3D) and as an evaluation score.

Renders are preprocessed in torch (resize the short side, centre crop, normalize with the
processor's mean/std — no PIL in the hot path, gradients flow), embedded with
``CLIPModel``'s vision tower + projection, and compared by cosine similarity with the embedding
of a text prompt or a reference image:

    loss = mean_b (1 − cos(E_img(render_b), e_target))

:func:`clip_similarity` is the same cosine, for evaluation (CLIP score).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.errors import UserError
from .base import GuidanceOutput

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
    def from_processor(cls, processor: Any, image_size: int) -> "ClipImageNormalization":
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
    images = images[..., top:top + norm.crop, left:left + norm.crop]
    mean = torch.tensor(norm.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def clip_image_embeddings(model: nn.Module, images: Tensor, norm: ClipImageNormalization) -> Tensor:
    """(B,H,W,3) in [0,1] → (B,D) *unnormalized* projected image embeddings of a ``CLIPModel``."""
    dtype = next(model.parameters()).dtype
    pixels = clip_preprocess(images.permute(0, 3, 1, 2), norm).to(dtype)
    pooled = model.vision_model(pixel_values=pixels).pooler_output
    return model.visual_projection(pooled)


def clip_text_embeddings(model: nn.Module, tokenizer: Any, texts: Sequence[str]) -> Tensor:
    """N texts → (N,D) projected text embeddings of a ``CLIPModel``."""
    device = next(model.parameters()).device
    tokens = tokenizer(list(texts), padding="max_length", truncation=True,
                       max_length=tokenizer.model_max_length, return_tensors="pt").to(device)
    pooled = model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    return model.text_projection(pooled)


def clip_similarity(images: Tensor, text_or_images: Union[str, Sequence[str], Tensor], model: nn.Module,
                    tokenizer: Any = None, norm: Optional[ClipImageNormalization] = None) -> Tensor:
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


def load_clip(name_or_path: str, with_tokenizer: bool = True) -> tuple[nn.Module, Any, ClipImageNormalization]:
    """``CLIPModel`` (+ ``CLIPTokenizer``) and its image normalization from a local directory or
    the local Hugging Face cache — never the network."""
    from transformers import CLIPModel, CLIPTokenizer

    from .zero123_pipeline import resolve_model_dir

    path = resolve_model_dir(name_or_path)
    model = CLIPModel.from_pretrained(path, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True) if with_tokenizer else None
    processor = None
    proc_file = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(proc_file):
        with open(proc_file) as f:
            processor = json.load(f)
    return model, tokenizer, ClipImageNormalization.from_processor(processor, model.config.vision_config.image_size)


class ClipGuidance(Configurable, nn.Module):
    """``loss = mean(1 − cos(CLIP(render), target))`` with a text or reference-image target.

    ``__call__(rgb (B,H,W,3) in [0,1], cameras=None, prompt=None) -> GuidanceOutput(name="clip")``.
    The target is the reference image when one is set (config path or :meth:`set_reference`),
    else ``prompt`` text. CLIP is frozen; gradients flow to the render only.
    """

    @dataclass
    class Config:
        pretrained_model_name_or_path: str = "openai/clip-vit-base-patch32"
        """Local directory or hub id (resolved from the local HF cache only) of a CLIPModel."""
        prompt: str = ""
        """Text target (used when no reference image is set)."""
        reference_image: str = ""
        """Path of a reference image target (RGB or RGBA; alpha composited over white)."""
        name: str = "clip"
        """Loss name under which the system weights this guidance."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        model, tokenizer, self.norm = load_clip(self.cfg.pretrained_model_name_or_path,
                                                with_tokenizer=not self.cfg.reference_image)
        model.requires_grad_(False).eval()
        # frozen: a plain attribute, so the guidance's state_dict stays empty
        self.__dict__["model"] = model
        self.tokenizer = tokenizer
        self._target: Optional[Tensor] = None
        if self.cfg.reference_image:
            self.set_reference(load_image(self.cfg.reference_image))
        elif self.cfg.prompt:
            self.set_text(self.cfg.prompt)

    def to(self, *args: Any, **kwargs: Any) -> "ClipGuidance":
        self.model.to(*args, **kwargs)
        if self._target is not None:
            self._target = self._target.to(next(self.model.parameters()).device)
        return nn.Module.to(self, *args, **kwargs)

    @torch.no_grad()
    def set_text(self, text: str) -> None:
        """Use the embedding of ``text`` as the target."""
        if self.tokenizer is None:
            from transformers import CLIPTokenizer

            from .zero123_pipeline import resolve_model_dir

            self.tokenizer = CLIPTokenizer.from_pretrained(
                resolve_model_dir(self.cfg.pretrained_model_name_or_path), local_files_only=True)
        self._target = F.normalize(clip_text_embeddings(self.model, self.tokenizer, [text]).float(), dim=-1)

    @torch.no_grad()
    def set_reference(self, rgb: Tensor, elevation_deg: float = 0.0, azimuth_deg: float = 0.0,
                      distance: float = 0.0) -> None:
        """Use the embedding of the image ``rgb`` (1,H,W,3) in [0,1] as the target (the camera of
        the image, given by the system to every image-conditioned guidance, is not used)."""
        device = next(self.model.parameters()).device
        emb = clip_image_embeddings(self.model, rgb.to(device), self.norm)
        self._target = F.normalize(emb.float(), dim=-1)

    def forward(self, rgb: Tensor, cameras: Any = None, prompt: Any = None) -> GuidanceOutput:
        if self._target is None:
            raise UserError("CLIP guidance has no target: set guidance.prompt or guidance.reference_image")
        emb = F.normalize(clip_image_embeddings(self.model, rgb, self.norm).float(), dim=-1)
        cos = (emb * self._target.to(emb.device)).sum(-1)
        loss = (1.0 - cos).mean()
        return GuidanceOutput(loss=loss, name=self.cfg.name, extras={"clip_similarity": cos.detach().mean()})


def load_image(path: str) -> Tensor:
    """Image file → (1,H,W,3) in [0,1]; an alpha channel is composited over white (the
    background CLIP targets and Zero123 references expect)."""
    import imageio.v3 as iio
    import numpy as np

    try:
        a = iio.imread(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the reference image '{path}': {e}") from None
    a = a.astype(np.float32) / (65535.0 if a.dtype == np.uint16 else 255.0)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.shape[-1] == 4:
        a = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    return torch.from_numpy(np.ascontiguousarray(a[..., :3]))[None]
