"""CLIP-based scores of rendered views: CLIP score, CLIP R-precision, the Janus indicator and the
similarity of novel views to an input image.

* ``clip_score``: mean over the views of the cosine between the view's and the prompt's CLIP
  embeddings (Hessel et al.'s CLIPScore without its 2.5 rescaling).
* ``clip_r_precision``: DreamFusion's protocol — the fraction of views whose most similar text,
  among the prompt and a set of other object prompts (:func:`load_prompt_set`), is the prompt.
* ``janus_margin``: cosine of the back view (azimuth 180°) with "the back of <prompt>" minus its
  cosine with "the front of <prompt>"; negative: the back looks like a front (a Janus face).
* ``image_clip_similarity``: mean cosine of the views with the input image (Make-It-3D's and
  Magic123's novel-view CLIP similarity).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import UserError
from ..ops.clip_preprocess import ClipImageNormalization
from .clip_similarity import clip_image_embeddings, clip_text_embeddings
from .evaluator import Scores

PROMPT_SET = "dreamfusion_style_prompts.txt"
"""The shipped prompt set (``eval/data/``): everyday objects, one a line."""
CHUNK = 32
"""Images or texts embedded at a time."""


def load_prompt_set(path: Optional[str | Path] = None) -> list[str]:
    """Prompts of a text file (one a line; blank lines and ``#`` comments skipped); the shipped set
    when ``path`` is None."""
    if path is None:
        text = resources.files("threestudio_like.eval").joinpath("data", PROMPT_SET).read_text(encoding="utf-8")
    else:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"--prompts: no file at '{path}'; give a text file with one prompt a line")
        text = p.read_text(encoding="utf-8")
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UserError(f"--prompts: '{path}' holds no prompts; give a text file with one prompt a line")
    return prompts


class ClipScorer:
    """A loaded ``CLIPModel`` with its tokenizer and image normalization (``guidance/clip.py``'s
    ``load_clip``), scoring (N,H,W,3) views in [0,1]."""

    def __init__(self, model: nn.Module, tokenizer: Any, norm: ClipImageNormalization) -> None:
        self.model, self.tokenizer, self.norm = model.eval(), tokenizer, norm

    @torch.no_grad()
    def images(self, images: Tensor) -> Tensor:
        """(N,H,W,3) → (N,D) unit image embeddings."""
        device = next(self.model.parameters()).device
        out = [clip_image_embeddings(self.model, c.to(device), self.norm) for c in images.split(CHUNK)]
        return F.normalize(torch.cat(out).float(), dim=-1)

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> Tensor:
        """N texts → (N,D) unit text embeddings."""
        texts = list(texts)
        chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
        out = [clip_text_embeddings(self.model, self.tokenizer, chunk) for chunk in chunks]
        return F.normalize(torch.cat(out).float(), dim=-1)

    def text_scores(self, views: Tensor, prompt: str, prompt_set: Sequence[str], back: int) -> Scores:
        """``clip_score``, ``clip_r_precision`` (against ``prompt_set``, the prompt left out of it if
        there) and the Janus scores of view ``back``."""
        others = [p for p in dict.fromkeys(prompt_set) if p != prompt]
        image = self.images(views)
        text = self.texts([prompt, *others, f"the back of {prompt}", f"the front of {prompt}"])
        sim = image @ text[: len(others) + 1].T  # (N, 1 + others)
        back_sim, front_sim = (image[back] @ text[-2:].T).tolist()
        return {
            "clip_score": float(sim[:, 0].mean()),
            "clip_r_precision": float((sim.argmax(dim=1) == 0).float().mean()),
            "clip_r_precision_prompts": len(others) + 1,
            "janus_back_similarity": back_sim,
            "janus_front_similarity": front_sim,
            "janus_margin": back_sim - front_sim,
        }

    def image_similarity(self, views: Tensor, image: Tensor) -> float:
        """Mean cosine of the (N,H,W,3) views with one (1,h,w,3) image."""
        return float((self.images(views) @ self.images(image).T).mean())
