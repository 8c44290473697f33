"""Write random-weight checkpoints with the exact architectures and layouts of the real models.

Each model the experiments name (Stable Diffusion 2.1-base, Zero123-XL and Stable Zero123 in their
diffusers layouts, CLIP ViT-B/32 and ViT-L/14, SAM ViT-B, BLIP-base captioning, Depth Anything
small, MVDream's multi-view UNet as our converter saves it) is built from a config written out
here, with random weights and a byte-level stand-in vocabulary for its tokenizer, and saved in the
Hugging Face cache layout under ``CACHE`` (``models--ORG--NAME/snapshots/HASH/`` + ``refs/main``).
With ``HF_HUB_CACHE=CACHE`` the hub ids resolve through the same ``from_pretrained`` paths as the
real downloads; each snapshot directory can also be passed as a local model directory
(``models.sd=DIR``). Nothing is downloaded.

Stable Diffusion 2.1-base takes about a minute and 5 GB of disk (fp32, as the hub's main
weights); all of them about 12 GB (Stable Zero123 hard-links Zero123-XL's weights).

Usage: ``python tools/random_checkpoints.py [--cache DIR] [--only NAME ...] [--list]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

DEFAULT_CACHE = Path("~/.cache/threestudio_like/random").expanduser()

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_VOCAB = 49408
"""Token embeddings of every CLIP text tower (the real BPE vocabulary's size)."""


# ---- layout ----------------------------------------------------------------------------------
def snapshot_dir(cache: Path, repo_id: str) -> Path:
    """``cache/models--ORG--NAME/snapshots/HASH`` (the HF cache layout; HASH derived from the id)."""
    return cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit_hash(repo_id)


def commit_hash(repo_id: str) -> str:
    return hashlib.sha1(f"random:{repo_id}".encode()).hexdigest()


def finish_snapshot(cache: Path, repo_id: str) -> None:
    """Point ``refs/main`` at the snapshot, so ``snapshot_download(repo_id, local_files_only=True)``
    with ``HF_HUB_CACHE=cache`` finds it."""
    refs = cache / f"models--{repo_id.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(commit_hash(repo_id))


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


# ---- stand-in vocabularies -----------------------------------------------------------------------
def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of GPT-2/CLIP byte-level BPE (``bytes_to_unicode``)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + n)
            n += 1
    return [chr(c) for c in codes]


def write_clip_tokenizer(path: Path, max_length: int = 77, pad_token: str = "<|endoftext|>") -> None:
    """A real ``CLIPTokenizer`` whose vocabulary is the 256 byte symbols (alone and word-final)
    and no merges: every word is spelled out byte by byte. Ids stay below the text tower's 49408."""
    from transformers import CLIPTokenizer

    path.mkdir(parents=True, exist_ok=True)
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=max_length, pad_token=pad_token
    )
    tokenizer.save_pretrained(str(path))


def write_bert_vocab(path: Path, size: int) -> Path:
    """A word-piece vocabulary of ``size`` entries: BERT's specials, letters, digits, punctuation
    (alone and as ``##`` continuations), ``[unused…]`` fillers, then BLIP's ``[DEC]`` and ``[ENC]``."""
    path.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,!?'-")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    words += [f"[unused{i}]" for i in range(size - 2 - len(words))] + ["[DEC]", "[ENC]"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    return path / "vocab.txt"


