"""Architectures of the toy-world priors, in the real diffusers/transformers formats.

* :func:`build_toy_sd` — a pixel-space Stable Diffusion pipeline (no VAE): a word-level
  ``CLIPTokenizer`` (:func:`write_word_tokenizer`), a 2-layer ``CLIPTextModel`` (hidden 64), a
  ``UNet2DConditionModel`` at 32² with channels (16, 32, 64), cross-attention only at 8² and in
  the middle block, and a camera class embedding (``class_embed_type="projection"``: the UNet
  takes ``class_labels = c2w.reshape(B, 16)``, as VSD's LoRA does), DDPM with Stable
  Diffusion's scaled-linear β schedule.
* :func:`build_toy_zero123` — a pixel-space Zero123 pipeline: the same UNet with 6 input
  channels (noisy image + reference image) and attention at 16² too (the pose, which enters by
  cross-attention only, reaches two levels), no class embedding; a 2-layer
  ``CLIPVisionModelWithProjection`` at 32², the camera projection (64 + 4 → 64), DDIM with the
  same scaled-linear β.

The training scripts (``train_sd.py``, ``train_zero123.py``) fit them on the toy dataset and
``save_pretrained`` them into ``assets/toy-sd`` / ``assets/toy-zero123``; the guidances load them
with the same ``from_pretrained`` code as Stable Diffusion 2.1 / zero123-xl.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..core.errors import UserError
from .shapes import COLORS, SHAPES

ASSETS = Path(__file__).resolve().parent.parent / "assets"
"""The package's shipped assets (toy-sd, toy-zero123, toy-images, the tiny smoke models)."""
IMAGE_SIZE = 32
"""Side of the toy images and of the priors' pixel-space samples."""
TEXT_DIM = 64
"""Hidden size of the toy text/image encoders = the UNets' cross-attention dim."""
MAX_TOKENS = 16
"""Tokenizer ``model_max_length``: "a yellow cylinder, overhead view" is 8 tokens with BOS/EOS."""
CAMERA_DIM = 16
"""Camera class-label size: the flattened 4×4 camera-to-world matrix."""
VOCABULARY = ("a", "an", "the", "view", "front", "side", "back", "overhead", *COLORS, *SHAPES)
"""Words the toy tokenizer knows as single tokens (others are spelled out letter by letter)."""


UNET_CHANNELS = (16, 32, 64)
"""The shipped toy UNets' ``block_out_channels`` (≈ 1 M parameters for the toy SD)."""


def unet_config(
    in_channels: int,
    out_channels: int,
    cross_attention_dim: int,
    camera: bool,
    channels: Sequence[int] = UNET_CHANNELS,
    attention_levels: int = 1,
) -> dict:
    """The toy UNet (``UNet2DConditionModel`` kwargs); ``channels``: one width per resolution
    level (three levels, multiples of the 8 norm groups); ``attention_levels``: how many of the
    coarsest levels (1 or 2: 8², 16²) have transformer blocks (self- and cross-attention) — the
    only places the conditioning enters besides the time embedding."""
    if len(channels) != 3 or any(c <= 0 or c % 8 for c in channels):
        raise UserError(f"toy UNet channels: expected three positive multiples of 8, got {list(channels)}")
    if attention_levels not in (1, 2):
        raise UserError(f"toy UNet attention_levels: expected 1 or 2, got {attention_levels}")
    attends = [level >= 3 - attention_levels for level in range(3)]
    extra = dict(class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_DIM) if camera else {}
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=tuple(channels),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
        cross_attention_dim=cross_attention_dim,
        **extra,
    )


def scheduler_config() -> dict:
    """ε-prediction, 1000 steps, Stable Diffusion's scaled-linear β (√β linear from √0.00085 to
    √0.012), x̂₀ clipped to [−1, 1] when sampling (pixel space; ``StableDiffusionPipeline``
    resets the flag it saves, so ``train_sd.sample`` sets it again).

    Not DDPM's ``linear`` 1e-4 → 0.02: that leaves 32² images at signal-to-noise < 0.1 from
    t ≈ 500 on, so half the timesteps teach little; retrained with this schedule (and the min-SNR
    loss weight) the toy SD's text-to-3D IoU rose on the cylinder and torus, the toy Zero123's
    image-to-3D IoU on the cylinder, cone and torus (README)."""
    betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return dict(num_train_timesteps=1000, **betas, prediction_type="epsilon", clip_sample=True, steps_offset=1)


