"""Tiny Stable Diffusion-format checkpoints (random weights) saved in the real diffusers layout.

``make_tiny_sd(path)`` writes ``model_index.json``, ``unet/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/`` and (latent variant) ``vae/`` exactly as ``StableDiffusionPipeline.save_pretrained``
does, so code under test loads it with the same ``from_pretrained`` calls as a real checkpoint.
Deterministic for a given ``seed``; builds and saves in well under a second.
"""

from __future__ import annotations

import json
import os
import string

import torch

TEXT_DIM = 32
"""Hidden size of the tiny text encoder = the UNet's cross-attention dim."""
MAX_TOKENS = 32
"""Tokenizer ``model_max_length`` (enough for "a red cube, overhead view" letter by letter)."""


def write_letter_tokenizer(path: str) -> None:
    """A real ``CLIPTokenizer`` saved to ``path`` whose vocabulary is letters, digits and ',':
    with no merges every word is spelled out (``"cube" → c u b e</w>``)."""
    from transformers import CLIPTokenizer

    os.makedirs(path, exist_ok=True)
    symbols = list(string.ascii_lowercase + string.digits + ",")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    vocab_file, merges_file = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f)
    with open(merges_file, "w") as f:
        f.write("#version: 0.2\n")
    CLIPTokenizer(vocab_file, merges_file, model_max_length=MAX_TOKENS).save_pretrained(path)


def make_tiny_components(pixel_space: bool = False, camera_conditioned: bool = False,
                         prediction_type: str = "epsilon", seed: int = 0, tokenizer_dir: str = "") -> dict:
    """``StableDiffusionPipeline`` components: tokenizer (from ``tokenizer_dir``), 2-layer CLIP
    text encoder (hidden 32), UNet (channels (8, 16), 1 layer/block, sample 16 pixel-space / 8
    latent), DDPM scheduler (SD's scaled-linear betas), tiny VAE (×2 down) unless pixel space."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_DIM,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    channels = 3 if pixel_space else 4
    camera = dict(class_embed_type="projection", projection_class_embeddings_input_dim=16) if camera_conditioned else {}
    unet = UNet2DConditionModel(
        sample_size=16 if pixel_space else 8, in_channels=channels, out_channels=channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM, **camera,
    )
    vae = None if pixel_space else AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 8), latent_channels=4,
        norm_num_groups=4, layers_per_block=1, sample_size=16,
    )
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    return dict(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(), scheduler=scheduler)


def make_tiny_sd(path: str, pixel_space: bool = False, camera_conditioned: bool = False,
                 prediction_type: str = "epsilon", seed: int = 0) -> str:
    """Save a tiny SD pipeline to ``path`` (see module doc) and return ``path``.

    ``pixel_space``: no VAE (``"vae": [null, null]`` in ``model_index.json``), 3-channel UNet at
    16². ``camera_conditioned``: the UNet takes ``class_labels = c2w.reshape(B, 16)``.
    """
    from diffusers import StableDiffusionPipeline

    os.makedirs(path, exist_ok=True)
    tok_dir = os.path.join(path, "tokenizer")
    write_letter_tokenizer(tok_dir)
    parts = make_tiny_components(pixel_space, camera_conditioned, prediction_type, seed, tok_dir)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path
