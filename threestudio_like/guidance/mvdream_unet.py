"""MVDream's multi-view UNet: Stable Diffusion 2.1's UNet that denoises V views of one object
jointly, and the loading of MVDream's released checkpoint into it.

What MVDream (Shi et al. 2023; github bytedance/MVDream, ``mvdream/ldm/modules/attention.py``
``BasicTransformerBlock3D`` and ``diffusionmodules/openaimodel.py`` ``MultiViewUNetModel``)
changes in the SD 2.1 UNet, built here on diffusers' ``UNet2DConditionModel``:

* **self-attention across the views**: the self-attention (``attn1``) of every transformer block
  attends over the tokens of all V views of a sample at once, (B·V, N, C) → (B, V·N, C)
  (:class:`CrossViewAttnProcessor`); cross-attention to the text stays per view. The batch holds
  groups of V consecutive views of one sample;
* **a camera embedding** added to the time embedding: an MLP 16 → 4·320 → 4·320 with a SiLU
  between, of the flattened 4×4 camera matrix (MVDream's ``camera_embed``) — diffusers'
  ``class_embed_type="projection"`` with ``projection_class_embeddings_input_dim=16`` is that
  structure (``TimestepEmbedding``: linear, SiLU, linear, added to the time embedding). The camera
  is the camera-to-world matrix with its position scaled to unit length (:func:`camera_condition`).

The weights come from MVDream's ``sd-v2.1-base-4view.pt`` (an LDM state dict: UNet under
``model.diffusion_model.``, the camera MLP under ``model.diffusion_model.camera_embed.{0,2}``, plus
the VAE and OpenCLIP text encoder that SD 2.1 base also has), converted on load
(:func:`convert_ldm_checkpoint`), or from a directory where that conversion was saved in
diffusers' layout (``config.json`` + weights; ``python -m threestudio_like.guidance.mvdream_unet
CHECKPOINT OUT_DIR`` writes one, :func:`convert`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch
from torch import Tensor

from ..core.errors import UserError

CHECKPOINT_NAME = "sd-v2.1-base-4view.pt"
"""The released checkpoint's file name (hub repo ``MVDream/MVDream``; ``mvdream/model_zoo.py``)."""

MVDREAM_UNET_CONFIG: dict[str, Any] = {
    # mvdream/configs/sd-v2-base.yaml, unet_config, in diffusers' terms:
    "sample_size": 32,  # image_size 32: 256² renders, 32² latents
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280, 1280],  # model_channels 320 × channel_mult [1, 2, 4, 4]
    "layers_per_block": 2,  # num_res_blocks
    # attention_resolutions [4, 2, 1]: transformers in the first three levels
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    # num_head_channels 64: 5, 10, 20, 20 heads (diffusers reads attention_head_dim as the head count)
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,  # use_linear_in_transformer
    "cross_attention_dim": 1024,  # context_dim: OpenCLIP ViT-H, penultimate layer
    "class_embed_type": "projection",  # camera_dim 16: camera_embed
    "projection_class_embeddings_input_dim": 16,
}
"""The released UNet's architecture (SD 2.1 base's, plus the camera embedding)."""


