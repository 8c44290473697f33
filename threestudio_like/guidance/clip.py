"""CLIP as a guidance (AvatarCLIP / Make-It-3D).

Renders are preprocessed in torch (resize the short side, centre crop, normalize with the
processor's mean/std — :mod:`~threestudio_like.ops.clip_preprocess`, gradients flow), embedded
with ``CLIPModel``'s vision tower + projection, and compared by cosine similarity with the
embedding of a text prompt or a reference image:

    loss = mean_b (1 − cos(E_img(render_b), e_target))

The same cosine, for evaluation, is :func:`~threestudio_like.eval.clip_similarity.clip_similarity`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import UserError
from ..data.image import load_image
from ..eval.clip_similarity import clip_image_embeddings, clip_text_embeddings
from ..ops.clip_preprocess import ClipImageNormalization
from .base import Frozen, Guidance, GuidanceOutput
from .pretrained import resolve_pretrained_dir


def load_clip(name_or_path: str, with_tokenizer: bool = True) -> tuple[nn.Module, Any, ClipImageNormalization]:
    """``CLIPModel`` (+ ``CLIPTokenizer``) and its image normalization from a local directory or
    the local Hugging Face cache — never the network."""
    from transformers import CLIPModel, CLIPTokenizer

    path = resolve_pretrained_dir(name_or_path)
    model = CLIPModel.from_pretrained(path, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True) if with_tokenizer else None
    processor = None
    proc_file = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(proc_file):
        with open(proc_file) as f:
            processor = json.load(f)
    return model, tokenizer, ClipImageNormalization.from_processor(processor, model.config.vision_config.image_size)


class ClipGuidance(Guidance):
    """``loss = mean(1 − cos(CLIP(render), target))`` with a text or reference-image target.

    ``guidance(rgb (B,H,W,3) in [0,1], cameras=None, prompt=None) -> GuidanceOutput`` (the
    batch's mean cosine in ``extras["clip_similarity"]``). The target is the reference image when
    one is set (config path or :meth:`set_reference`, which the system calls with the stage's
    input image), else the ``prompt`` text. CLIP is frozen; gradients flow to the render only.
    """

    name = "CLIP"
    pretrained_kind = "clip"
    uses_reference = True

    @dataclass
    class Config:
        pretrained_model_name_or_path: str = "openai/clip-vit-base-patch32"
        """Local directory or hub id (resolved from the local HF cache only) of a CLIPModel."""
        prompt: str = ""
        """Text target (used when no reference image is set)."""
        reference_image: str = ""
        """Path of a reference image target (RGB or RGBA; alpha composited over white)."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        super().__init__(cfg, where)
        model, self.tokenizer, self.norm = load_clip(
            self.cfg.pretrained_model_name_or_path, with_tokenizer=not self.cfg.reference_image
        )
        self.model = Frozen(model)  # outside the module tree: the guidance's state_dict stays empty
        self._target: Optional[Tensor] = None
        if self.cfg.reference_image:
            self.set_reference(load_image(self.cfg.reference_image, what="reference image"))
        elif self.cfg.prompt:
            self.set_text(self.cfg.prompt)

    def place(self, device: torch.device | str) -> ClipGuidance:
        self.model.to(device)
        if self._target is not None:
            self._target = self._target.to(device)
        super().place(device)
        return self

    @torch.no_grad()
    def set_text(self, text: str) -> None:
        """Use the embedding of ``text`` as the target."""
        if self.tokenizer is None:
            from transformers import CLIPTokenizer

            self.tokenizer = CLIPTokenizer.from_pretrained(
                resolve_pretrained_dir(self.cfg.pretrained_model_name_or_path), local_files_only=True
            )
        self._target = F.normalize(clip_text_embeddings(self.model.module, self.tokenizer, [text]).float(), dim=-1)

    @torch.no_grad()
    def set_reference(
        self, rgb: Tensor, elevation_deg: float = 0.0, azimuth_deg: float = 0.0, distance: float = 0.0
    ) -> None:
        """Use the embedding of the image ``rgb`` (1,H,W,3) in [0,1] as the target (the camera of
        the image is not used)."""
        device = next(self.model.module.parameters()).device
        emb = clip_image_embeddings(self.model.module, rgb.to(device), self.norm)
        self._target = F.normalize(emb.float(), dim=-1)

    def forward(self, rgb: Tensor, cameras: Any = None, prompt: Any = None) -> GuidanceOutput:
        if self._target is None:
            raise UserError(f"{self.where}: CLIP guidance has no target: set its prompt or reference_image")
        emb = F.normalize(clip_image_embeddings(self.model.module, rgb, self.norm).float(), dim=-1)
        cos = (emb * self._target.to(emb.device)).sum(-1)
        loss = (1.0 - cos).mean()
        return GuidanceOutput(loss=loss, extras={"clip_similarity": cos.detach().mean()})
