"""Tiny random-weight checkpoints in the real diffusers/transformers layouts.

The tests build them (code under test loads them with the same ``from_pretrained`` calls as a
real checkpoint), and so does ``tools/write_smoke_assets.py``, which writes the ``debug=smoke``
models shipped in ``threestudio_like/assets/tiny-sd``, ``tiny-zero123`` and ``tiny-clip``.
Deterministic for a given seed; each builds and saves in well under a second. Zero123 pipelines
are saved by ``tiny_zero123.make_tiny_zero123`` (also in the third-party layouts).
"""

from __future__ import annotations

import os

import torch

TEXT_DIM = 32
"""Hidden size of the tiny text encoder = the tiny SD UNet's cross-attention dim."""
MAX_TOKENS = 32
"""Tokenizer ``model_max_length`` (enough for "a red cube, overhead view" letter by letter)."""
ZERO123_EMBED_DIM = 16
"""CLIP image-embedding size of the tiny Zero123."""


def write_letter_tokenizer(path: str, max_tokens: int = MAX_TOKENS) -> None:
    """A real ``CLIPTokenizer`` saved to ``path`` whose vocabulary is letters, digits and ',':
    with no merges every word is spelled out (``"cube" → c u b e</w>``)."""
    from threestudio_like.toyworld.priors import write_word_tokenizer

    write_word_tokenizer(path, words=(), max_tokens=max_tokens)


def make_tiny_sd_components(
    pixel_space: bool = False,
    camera_conditioned: bool = False,
    prediction_type: str = "epsilon",
    seed: int = 0,
    tokenizer_dir: str = "",
) -> dict:
    """``StableDiffusionPipeline`` components: tokenizer (from ``tokenizer_dir``), 2-layer CLIP
    text encoder (hidden 32), UNet (channels (8, 16), 1 layer/block, sample 16 pixel-space / 8
    latent), DDPM scheduler (SD's scaled-linear betas), tiny VAE (×2 down) unless pixel space."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from threestudio_like.toyworld.priors import clip_text_model

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    text_encoder = clip_text_model(tokenizer, TEXT_DIM, MAX_TOKENS)
    channels = 3 if pixel_space else 4
    camera = dict(class_embed_type="projection", projection_class_embeddings_input_dim=16) if camera_conditioned else {}
    unet = UNet2DConditionModel(
        sample_size=16 if pixel_space else 8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        **camera,
    )
    vae = None if pixel_space else _tiny_vae()
    scheduler = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type=prediction_type,
        clip_sample=False,
    )
    return dict(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(), scheduler=scheduler)


def make_tiny_sd(
    path: str,
    pixel_space: bool = False,
    camera_conditioned: bool = False,
    prediction_type: str = "epsilon",
    seed: int = 0,
) -> str:
    """Save a tiny SD pipeline to ``path`` and return it. ``pixel_space``: no VAE
    (``"vae": [null, null]`` in ``model_index.json``), 3-channel UNet at 16².
    ``camera_conditioned``: the UNet takes ``class_labels = c2w.reshape(B, 16)``."""
    from diffusers import StableDiffusionPipeline

    os.makedirs(path, exist_ok=True)
    tok_dir = os.path.join(path, "tokenizer")
    write_letter_tokenizer(tok_dir)
    parts = make_tiny_sd_components(pixel_space, camera_conditioned, prediction_type, seed, tok_dir)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


def make_tiny_zero123_components(pixel_space: bool = False, seed: int = 0) -> dict:
    """``Zero123Pipeline`` components: 8-channel UNet (6 in pixel space), 1-layer CLIP vision
    encoder (16² images, patch 8, embedding 16), CC projection (16+4 → 16), DDIM scheduler,
    tiny VAE unless pixel space."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    from threestudio_like.guidance.zero123_pipeline import CCProjection

    torch.manual_seed(seed)
    c = 3 if pixel_space else 4
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=2 * c,
        out_channels=c,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=ZERO123_EMBED_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = None if pixel_space else _tiny_vae()
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
            projection_dim=ZERO123_EMBED_DIM,
        )
    )
    feature_extractor = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        num_train_timesteps=1000,
    )
    cc = CCProjection(embedding_dim=ZERO123_EMBED_DIM, additional_embeddings=4)
    for m in (unet, image_encoder, cc) + (() if vae is None else (vae,)):
        m.eval()
    return dict(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        cc_projection=cc,
        feature_extractor=feature_extractor,
    )


def make_tiny_clip(path: str, seed: int = 0) -> str:
    """Save a tiny ``CLIPModel`` (16² images, patch 8, projection 8), its letter tokenizer and
    image processor to ``path`` and return it."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    write_letter_tokenizer(path, max_tokens=MAX_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        projection_dim=8,
    )
    CLIPModel(config).eval().save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(path)
    return path


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
    )
