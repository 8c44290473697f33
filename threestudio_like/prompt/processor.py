"""Text embeddings of the prompt, its view-suffixed variants and the negative prompt.

:class:`PromptProcessor` encodes, with the pipeline's own ``tokenizer/`` + ``text_encoder/``:
the prompt, ``"<prompt>, <view> view"`` for every view of :data:`views.VIEWS` and the negative
prompt. Each embedding is cached on disk (``cache_dir``, safetensors) under a hash of
(resolved model directory — for a hub id its snapshot path, i.e. the revision —, the text
encoder's and tokenizer's file names/sizes/mtimes, the text). When every embedding is cached the
text encoder is not loaded at all.

:class:`PromptEmbeddings` hands guidances per-view embeddings: the view of each camera follows
:func:`views.view_names` (DreamFusion's rule), and Perp-Neg (Armandpour et al. 2023, as in
threestudio) interpolates the positive embedding between neighbouring views by azimuth and
pushes away from the other views with weights ``−(a·exp(−b·r) + c)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
from torch import Tensor

from ..core.atomic import atomic_write
from ..core.config import Configurable
from ..core.errors import UserError
from ..guidance import pretrained
from .views import VIEWS, view_names, view_prompt


def _decay(params: tuple[float, float, float], r: float) -> float:
    """Perp-Neg's shifted exponential decay a·exp(−b·r) + c."""
    a, b, c = params
    return a * math.exp(-b * r) + c