# ---- the multi-view UNet ---------------------------------------------------------------------
class CrossViewAttnProcessor:
    """Self-attention over the tokens of ``num_views`` consecutive batch rows at once: (B·V, N, C)
    is attended as (B, V·N, C) with the module's own projections (diffusers' scaled-dot-product
    processor on the joined tokens), then split back. With V = 1 it is plain self-attention."""

    def __init__(self, num_views: int) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.num_views = int(num_views)
        self.attention = AttnProcessor2_0()

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        temb: Optional[Tensor] = None,
    ) -> Tensor:
        rows, tokens, channels = hidden_states.shape
        v = self.num_views
        if rows % v:
            raise UserError(f"the multi-view UNet denoises groups of {v} views; got a batch of {rows}")
        joint = hidden_states.reshape(rows // v, v * tokens, channels)
        out = self.attention(attn, joint, encoder_hidden_states, attention_mask, temb)
        return out.reshape(rows, tokens, out.shape[-1])


def is_multiview_config(config: Any) -> bool:
    """Whether a ``UNet2DConditionModel`` config has MVDream's camera input (a 16-wide projection
    class embedding)."""
    return config.get("class_embed_type") == "projection" and config.get("projection_class_embeddings_input_dim") == 16


def make_multiview(unet: Any, num_views: int) -> Any:
    """Install :class:`CrossViewAttnProcessor` on every self-attention (``attn1``) of ``unet``
    (cross-attention keeps its processor); returns ``unet``."""
    processors = {
        name: CrossViewAttnProcessor(num_views) if name.endswith("attn1.processor") else processor
        for name, processor in unet.attn_processors.items()
    }
    unet.set_attn_processor(processors)
    return unet


def camera_condition(c2w: Tensor) -> Tensor:
    """(B,4,4) camera-to-world → (B,16): MVDream's camera input, the matrix with its position
    scaled to unit length (``normalize_camera``), flattened row by row.

    MVDream's ``get_camera`` builds OpenGL cameras (−Z forward, +Y up) in a +Y-up world and turns
    the world to Blender's +Z-up axes (``convert_opengl_to_blender``: x, y, z → x, −z, y). Our
    cameras are already those: OpenGL camera axes in a +Z-up world (as threestudio's, which
    threestudio-mvdream passes unconverted); MVDream's azimuth a is our azimuth a − 90°."""
    c2w = c2w.clone()
    position = c2w[:, :3, 3]
    c2w[:, :3, 3] = position / (position.norm(dim=-1, keepdim=True) + 1e-8)
    return c2w.reshape(c2w.shape[0], 16)


# ---- loading ---------------------------------------------------------------------------------
def convert_ldm_checkpoint(state_dict: dict[str, Tensor], config: Any) -> dict[str, Tensor]:
    """MVDream's LDM-layout state dict → the state dict of a ``UNet2DConditionModel`` with
    ``config``: the camera MLP ``camera_embed.{0,2}`` becomes ``class_embedding.linear_{1,2}``,
    the rest is diffusers' LDM converter (``convert_ldm_unet_checkpoint``; keys outside
    ``model.diffusion_model.`` — VAE, text encoder, schedule buffers — are left out)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    prefix = "model.diffusion_model."
    camera = [f"{prefix}camera_embed.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]
    if not all(k in state_dict for k in camera):
        raise UserError(
            f"the checkpoint has no camera embedding ({prefix}camera_embed.{{0,2}}): "
            f"it is not MVDream's {CHECKPOINT_NAME}"
        )
    renamed = {}
    for key, value in state_dict.items():
        for ours, label in (("camera_embed.0.", "label_emb.0.0."), ("camera_embed.2.", "label_emb.0.2.")):
            if key.startswith(prefix + ours):  # the names diffusers' converter maps to class_embedding
                key = prefix + label + key[len(prefix + ours) :]
        renamed[key] = value
    try:
        return convert_ldm_unet_checkpoint(renamed, dict(config))
    except KeyError as e:
        raise UserError(f"the checkpoint lacks the UNet weight {e}: it is not MVDream's {CHECKPOINT_NAME}") from None


def unet_from_state_dict(state_dict: dict[str, Tensor], config: dict[str, Any], where: str) -> Any:
    """A ``UNet2DConditionModel`` of ``config`` holding exactly ``state_dict`` (diffusers' keys):
    built on the meta device and given the tensors, so a 0.87 B-parameter UNet is not first
    initialised at random. UserError naming missing or unexpected keys."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    try:
        missing, unexpected = unet.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as e:  # a weight of another shape
        shapes = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln][:1]
        raise UserError(f"{where} does not fit MVDream's UNet: {shapes[0] if shapes else e}") from None
    if missing or unexpected:
        raise UserError(
            f"{where} does not fit MVDream's UNet: missing {sorted(missing)[:3]}, unexpected "
            f"{sorted(unexpected)[:3]} ({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    return unet


def load_ldm_checkpoint(path: str, config: Optional[dict[str, Any]] = None) -> Any:
    """The UNet of an LDM-layout MVDream checkpoint file (``torch.load(weights_only=True)``: no
    code from the file runs), converted; ``config`` is the architecture (default the released
    one, :data:`MVDREAM_UNET_CONFIG`)."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # OSError, UnpicklingError (not a plain state dict), a truncated file...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read the MVDream checkpoint '{path}' as a state dict: {first}") from None
    if not isinstance(state_dict, dict):
        raise UserError(f"'{path}' holds a {type(state_dict).__name__}, not a state dict like {CHECKPOINT_NAME}")
    config = dict(MVDREAM_UNET_CONFIG if config is None else config)
    return unet_from_state_dict(convert_ldm_checkpoint(state_dict, config), config, f"'{path}'")


def load_converted(model_dir: str) -> Any:
    """A multi-view UNet saved in diffusers' layout (``config.json`` + weights, :func:`convert`)."""
    from diffusers import UNet2DConditionModel

    from .pretrained import load_component

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if not is_multiview_config(config):
        raise UserError(
            f"the UNet in '{model_dir}' takes no camera (class_embed_type 'projection' with input 16): "
            f"it is not MVDream's multi-view UNet"
        )
    return load_component(UNet2DConditionModel, model_dir, "")


HOW_TO_PROVIDE = (
    f"pass {CHECKPOINT_NAME}, a directory holding it or the converted UNet, or download it once with "
    f"`huggingface-cli download MVDream/MVDream {CHECKPOINT_NAME}` (the local Hugging Face cache is read)"
)


def locate_multiview_unet(name_or_path: str) -> tuple[str, bool]:
    """(path, converted) of MVDream's UNet: ``sd-v2.1-base-4view.pt`` (converted False) or a
    directory with the converted UNet's ``config.json`` (True), found from

    * a checkpoint file;
    * a directory with the converted UNet, or holding the checkpoint file;
    * a hub id (``MVDream/MVDream``), resolved from the local Hugging Face cache only.

    Reads no weights (the run's checks call it before anything is written)."""
    from .pretrained import resolve_pretrained_dir

    path = os.path.expanduser(str(name_or_path))
    if os.path.isfile(path):
        return path, False
    try:
        model_dir = resolve_pretrained_dir(name_or_path)
    except UserError:
        raise UserError(f"MVDream's weights '{name_or_path}' are not here: {HOW_TO_PROVIDE}") from None
    if os.path.isfile(os.path.join(model_dir, "config.json")):
        return model_dir, True
    if os.path.isfile(os.path.join(model_dir, CHECKPOINT_NAME)):
        return os.path.join(model_dir, CHECKPOINT_NAME), False
    raise UserError(f"'{name_or_path}' holds neither {CHECKPOINT_NAME} nor a converted UNet: {HOW_TO_PROVIDE}")


def load_multiview_unet(name_or_path: str, num_views: int) -> Any:
    """MVDream's UNet (:func:`locate_multiview_unet`) with its views attended jointly
    (:func:`make_multiview`), fp32 on CPU; the checkpoint file is converted on load."""
    path, converted = locate_multiview_unet(name_or_path)
    unet = load_converted(path) if converted else load_ldm_checkpoint(path)
    return make_multiview(unet.float().requires_grad_(False).eval(), num_views)


def convert(argv: list[str]) -> None:
    """Convert MVDream's checkpoint once and save its UNet in diffusers' layout (fp16), which
    ``guidance=mvdream`` loads (``models.mvdream=OUT_DIR``) without reading the checkpoint again."""
    from ..core.errors import CommandParser

    parser = CommandParser(prog="python -m threestudio_like.guidance.mvdream_unet", description=convert.__doc__)
    parser.add_argument("checkpoint", help=f"MVDream's {CHECKPOINT_NAME}")
    parser.add_argument("out_dir", help="directory to write config.json and the weights to")
    args = parser.parse_args(argv)
    load_ldm_checkpoint(args.checkpoint).to(torch.float16).save_pretrained(args.out_dir)
    print(args.out_dir)


if __name__ == "__main__":
    import sys

    from ..core.errors import exit_status

    sys.exit(exit_status(convert))