def write_word_tokenizer(path: str, words: Iterable[str] = VOCABULARY, max_tokens: int = MAX_TOKENS) -> str:
    """Save a real ``CLIPTokenizer`` to ``path`` whose BPE merges build each of ``words`` into one
    token (``"cube" → cube</w>``); letters, digits and ',' are tokens too, so any other word is
    spelled out. Every intermediate merge result is in the vocabulary (the fast tokenizer needs it)."""
    from transformers import CLIPTokenizer

    os.makedirs(path, exist_ok=True)
    symbols = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + [","]
    vocab = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in sorted(words, key=len, reverse=True):  # long words first: their merges win ties
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merge = f"{left} {right}"
            left = left + right
            if merge not in merges:
                merges.append(merge)
            if left not in vocab:
                vocab.append(left)
    vocab_file, merges_file = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(merges_file, "w") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    CLIPTokenizer(vocab_file, merges_file, model_max_length=max_tokens).save_pretrained(path)
    return path


def clip_text_model(tokenizer, hidden: int, max_tokens: int):
    """A 2-layer, 4-head ``CLIPTextModel`` of width ``hidden`` for ``tokenizer`` (random weights)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=max_tokens,
            projection_dim=hidden,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_toy_sd(tokenizer_dir: str, seed: int = 0, channels: Sequence[int] = UNET_CHANNELS) -> dict:
    """Untrained ``StableDiffusionPipeline`` components (``vae=None``: pixel space)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    text_encoder = clip_text_model(tokenizer, TEXT_DIM, MAX_TOKENS)
    unet = UNet2DConditionModel(**unet_config(3, 3, TEXT_DIM, camera=True, channels=channels))
    return dict(
        vae=None,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(**scheduler_config()),
    )


def load_toy_sd(model_dir: str) -> dict:
    """The components of a saved toy SD pipeline (to continue training it: ``train_sd --init-from``),
    with a fresh scheduler of :func:`scheduler_config`."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if not os.path.isfile(os.path.join(model_dir, "unet", "config.json")):
        raise UserError(f"--init-from {model_dir}: not a saved toy SD pipeline (no unet/config.json)")
    return dict(
        vae=None,
        text_encoder=CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet"),
        scheduler=DDPMScheduler(**scheduler_config()),
    )


def build_toy_zero123(seed: int = 0, attention_levels: int = 2, channels: Sequence[int] = UNET_CHANNELS) -> dict:
    """Untrained ``Zero123Pipeline`` components (``vae=None``: pixel space); ``attention_levels``
    and ``channels``: :func:`unet_config`'s (the pose reaches the UNet through cross-attention only)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    from ..guidance.zero123_pipeline import CCProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **unet_config(6, 3, TEXT_DIM, camera=False, channels=channels, attention_levels=attention_levels)
    )
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=TEXT_DIM,
            intermediate_size=2 * TEXT_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=4,
            projection_dim=TEXT_DIM,
        )
    )
    feature_extractor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    cfg = {k: v for k, v in scheduler_config().items() if k != "prediction_type"}
    scheduler = DDIMScheduler(**cfg, prediction_type="epsilon", set_alpha_to_one=False)
    return dict(
        vae=None,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        cc_projection=CCProjection(embedding_dim=TEXT_DIM, additional_embeddings=4),
        feature_extractor=feature_extractor,
    )


def load_toy_zero123(model_dir: str) -> dict:
    """The trained networks of a saved toy Zero123 (to continue training it: ``train_zero123
    --init-from``): ``unet``, ``image_encoder``, ``cc_projection``."""
    from ..guidance.zero123_pipeline import Zero123Pipeline

    if not os.path.isfile(os.path.join(model_dir, "cc_projection", "config.json")):
        raise UserError(f"--init-from {model_dir}: not a saved toy Zero123 pipeline (no cc_projection/config.json)")
    pipe = Zero123Pipeline.from_pretrained(model_dir)
    return {k: getattr(pipe, k) for k in ("unet", "image_encoder", "cc_projection")}
