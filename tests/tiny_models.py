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


# ---- preprocessing models (SAM, BLIP, BLIP-2, depth) --------------------------------------
def make_tiny_sam(path: str, seed: int = 0, input_size: int = 64) -> str:
    """Save a tiny ``SamModel`` (ViT width 16, 2 blocks — the second global, the first windowed —
    patch 8, decoder width 16 with SAM's 8 heads; every parameter perturbed by N(0, 0.1²)) and its
    image processor (longest side ``input_size``) to ``path``."""
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(
            hidden_size=16,
            output_channels=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=input_size,
            patch_size=8,
            window_size=2,
            global_attn_indexes=[1],
            mlp_dim=32,
            num_pos_feats=8,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=input_size, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_attention_heads=8, iou_head_hidden_dim=16),
    )
    model = SamModel(config)
    with torch.no_grad():  # layer norms start at 1/0: perturb every parameter so that no two are alike
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval().save_pretrained(path)
    size = {"longest_edge": input_size}
    pad = {"height": input_size, "width": input_size}
    SamProcessor(SamImageProcessorPil(size=size, pad_size=pad, mask_pad_size=pad)).save_pretrained(path)
    return path


def make_tiny_blip(path: str, seed: int = 0) -> str:
    """Save a tiny ``BlipForConditionalGeneration`` (32² images, patch 8, width 16) and its
    processor (a word-piece ``BertTokenizer`` of letters, a 32² PIL image processor) to ``path``."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    os.makedirs(path, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = os.path.join(path, "vocab.txt")
    with open(vocab, "w") as f:
        f.write(
            "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *letters, *("##" + c for c in letters)])
        )
    tokenizer = BertTokenizer(vocab, bos_token="[DEC]")
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=16,
            encoder_hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=40,
            bos_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    BlipForConditionalGeneration(config).eval().save_pretrained(path)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer).save_pretrained(path)
    return path


def make_tiny_blip2(path: str, seed: int = 0) -> str:
    """Save a tiny ``Blip2ForConditionalGeneration`` (1-layer vision tower and Q-Former, 2 query
    tokens, 1-layer OPT of width 16) and its processor (a byte-level BPE tokenizer of letters) to
    ``path``. Its OPT never meets its end token (an unused id), so captions run to full length."""
    import json

    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessorPil,
        GPT2Tokenizer,
    )

    os.makedirs(path, exist_ok=True)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for symbol in [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ"]:  # Ġ: byte-level space
        vocab[symbol] = len(vocab)
    vocab_file, merges_file = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump(vocab, f)
    with open(merges_file, "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = GPT2Tokenizer(
        vocab_file, merges_file, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=2)
    torch.manual_seed(seed)
    config = Blip2Config(
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        qformer_config=dict(
            vocab_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            encoder_hidden_size=16,
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            max_position_embeddings=64,
            word_embed_proj_dim=16,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        num_query_tokens=2,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    Blip2ForConditionalGeneration(config).eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_tiny_depth(path: str, kind: str = "depth_anything", seed: int = 0) -> str:
    """Save a tiny depth-estimation model and its PIL image processor to ``path``: ``depth_anything``
    (DINOv2 backbone of width 16, patch 7, 28² input keeping the aspect ratio, ImageNet mean/std
    — Depth Anything's processor) or ``dpt`` (ViT of width 16, patch 8, 32² input, mean/std 0.5 —
    DPT-large's processor). Weights are drawn with std 0.3, so the depth varies over the image."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTConfig,
        DPTForDepthEstimation,
        DPTImageProcessorPil,
    )

    torch.manual_seed(seed)
    if kind == "depth_anything":
        backbone = Dinov2Config(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            patch_size=7,
            image_size=28,
            out_features=["stage1", "stage2"],
            reshape_hidden_states=False,
        )
        model = DepthAnythingForDepthEstimation(
            DepthAnythingConfig(
                backbone_config=backbone,
                patch_size=7,
                reassemble_hidden_size=16,
                reassemble_factors=[2, 1],
                neck_hidden_sizes=[8, 16],
                fusion_hidden_size=8,
                head_hidden_size=4,
            )
        )
        processor = DPTImageProcessorPil(
            size={"height": 28, "width": 28},
            keep_aspect_ratio=True,
            ensure_multiple_of=7,
            resample=3,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
    else:
        model = DPTForDepthEstimation(
            DPTConfig(
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                image_size=32,
                patch_size=8,
                backbone_out_indices=[0, 1],
                neck_hidden_sizes=[8, 16],
                reassemble_factors=[2, 1],
                fusion_hidden_size=8,
                head_in_index=-1,
            )
        )
        processor = DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False)
    with torch.no_grad():  # transformers' initialization (std 0.02) makes a depth map of ~0 everywhere
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path