# ---- builders --------------------------------------------------------------------------------
def sd_unet(in_channels: int, cross_attention_dim: int, heads: object, linear_projection: bool, sample_size: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=heads,
        use_linear_projection=linear_projection,
        norm_num_groups=32,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def sd_vae(sample_size: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


def clip_processor(size: int):
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=3,
    )


def build_sd21_base(out: Path) -> None:
    """stabilityai/stable-diffusion-2-1-base: UNet (865 M, 64² latents, 1024-d cross-attention,
    linear projections), VAE (×8), OpenCLIP ViT-H text tower (23 layers, 1024 wide), PNDM."""
    from diffusers import PNDMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    write_json(
        out / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.10.0.dev0",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    ).save_pretrained(str(out / "scheduler"))
    write_clip_tokenizer(out / "tokenizer", pad_token="!")
    clip_processor(224).save_pretrained(str(out / "feature_extractor"))
    text = CLIPTextConfig(
        vocab_size=CLIP_VOCAB,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=23,
        num_attention_heads=16,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=512,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    CLIPTextModel(text).save_pretrained(str(out / "text_encoder"))
    sd_vae(768).save_pretrained(str(out / "vae"))
    sd_unet(4, 1024, [5, 10, 20, 20], True, 64).save_pretrained(str(out / "unet"))


def clip_vision_l14():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
    )


def build_zero123_xl(out: Path) -> None:
    """kxic/zero123-xl-diffusers: SD 1.x UNet with 8 input channels (32² latents, 768-d context),
    VAE, CLIP ViT-L/14 image encoder, ``cc_projection/`` (Linear 772 → 768 named ``projection``,
    config without sizes), DDIM."""
    write_zero123(
        out,
        "Zero1to3StableDiffusionPipeline",
        "cc_projection",
        ["pipeline_zero1to3", "CCProjection"],
        "projection",
        {"_class_name": "CCProjection"},
    )


def build_stable_zero123(out: Path, zero123_xl: Path) -> None:
    """ashawkey/stable-zero123-diffusers: Zero123-XL's architecture with ``clip_camera_projection/``
    (``CLIPCameraProjection``, a Linear named ``proj``); the big weights are hard links to
    ``zero123_xl``'s when it is built (same architecture, random either way)."""
    write_zero123(
        out,
        "Zero123Pipeline",
        "clip_camera_projection",
        ["zero123", "CLIPCameraProjection"],
        "proj",
        {"_class_name": "CLIPCameraProjection", "embedding_dim": 768, "additional_embeddings": 4},
        reuse=zero123_xl if (zero123_xl / "unet").is_dir() else None,
    )


def write_zero123(
    out: Path, class_name: str, folder: str, entry: list, key: str, config: dict, reuse: Path | None = None
) -> None:
    import torch
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    write_json(
        out / "model_index.json",
        {
            "_class_name": class_name,
            "_diffusers_version": "0.14.0",
            folder: entry,
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        num_train_timesteps=1000,
        steps_offset=1,
    ).save_pretrained(str(out / "scheduler"))
    clip_processor(224).save_pretrained(str(out / "feature_extractor"))
    proj = torch.nn.Linear(768 + 4, 768, device="cpu")  # real weights even under a meta default device
    (out / folder).mkdir(parents=True, exist_ok=True)
    save_file(
        {f"{key}.weight": proj.weight.detach().contiguous(), f"{key}.bias": proj.bias.detach().contiguous()},
        str(out / folder / "diffusion_pytorch_model.safetensors"),
    )
    write_json(out / folder / "config.json", config)
    if reuse is not None:
        for sub in ("unet", "vae", "image_encoder"):
            (out / sub).mkdir(parents=True, exist_ok=True)
            for f in (reuse / sub).iterdir():
                target = out / sub / f.name
                if not target.exists():
                    os.link(f, target)
        return
    clip_vision_l14().save_pretrained(str(out / "image_encoder"))
    sd_vae(256).save_pretrained(str(out / "vae"))
    sd_unet(8, 768, 8, False, 32).save_pretrained(str(out / "unet"))


def build_clip(out: Path, vision: dict, text: dict, projection_dim: int) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    write_clip_tokenizer(out)
    tokenizer = CLIPTokenizer.from_pretrained(str(out))
    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    text = dict(text, vocab_size=CLIP_VOCAB, max_position_embeddings=77, **ids)
    config = CLIPConfig(text_config=text, vision_config=dict(vision, image_size=224), projection_dim=projection_dim)
    CLIPModel(config).eval().save_pretrained(str(out))
    clip_processor(224).save_pretrained(str(out))


def build_clip_b32(out: Path) -> None:
    """openai/clip-vit-base-patch32: text 12×512, vision ViT-B/32 12×768, projection 512."""
    build_clip(
        out,
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=32),
        dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        512,
    )


def build_clip_l14(out: Path) -> None:
    """openai/clip-vit-large-patch14: text 12×768, vision ViT-L/14 24×1024, projection 768."""
    build_clip(
        out,
        dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14),
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        768,
    )


def build_sam_vit_base(out: Path) -> None:
    """facebook/sam-vit-base: ViT-B image encoder (12×768, windows 14, global attention at 2/5/8/11,
    1024² input), prompt encoder and two-way mask decoder of width 256."""
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    config = SamConfig(
        vision_config=dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            global_attn_indexes=[2, 5, 8, 11],
            mlp_dim=3072,
            output_channels=256,
            image_size=1024,
            patch_size=16,
            window_size=14,
            num_pos_feats=128,
        ),
        prompt_encoder_config=dict(hidden_size=256, image_size=1024, patch_size=16, mask_input_channels=16),
        mask_decoder_config=dict(hidden_size=256, mlp_dim=2048, num_attention_heads=8, iou_head_hidden_dim=256),
    )
    SamModel(config).eval().save_pretrained(str(out))
    pad = {"height": 1024, "width": 1024}
    processor = SamImageProcessorPil(
        size={"longest_edge": 1024}, pad_size=pad, mask_pad_size={"height": 256, "width": 256}
    )
    SamProcessor(processor).save_pretrained(str(out))


