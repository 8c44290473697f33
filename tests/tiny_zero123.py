"""Build and save tiny Zero123 checkpoints (random weights) through the real diffusers layout.

``make_tiny_zero123(path, pixel_space=False, layout="ours")`` writes a pipeline directory that
:meth:`Zero123Pipeline.from_pretrained` loads like a real one. ``layout`` also produces the two
third-party layouts: ``"kxic"`` (``cc_projection/`` with a ``projection`` Linear, config
without sizes) and ``"ashawkey"`` (``clip_camera_projection/`` with ``proj``).
"""

from __future__ import annotations

import json
import os
import shutil

import torch

EMBED_DIM = 16


def make_tiny_components(pixel_space: bool = False, seed: int = 0) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    from threestudio_like.guidance.zero123_pipeline import CCProjection

    torch.manual_seed(seed)
    c = 3 if pixel_space else 4
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=2 * c, out_channels=c, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=EMBED_DIM, attention_head_dim=4, norm_num_groups=4,
    )
    vae = None if pixel_space else AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 8), latent_channels=4,
        norm_num_groups=4, layers_per_block=1, sample_size=16,
    )
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16,
        patch_size=8, projection_dim=EMBED_DIM,
    ))
    feature_extractor = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, num_train_timesteps=1000)
    cc = CCProjection(embedding_dim=EMBED_DIM, additional_embeddings=4)
    for m in (unet, image_encoder, cc) + (() if vae is None else (vae,)):
        m.eval()
    return dict(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                cc_projection=cc, feature_extractor=feature_extractor)


def make_tiny_zero123(path: str, pixel_space: bool = False, layout: str = "ours", seed: int = 0) -> str:
    """Save a tiny Zero123 pipeline to ``path`` (see module doc) and return ``path``."""
    from safetensors.torch import save_file

    from threestudio_like.guidance.zero123_pipeline import Zero123Pipeline

    pipe = Zero123Pipeline(**make_tiny_components(pixel_space, seed))
    pipe.save_pretrained(path)
    if layout == "ours":
        return path
    index_file = os.path.join(path, "model_index.json")
    with open(index_file) as f:
        index = json.load(f)
    weight = pipe.cc_projection.proj.weight.detach().contiguous()
    bias = pipe.cc_projection.proj.bias.detach().contiguous()
    shutil.rmtree(os.path.join(path, "cc_projection"))
    del index["cc_projection"]
    if layout == "kxic":
        folder, key, config = "cc_projection", "projection", {"_class_name": "CCProjection"}
        index[folder] = ["pipeline_zero1to3", "CCProjection"]
    elif layout == "ashawkey":
        folder, key = "clip_camera_projection", "proj"
        config = {"_class_name": "CLIPCameraProjection", "embedding_dim": EMBED_DIM, "additional_embeddings": 4}
        index[folder] = ["zero123", "CLIPCameraProjection"]
    else:
        raise ValueError(layout)
    os.makedirs(os.path.join(path, folder))
    save_file({f"{key}.weight": weight, f"{key}.bias": bias},
              os.path.join(path, folder, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(path, folder, "config.json"), "w") as f:
        json.dump(config, f)
    with open(index_file, "w") as f:
        json.dump(index, f)
    return path
