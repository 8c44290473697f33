"""A tiny random-weight MVDream multi-view UNet in our converted layout (diffusers' ``config.json``
+ weights), and the LDM key names MVDream's checkpoint stores it under.

``make_tiny_multiview_unet()`` builds SD 2.1's UNet shape in miniature (a cross-attention level
then a plain one, linear projections in the transformers, a 16-wide camera projection added to
the time embedding), pixel space by default to pair with the tiny SD pipeline's text encoder
(``tests/tiny_models.py``, width 32). ``make_tiny_mvdream(path)`` saves it where
``guidance=mvdream`` loads it (``multiview_unet=path``); ``tools/write_smoke_assets.py`` ships one
as ``threestudio_like/assets/tiny-mvdream``. ``ldm_state_dict(unet)`` writes a UNet's weights with
the key names of MVDream's ``sd-v2.1-base-4view.pt`` — a mapping written here by hand from
MVDream's ``openaimodel.py``, independent of the converter under test.
"""

from __future__ import annotations

import os

import torch
from tiny_models import TEXT_DIM

SAMPLE_SIZE = 16
"""The tiny UNet's resolution (pixel space: renders are resized to 16²)."""


def tiny_multiview_config(in_channels: int = 3) -> dict:
    """The tiny UNet's diffusers config: SD 2.1's block layout (attention levels first, linear
    projections), 2 levels of (8, 16) channels, one resnet per level, MVDream's camera input."""
    return dict(
        sample_size=SAMPLE_SIZE,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=[8, 16],
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=[2, 4],
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        use_linear_projection=True,
        cross_attention_dim=TEXT_DIM,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=16,
    )


def make_tiny_multiview_unet(in_channels: int = 3, seed: int = 0):
    """The tiny UNet with random weights, each perturbed (norm scales and zero biases too), so no
    layer is an identity or a zero that a test could pass through unchecked."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_multiview_config(in_channels))
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def make_tiny_mvdream(path: str, seed: int = 0) -> str:
    """Save the tiny multi-view UNet in diffusers' layout to ``path`` and return it."""
    os.makedirs(path, exist_ok=True)
    make_tiny_multiview_unet(seed=seed).save_pretrained(path)
    return path


RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
"""Diffusers → LDM names inside a resnet (``ResnetBlock2D`` / MVDream's ``ResBlock``)."""


def diffusers_to_ldm_prefixes(config: dict) -> dict[str, str]:
    """Module-prefix map diffusers → MVDream's UNet (``model.diffusion_model.`` left out):
    ``input_blocks.k`` is [resnet, transformer] per layer then a ``Downsample`` (``.op``) per level
    but the last, ``middle_block`` is resnet, transformer, resnet, ``output_blocks.k`` is
    [resnet, transformer] per layer (one more layer than down) then an ``Upsample`` (``.conv``)."""
    levels, per = len(config["block_out_channels"]), config["layers_per_block"]
    attn_down = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    attn_up = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    out = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "class_embedding.linear_1": "camera_embed.0",
        "class_embedding.linear_2": "camera_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.attentions.0": "middle_block.1",
    }
    k = 1
    for i in range(levels):
        for j in range(per):
            out[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{k}.0"
            if attn_down[i]:
                out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{k}.1"
            k += 1
        if i < levels - 1:
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{k}.0.op"
            k += 1
    k = 0
    for i in range(levels):
        for j in range(per + 1):
            out[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{k}.0"
            if attn_up[i]:
                out[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{k}.1"
            if j == per and i < levels - 1:
                out[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{k}.{2 if attn_up[i] else 1}.conv"
            k += 1
    for r in (0, 1):
        out[f"mid_block.resnets.{r}"] = f"middle_block.{2 * r}"
    return out


def ldm_key(key: str, prefixes: dict[str, str]) -> str:
    """One diffusers UNet key → MVDream's checkpoint key."""
    for ours, theirs in sorted(prefixes.items(), key=lambda kv: -len(kv[0])):
        if key.startswith(ours + "."):
            rest = key[len(ours) + 1 :]
            if ".resnets." in ours:
                name = rest.split(".")[0]
                rest = RESNET_NAMES[name] + rest[len(name) :]
            return "model.diffusion_model." + theirs + "." + rest
    raise KeyError(key)


def ldm_state_dict(unet) -> dict[str, torch.Tensor]:
    """``unet``'s weights under MVDream's checkpoint key names, with a few of the checkpoint's
    other entries (VAE, text encoder, schedule buffers) that the loader must skip."""
    prefixes = diffusers_to_ldm_prefixes(dict(unet.config))
    out = {ldm_key(k, prefixes): v.clone() for k, v in unet.state_dict().items()}
    out["first_stage_model.encoder.conv_in.weight"] = torch.zeros(2, 3, 3, 3)
    out["cond_stage_model.model.ln_final.weight"] = torch.ones(4)
    out["alphas_cumprod"] = torch.linspace(1.0, 0.0, 10)
    return out
