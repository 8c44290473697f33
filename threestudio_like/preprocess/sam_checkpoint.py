"""Original segment-anything checkpoints (``sam_vit_{b,l,h}_*.pth``) as a transformers ``SamModel``.

The file is read with ``torch.load(weights_only=True)`` (tensors only: no code runs), its keys are
renamed to the transformers layout and the architecture is read off the tensor shapes, so ViT-B,
ViT-L and ViT-H checkpoints (and other sizes of the same design) load without a config file,
without the ``segment_anything`` package (which pulls torchvision) and without a converted copy
on disk.

Renaming (the mapping of transformers' ``convert_sam_to_hf.py``): ``image_encoder`` →
``vision_encoder``, ``blocks`` → ``layers``, ``norm*`` → ``layer_norm*``, the numbered
``nn.Sequential`` parts (``neck``, ``mask_downscaling``, ``output_upscaling``) → their named
modules, ``point_embeddings`` → ``point_embed``, the prompt encoder's random Fourier matrix →
``shared_embedding.positional_embedding`` (tied to ``shared_image_embedding``), and each MLP's
``layers.0 … layers.n`` → ``proj_in``, ``layers.0 … layers.n-2``, ``proj_out``.

Architecture from shapes: patch size and width from the patch embedding, the image size from the
absolute position embedding's grid, the number of heads from the relative position tables
(``(2·size − 1, head_dim)``), global-attention blocks as those whose table spans the whole grid
(the others give the window size), the decoder's sizes from its tokens and projections. The
mask decoder's head count is not in any shape; SAM uses 8 in every size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.errors import UserError

SAM_DECODER_HEADS = 8
"""Attention heads of SAM's two-way transformer (the same in ViT-B, -L and -H)."""

_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.blocks\.(\d+)\.", r".layers.\1."),
    (r"\.norm(\d|_final_attn)\.", r".layer_norm\1."),
    (r"\.neck\.0\.", ".neck.conv1."),
    (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."),
    (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.point_embeddings\.", ".point_embed."),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
)
"""(pattern, replacement) applied in order to every original key."""

_MLP = re.compile(r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.layers\.(\d+)\.(.+)$")
"""An MLP layer of the mask decoder: (the MLP's prefix, layer index, parameter)."""


def is_original_checkpoint(path: str) -> bool:
    """Whether ``path`` names a checkpoint file (not a model directory or a hub id)."""
    return Path(path).suffix in (".pth", ".pt") or Path(path).is_file()


def load_original_sam(path: str | Path, where: str = "--sam") -> Any:
    """A transformers ``SamModel`` (fp32, CPU, eval) with the weights of an original checkpoint."""
    from transformers import SamModel

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{where}: SAM checkpoint not found: {p}")
    try:
        original = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (not tensors only, or not a pickle), a truncated zip...
        raise UserError(
            f"{where}: cannot read {p} as a segment-anything checkpoint ({type(e).__name__}: not a state dict "
            "of tensors that loads with weights_only=True); pass an original sam_vit_*.pth file"
        ) from None
    if not isinstance(original, dict) or not all(isinstance(v, Tensor) for v in original.values()):
        raise UserError(f"{where}: {p} is not a segment-anything checkpoint (expected a state dict of tensors)")
    try:
        state = convert_state_dict(original)
        config = sam_config_from_state_dict(state)
    except (KeyError, IndexError, ZeroDivisionError) as e:
        raise UserError(f"{where}: {p} is not a segment-anything checkpoint (no {e} in it)") from None
    model = SamModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise UserError(f"{where}: {p} does not fit SAM's layout ({what}, {len(missing) + len(unexpected)} keys off)")
    return model.eval()


def convert_state_dict(original: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original segment-anything keys → transformers ``SamModel`` keys (see the module docstring)."""
    renamed = {}
    for key, value in original.items():
        if key in ("pixel_mean", "pixel_std"):  # the normalization; the image processor's job here
            continue
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    depth: dict[str, int] = {}  # MLP prefix → number of layers
    for key in renamed:
        if m := _MLP.match(key):
            depth[m[1]] = max(depth.get(m[1], 0), int(m[2]) + 1)
    out = {}
    for key, value in renamed.items():
        if m := _MLP.match(key):
            prefix, i, param = m[1], int(m[2]), m[3]
            name = "proj_in" if i == 0 else "proj_out" if i == depth[prefix] - 1 else f"layers.{i - 1}"
            key = f"{prefix}.{name}.{param}"
        out[key] = value
    out["shared_image_embedding.positional_embedding"] = out["prompt_encoder.shared_embedding.positional_embedding"]
    return out


def sam_config_from_state_dict(state: dict[str, Tensor]) -> Any:
    """The ``SamConfig`` of a state dict in the transformers layout, read from tensor shapes."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    patch = state["vision_encoder.patch_embed.projection.weight"]  # (width, 3, p, p)
    width, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    grid = int(state["vision_encoder.pos_embed"].shape[1])  # (1, grid, grid, width)
    image_size = grid * patch_size
    blocks = _count(state, r"vision_encoder\.layers\.(\d+)\.attn\.qkv\.weight")
    tables = [state[f"vision_encoder.layers.{i}.attn.rel_pos_h"] for i in range(blocks)]
    global_blocks = [i for i, t in enumerate(tables) if t.shape[0] == 2 * grid - 1]
    windows = [(int(t.shape[0]) + 1) // 2 for t in tables if t.shape[0] != 2 * grid - 1]
    vision = SamVisionConfig(
        hidden_size=width,
        output_channels=int(state["vision_encoder.neck.conv1.weight"].shape[0]),
        num_hidden_layers=blocks,
        num_attention_heads=width // int(tables[0].shape[1]),
        image_size=image_size,
        patch_size=patch_size,
        mlp_dim=int(state["vision_encoder.layers.0.mlp.lin1.weight"].shape[0]),
        window_size=windows[0] if windows else grid,
        global_attn_indexes=global_blocks,
        num_pos_feats=int(state["shared_image_embedding.positional_embedding"].shape[1]),
        qkv_bias="vision_encoder.layers.0.attn.qkv.bias" in state,
    )
    dim = int(state["mask_decoder.iou_token.weight"].shape[1])
    prompt = SamPromptEncoderConfig(
        hidden_size=dim,
        image_size=image_size,
        patch_size=patch_size,
        mask_input_channels=int(state["prompt_encoder.mask_embed.conv2.weight"].shape[0]),
        num_point_embeddings=_count(state, r"prompt_encoder\.point_embed\.(\d+)\.weight"),
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=dim,
        mlp_dim=int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
        num_hidden_layers=_count(state, r"mask_decoder\.transformer\.layers\.(\d+)\.self_attn\.q_proj\.weight"),
        num_attention_heads=SAM_DECODER_HEADS,
        attention_downsample_rate=dim
        // int(state["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"].shape[0]),
        num_multimask_outputs=int(state["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
        iou_head_depth=2 + _count(state, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.weight"),
        iou_head_hidden_dim=int(state["mask_decoder.iou_prediction_head.proj_in.weight"].shape[0]),
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def _count(state: dict[str, Tensor], pattern: str) -> int:
    """How many distinct indices the first group of ``pattern`` takes over the keys."""
    regex = re.compile(pattern + "$")
    return len({m[1] for key in state if (m := regex.match(key))})