def build_blip_base(out: Path) -> None:
    """Salesforce/blip-image-captioning-base: ViT-B/16 at 384², BERT-base text decoder (vocabulary
    30524 with ``[DEC]`` as its start token)."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    vocab = write_bert_vocab(out, 30524)
    tokenizer = BertTokenizer(str(vocab), bos_token="[DEC]", model_max_length=512)
    config = BlipConfig(
        text_config=dict(
            vocab_size=30524,
            hidden_size=768,
            encoder_hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=512,
            bos_token_id=30522,
            sep_token_id=3,
            pad_token_id=0,
            eos_token_id=3,
        ),
        vision_config=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=384
        ),
        projection_dim=512,
    )
    BlipForConditionalGeneration(config).eval().save_pretrained(str(out))
    image = BlipImageProcessorPil(size={"height": 384, "width": 384}, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    BlipProcessor(image, tokenizer).save_pretrained(str(out))


def build_depth_anything_small(out: Path) -> None:
    """LiheYoung/depth-anything-small-hf: DINOv2-S/14 backbone (12×384, features of layers 9–12),
    DPT neck (48, 96, 192, 384), fusion 64, relative depth; 518² input keeping the aspect ratio."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessorPil

    backbone = Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        patch_size=14,
        image_size=518,
        out_indices=[9, 10, 11, 12],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=384,
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=[48, 96, 192, 384],
        fusion_hidden_size=64,
        head_hidden_size=32,
        depth_estimation_type="relative",
    )
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(str(out))
    DPTImageProcessorPil(
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ).save_pretrained(str(out))


def build_mvdream(out: Path) -> None:
    """MVDream's multi-view UNet (``MVDREAM_UNET_CONFIG``: SD 2.1 base's UNet + the camera MLP) in
    the diffusers layout that ``python -m threestudio_like.guidance.mvdream_unet`` converts the
    released ``sd-v2.1-base-4view.pt`` to (fp16, as that conversion saves it); its VAE, text encoder
    and schedule are SD 2.1 base's."""
    import torch
    from diffusers import UNet2DConditionModel

    from threestudio_like.guidance.mvdream_unet import MVDREAM_UNET_CONFIG

    UNet2DConditionModel.from_config(MVDREAM_UNET_CONFIG).to(torch.float16).save_pretrained(str(out))


MODELS: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    "sd21-base": ("stabilityai/stable-diffusion-2-1-base", lambda out, cache: build_sd21_base(out)),
    "zero123-xl": ("kxic/zero123-xl-diffusers", lambda out, cache: build_zero123_xl(out)),
    "stable-zero123": (
        "ashawkey/stable-zero123-diffusers",
        lambda out, cache: build_stable_zero123(out, snapshot_dir(cache, "kxic/zero123-xl-diffusers")),
    ),
    "clip-b32": ("openai/clip-vit-base-patch32", lambda out, cache: build_clip_b32(out)),
    "clip-l14": ("openai/clip-vit-large-patch14", lambda out, cache: build_clip_l14(out)),
    "sam-vit-base": ("facebook/sam-vit-base", lambda out, cache: build_sam_vit_base(out)),
    "blip-base": ("Salesforce/blip-image-captioning-base", lambda out, cache: build_blip_base(out)),
    "depth-anything-small": ("LiheYoung/depth-anything-small-hf", lambda out, cache: build_depth_anything_small(out)),
    "mvdream": ("MVDream/MVDream", lambda out, cache: build_mvdream(out)),
}
"""Short name → (hub id, builder(snapshot dir, cache))."""


def build(cache: Path, names: list[str], force: bool = False) -> dict[str, Path]:
    """Build ``names`` (all when empty) under ``cache``; returns short name → snapshot directory.
    A model whose snapshot already holds a ``refs/main`` is kept unless ``force``. Seeded per model."""
    import torch

    out = {}
    for name in names or list(MODELS):
        repo_id, builder = MODELS[name]
        directory = snapshot_dir(cache, repo_id)
        ref = directory.parent.parent / "refs" / "main"
        if force or not ref.is_file():
            started = time.time()
            torch.manual_seed(int(hashlib.sha1(name.encode()).hexdigest()[:8], 16))
            directory.mkdir(parents=True, exist_ok=True)
            builder(directory, cache)
            finish_snapshot(cache, repo_id)
            print(f"{name}: built in {time.time() - started:.0f} s", file=sys.stderr)
        out[name] = directory
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--only", nargs="+", choices=list(MODELS), default=[], help="build only these models")
    parser.add_argument("--force", action="store_true", help="rebuild models already in the cache")
    parser.add_argument("--list", action="store_true", help="list the models and their hub ids, build nothing")
    args = parser.parse_args()
    if args.list:
        for name, (repo_id, _) in MODELS.items():
            print(f"{name}\t{repo_id}\t{snapshot_dir(args.cache, repo_id)}")
        return
    for name, directory in build(args.cache, args.only, args.force).items():
        print(f"{name}\t{MODELS[name][0]}\t{directory}")
    print(f"use them with: export HF_HUB_CACHE={args.cache}", file=sys.stderr)


if __name__ == "__main__":
    main()
