"""Score distillation with DeepFloyd IF stage I (``guidance=if``): pixel space at 64², T5 text.

threestudio's recommended prior for DreamFusion and Magic3D's coarse stage
(``deep-floyd-guidance``). The step is SDS's (:class:`~.sds.ScoreDistillationGuidance`: CFG or
Perp-Neg, w(t), t range, grad = w(t)(ε̂ − ε)); what differs is the prior:

* no VAE: the "latents" are the render itself, ``z = 2·rgb − 1`` resized (bilinear) to the
  UNet's ``sample_size`` — 64² for ``DeepFloyd/IF-I-XL-v1.0`` — so the gradient reaches the
  render through the resize only;
* the UNet predicts a learned variance beside ε (``out_channels`` = 2 × ``in_channels``: 6 for
  RGB, split 3/3); SDS takes the first half, ε (:class:`LearnedVariancePrior`);
* the text is T5's (``prompt_processor=t5``, :mod:`..prompt.t5`), (B,77,4096) for IF-I-XL,
  projected and attention-pooled inside the UNet.

Loaded from the diffusers layout of the IF pipeline (``model_index.json``, ``unet/``,
``scheduler/``, ``tokenizer/``, ``text_encoder/``) in a local directory or the local Hugging
Face cache, like every prior (:mod:`.pretrained`); the ``fp16`` weight files when present.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any, Optional

from torch import Tensor

from ..core.config import Range, Schedule
from ..core.errors import UserError
from .distillation import DistillationGuidance
from .pretrained import DiffusionPrior, load_component, read_model_index, resolve_pretrained_dir
from .sds import ScoreDistillationGuidance


def weights_variant(model_dir: str, subfolder: str, variant: Optional[str]) -> Optional[str]:
    """``variant`` if ``model_dir/subfolder`` has weight files of that variant
    (``*.fp16.safetensors``, ``*.fp16-00001-of-00002.safetensors``…), else None (the default
    files): a checkpoint saved without variants loads either way."""
    if not variant:
        return None
    try:
        names = os.listdir(os.path.join(model_dir, subfolder))
    except OSError:
        return None
    return variant if any(f".{variant}." in n or f".{variant}-" in n for n in names) else None


class LearnedVariancePrior(DiffusionPrior):
    """A pixel-space :class:`DiffusionPrior` whose UNet outputs [ε; variance] (IF: 6 channels);
    :meth:`predict` returns the first ``in_channels``, the model's ε (or v/x₀)."""

    @property
    def text_dim(self) -> int:
        """Width of the text embeddings the UNet takes (T5's hidden size)."""
        cfg = self.unet.config
        return int(cfg.encoder_hid_dim or cfg.cross_attention_dim)

    def predict(self, noisy: Tensor, t: Tensor, text: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        """fp32 (N,C,s,s): the prediction half of the UNet's (N,2C,s,s) output."""
        return super().predict(noisy, t, text, class_labels)[:, : self.latent_channels]


def load_if_prior(
    name_or_path: str, half_precision: bool = True, variant: Optional[str] = "fp16"
) -> LearnedVariancePrior:
    """IF stage I's UNet and scheduler (as ``DDPMScheduler``: ``add_noise`` and ᾱ), on CPU; call
    :meth:`DiffusionPrior.to` to place it. UserError unless the UNet is pixel space with a
    learned variance (``out_channels`` = 2 × ``in_channels``)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    model_dir = resolve_pretrained_dir(name_or_path)
    read_model_index(model_dir)
    unet = load_component(UNet2DConditionModel, model_dir, "unet", variant=weights_variant(model_dir, "unet", variant))
    scheduler = load_component(DDPMScheduler, model_dir, "scheduler")
    c_in, c_out = int(unet.config.in_channels), int(unet.config.out_channels)
    if c_out != 2 * c_in:
        raise UserError(
            f"the UNet at '{model_dir}' outputs {c_out} channels for {c_in} in; DeepFloyd IF's predicts "
            f"ε and a learned variance ({2 * c_in}): pass an IF stage I pipeline (DeepFloyd/IF-I-XL-v1.0)"
        )
    return LearnedVariancePrior(unet, scheduler, None, model_dir, half_precision)


class DeepFloydIFGuidance(ScoreDistillationGuidance):
    """SDS with DeepFloyd IF stage I: ``guidance(rgb (B,H,W,3) in [0,1], cameras, prompt)`` (see
    module docstring). ``rgb_as_latents`` changes nothing: the render is the UNet's input."""

    name = "DeepFloyd IF"

    @dataclass
    class Config(ScoreDistillationGuidance.Config):
        pretrained_model_name_or_path: str = "DeepFloyd/IF-I-XL-v1.0"
        """IF stage I diffusers pipeline directory or hub id (resolved from the local HF cache only)."""
        guidance_scale: Annotated[Any, Schedule(Range(ge=0))] = 20.0
        """Classifier-free guidance scale (threestudio's dreamfusion-if and magic3d-coarse-if: 20)."""
        variant: Optional[str] = "fp16"
        """Weight-file variant to load (IF ships ``fp16`` files; null: the fp32 ones). A
        checkpoint without the variant's files loads its default files."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        # SDS's own __init__ would load a Stable Diffusion prior; the rest of SDS is used as is.
        DistillationGuidance.__init__(self, cfg, where)
        self.prior: LearnedVariancePrior = load_if_prior(
            self.cfg.pretrained_model_name_or_path, self.cfg.half_precision, self.cfg.variant
        )

    def check_inputs(self, prompt: Any) -> None:
        super().check_inputs(prompt)
        width, needed = int(prompt.cond.shape[-1]), self.prior.text_dim
        if width != needed:
            raise UserError(
                f"{self.where}: DeepFloyd IF takes {needed}-wide T5 text embeddings, the prompt processor "
                f"gives {width}-wide ones: use prompt_processor=t5 with the IF model"
            )