@dataclass
class PromptEmbeddings:
    """Embeddings (1,L,D) of one prompt, its views and the negative prompt, plus the view rule.

    Build with :class:`PromptProcessor`; move with :meth:`to`.
    """

    prompt: str
    cond: Tensor
    """(1,L,D) the prompt without a view suffix."""
    uncond: Tensor
    """(1,L,D) the negative prompt ("" = unconditional)."""
    views: dict[str, Tensor]
    """View name (front/side/back/overhead) → (1,L,D) embedding of ``"<prompt>, <view> view"``."""
    view_dependent: bool = True
    front_threshold: float = 45.0
    back_threshold: float = 45.0
    overhead_threshold: float = 60.0
    use_perp_neg: bool = False
    perp_neg_f_sb: tuple[float, float, float] = (1.0, 0.5, -0.606)
    perp_neg_f_fsb: tuple[float, float, float] = (1.0, 0.5, 0.967)
    perp_neg_f_fs: tuple[float, float, float] = (4.0, 0.5, -2.426)
    perp_neg_f_sf: tuple[float, float, float] = (4.0, 0.5, -2.426)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PromptEmbeddings:
        return replace(
            self,
            cond=self.cond.to(device, dtype),
            uncond=self.uncond.to(device, dtype),
            views={k: v.to(device, dtype) for k, v in self.views.items()},
        )

    def view_names(self, elevation: Tensor, azimuth: Tensor) -> list[str]:
        """(B,) degrees → B view names (thresholds of this prompt)."""
        return view_names(elevation, azimuth, self.front_threshold, self.back_threshold, self.overhead_threshold)

    def get_text_embeddings(
        self, elevation: Tensor, azimuth: Tensor, view_dependent: Optional[bool] = None
    ) -> tuple[Tensor, Tensor]:
        """(B,) elevation/azimuth in degrees → (cond (B,L,D), uncond (B,L,D)).

        ``view_dependent`` (default: the processor's ``view_dependent_prompting``) picks each
        camera's view-suffixed prompt; otherwise the plain prompt for every view.
        """
        b = elevation.shape[0]
        if self.view_dependent if view_dependent is None else view_dependent:
            cond = torch.cat([self.views[v] for v in self.view_names(elevation, azimuth)], 0)
        else:
            cond = self.cond.expand(b, -1, -1)
        return cond, self.uncond.expand(b, -1, -1)

    def get_perp_neg_embeddings(self, elevation: Tensor, azimuth: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Perp-Neg: (pos (B,L,D), uncond (B,L,D), neg (B,2,L,D), neg_weights (B,2)).

        Front half (|azimuth| < 90°): r = 1 − |az|/90 (1 = front, 0 = side);
        pos = r·front + (1−r)·side, negatives front, side with weights −f_fs(r), −f_sf(1−r).
        Back half: r = 2 − |az|/90 (1 = side, 0 = back); pos = r·side + (1−r)·back, negatives
        side, front with weights −f_sb(r), −f_fsb(r). Overhead views: pos = overhead, no
        negatives (weights 0). Use with :func:`guidance.diffusion.perp_neg_guidance`.
        """
        front, side, back = self.views["front"][0], self.views["side"][0], self.views["back"][0]
        unc = self.uncond[0]
        pos, neg, weights = [], [], []
        az = ((azimuth.detach().double().cpu() + 180.0) % 360.0 - 180.0).abs().tolist()
        for name, a in zip(self.view_names(elevation, azimuth), az):
            if name == "overhead":
                pos.append(self.views["overhead"][0])
                neg.append(torch.stack([unc, unc]))
                weights.append([0.0, 0.0])
            elif a < 90.0:
                r = 1.0 - a / 90.0
                pos.append(r * front + (1.0 - r) * side)
                neg.append(torch.stack([front, side]))
                weights.append([-_decay(self.perp_neg_f_fs, r), -_decay(self.perp_neg_f_sf, 1.0 - r)])
            else:
                r = 2.0 - a / 90.0
                pos.append(r * side + (1.0 - r) * back)
                neg.append(torch.stack([side, front]))
                weights.append([-_decay(self.perp_neg_f_sb, r), -_decay(self.perp_neg_f_fsb, r)])
        b = elevation.shape[0]
        w = torch.tensor(weights, dtype=torch.float32, device=self.cond.device)
        return torch.stack(pos), self.uncond.expand(b, -1, -1), torch.stack(neg), w


class PromptProcessor(Configurable):
    """``PromptProcessor(cfg)(device) -> PromptEmbeddings`` (see module docstring)."""

    pretrained_kind = "stable-diffusion"
    """Its model is a Stable Diffusion-format pipeline (its tokenizer and text encoder)."""

    @dataclass
    class Config:
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        """Diffusers pipeline directory or hub id (local HF cache only) whose tokenizer/ and
        text_encoder/ encode the prompts."""
        prompt: str = ""
        """The text prompt (required)."""
        negative_prompt: str = ""
        """What to steer away from; "" is the unconditional embedding of classifier-free guidance."""
        view_dependent_prompting: bool = True
        """Append ", front/side/back/overhead view" to the prompt by camera (DreamFusion)."""
        front_threshold: float = 45.0
        """|azimuth| ≤ this (degrees) is the front view."""
        back_threshold: float = 45.0
        """|azimuth| ≥ 180 − this is the back view."""
        overhead_threshold: float = 60.0
        """Elevation above this (degrees) is the overhead view."""
        use_perp_neg: bool = False
        """Perp-Neg against the Janus problem (needs view_dependent_prompting); the SDS guidance
        uses it when either this or its own use_perp_neg is true."""
        perp_neg_f_sb: tuple[float, float, float] = (1.0, 0.5, -0.606)
        """(a, b, c) of the side-view negative weight a·exp(−b·r)+c in the side–back half."""
        perp_neg_f_fsb: tuple[float, float, float] = (1.0, 0.5, 0.967)
        """(a, b, c) of the front-view negative weight in the side–back half."""
        perp_neg_f_fs: tuple[float, float, float] = (4.0, 0.5, -2.426)
        """(a, b, c) of the front-view negative weight in the front–side half."""
        perp_neg_f_sf: tuple[float, float, float] = (4.0, 0.5, -2.426)
        """(a, b, c) of the side-view negative weight in the front–side half."""
        cache_dir: str = "~/.cache/threestudio_like/text_embeddings"
        """Where embeddings are cached (one safetensors file per text); "" disables the cache."""

    def __init__(self, cfg: Any = None, where: str = "prompt_processor") -> None:
        c = self.parse_config(cfg, where)
        if not c.prompt.strip():
            raise UserError(f'{where}.prompt is empty; pass prompt="a description of the object"')
        if c.use_perp_neg and not c.view_dependent_prompting:
            raise UserError(f"{where}.use_perp_neg needs {where}.view_dependent_prompting=true")

    def texts(self) -> dict[str, str]:
        """Key → text to encode: ``prompt``, ``negative`` and one per view."""
        c = self.cfg
        out = {"prompt": c.prompt, "negative": c.negative_prompt}
        out.update({f"view:{v}": view_prompt(c.prompt, v) for v in VIEWS})
        return out

    def __call__(self, device: torch.device | str | None = None) -> PromptEmbeddings:
        c = self.cfg
        model_dir = pretrained.resolve_pretrained_dir(c.pretrained_model_name_or_path)
        texts = self.texts()
        emb = self._encode_cached(model_dir, list(dict.fromkeys(texts.values())), device)
        return PromptEmbeddings(
            prompt=c.prompt,
            cond=emb[texts["prompt"]],
            uncond=emb[texts["negative"]],
            views={v: emb[texts[f"view:{v}"]] for v in VIEWS},
            view_dependent=c.view_dependent_prompting,
            front_threshold=c.front_threshold,
            back_threshold=c.back_threshold,
            overhead_threshold=c.overhead_threshold,
            use_perp_neg=c.use_perp_neg,
            perp_neg_f_sb=tuple(c.perp_neg_f_sb),
            perp_neg_f_fsb=tuple(c.perp_neg_f_fsb),
            perp_neg_f_fs=tuple(c.perp_neg_f_fs),
            perp_neg_f_sf=tuple(c.perp_neg_f_sf),
        ).to(device)

    # ---- encoding and the cache ----------------------------------------------------------------
    def encode(self, model_dir: str, texts: list[str], device: torch.device | str | None) -> list[Tensor]:
        """N (1,L,D) fp32 CPU embeddings of ``texts`` with the pipeline's CLIP text encoder (run on
        the CPU whatever ``device``: it is small). Another text encoder overrides this and
        :meth:`fingerprint` (``prompt/t5.py``)."""
        return encode_texts(model_dir, texts)

    def fingerprint(self, model_dir: str) -> str:
        """What a cached embedding depends on besides its text (:func:`model_fingerprint`)."""
        return model_fingerprint(model_dir)

    def _encode_cached(self, model_dir: str, texts: list[str], device: torch.device | str | None) -> dict[str, Tensor]:
        """text → (1,L,D) fp32 CPU embedding, from the cache where possible."""
        from safetensors.torch import load_file, save

        cache_dir = os.path.expanduser(self.cfg.cache_dir) if self.cfg.cache_dir else ""
        fingerprint = self.fingerprint(model_dir)
        files = {t: os.path.join(cache_dir, f"{cache_key(fingerprint, t)}.safetensors") for t in texts}
        out: dict[str, Tensor] = {}
        if cache_dir:
            for t, f in files.items():
                if os.path.isfile(f):
                    try:
                        out[t] = load_file(f)["embedding"]
                    except Exception:  # a corrupt cache entry is re-encoded and overwritten
                        pass
        missing = [t for t in texts if t not in out]
        if missing:
            encoded = self.encode(model_dir, missing, device)
            for t, e in zip(missing, encoded):
                out[t] = e
                if cache_dir:
                    data = save({"embedding": e.contiguous()}, metadata={"text": t, "model_dir": model_dir})
                    try:
                        atomic_write(files[t], lambda fh, data=data: fh.write(data))
                    except OSError as err:  # the cache only saves time: warn, keep going
                        warnings.warn(f"cannot write the text-embedding cache {files[t]}: {err}", stacklevel=2)
        return out


def model_fingerprint(model_dir: str) -> str:
    """Resolved model directory + name/size/mtime of every file under ``text_encoder/`` and
    ``tokenizer/`` — changes when the weights or the tokenizer change (or the hub revision,
    which is part of a snapshot's path)."""
    parts: list[Any] = [os.path.realpath(model_dir)]
    for sub in ("text_encoder", "tokenizer"):
        root = os.path.join(model_dir, sub)
        if not os.path.isdir(root):
            raise UserError(
                f"the pretrained model at '{model_dir}' has no {sub}/ folder; "
                "pass a Stable Diffusion-format pipeline directory"
            )
        for name in sorted(os.listdir(root)):
            st = os.stat(os.path.join(root, name))
            parts.append([sub, name, st.st_size, st.st_mtime_ns])
    return json.dumps(parts)


def cache_key(fingerprint: str, text: str) -> str:
    return hashlib.sha256(json.dumps([fingerprint, text]).encode("utf-8")).hexdigest()[:40]


@torch.no_grad()
def encode_texts(model_dir: str, texts: list[str]) -> list[Tensor]:
    """N (1,L,D) fp32 CPU embeddings (last hidden state, padded to the tokenizer's max length)."""
    tokenizer, encoder = pretrained.load_text_encoder(model_dir)
    tokens = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    hidden = encoder(tokens.input_ids)[0]
    return list(hidden.float().split(1, 0))
