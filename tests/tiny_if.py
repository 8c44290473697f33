"""A tiny random-weight DeepFloyd IF stage I in the real diffusers ``IFPipeline`` layout.

``make_tiny_if(path)`` saves tokenizer (a real ``T5Tokenizer`` whose vocabulary is letters),
text encoder (1-layer ``T5EncoderModel``), UNet (pixel space at 64², 3 channels in, 6 out: ε and
the learned variance, T5 projection and attention-pooled text in the time embedding, as IF-I
has) and IF's DDPM scheduler, so the code under test loads it with the same ``from_pretrained``
calls as ``DeepFloyd/IF-I-XL-v1.0``. Used by the tests and by ``tools/write_smoke_assets.py``
(``threestudio_like/assets/tiny-if``).
"""

from __future__ import annotations

import os
import string

import torch

T5_DIM = 16
"""Hidden size of the tiny T5 encoder (IF-I-XL: 4096) = the UNet's ``encoder_hid_dim``."""
MAX_TOKENS = 77
"""Token length the embeddings are padded to (IF's and threestudio's 77)."""
SAMPLE_SIZE = 64
"""The UNet's resolution: IF stage I's 64²."""


def make_letter_t5_tokenizer():
    """A ``T5Tokenizer`` (Unigram, T5's special tokens) over letters, digits and ',': every word
    is spelled out (``"cube" → ▁ c u b e``)."""
    from transformers import T5Tokenizer

    pieces = ["▁", *string.ascii_lowercase, *string.digits, ","]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -1.0) for p in pieces]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=MAX_TOKENS)


def make_tiny_if_components(seed: int = 0) -> dict:
    """``IFPipeline`` components: tokenizer, T5 encoder (d_model 16), UNet (channels (8, 16),
    sample 64, out 6), DDPM scheduler (IF's squared-cosine betas, learned-range variance)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = make_letter_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=T5_DIM,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE,
        in_channels=3,
        out_channels=6,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        cross_attention_dim=32,  # group-normed in 32 groups (cross_attention_norm)
        encoder_hid_dim=T5_DIM,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.0,
        prediction_type="epsilon",
        variance_type="learned_range",
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder.eval(), unet=unet.eval(), scheduler=scheduler)


def make_tiny_if(path: str, seed: int = 0) -> str:
    """Save the tiny IF stage I pipeline to ``path`` (no safety checker, watermarker or feature
    extractor) and return it."""
    from diffusers import IFPipeline

    os.makedirs(path, exist_ok=True)
    pipe = IFPipeline(
        **make_tiny_if_components(seed),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path
