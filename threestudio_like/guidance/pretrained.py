"""Loading Stable Diffusion-format priors from disk, never from the network.

``pretrained_model_name_or_path`` is either a local directory in the diffusers pipeline layout
(``model_index.json``, ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, optionally
``vae/``) or a Hugging Face hub id. A hub id is resolved **only** from the local Hugging Face
cache (``local_files_only=True``, always): tests and CI never touch the network and nothing
hangs on a missing connection. Users with internet access download a model once, e.g.::

    huggingface-cli download stabilityai/stable-diffusion-2-1-base

(or point ``HF_HOME`` at a cache that holds it, or pass the model's local directory).

:class:`DiffusionPrior` is the loaded denoiser with what SDS/VSD need around it:

* **latent priors** (a VAE in ``model_index.json``): renders are resized to the VAE's input
  size (UNet ``sample_size`` × VAE downsampling, 512² for SD), encoded and scaled by
  ``vae.config.scaling_factor``; with ``rgb_as_latents`` the render's channels *are* latents
  and are only resized to the UNet's ``sample_size`` (``z = 2·x − 1``, Latent-NeRF style);
* **pixel-space priors** (no VAE, ``vae`` missing or null — the shipped toy prior): the
  "latents" are the render itself, ``z = 2·rgb − 1`` resized to ``sample_size``;
* **camera-conditioned priors** (``unet.config.class_embed_type == "projection"`` with
  ``projection_class_embeddings_input_dim == 16``): the UNet gets
  ``class_labels = c2w.reshape(B, 16)``.

dtype and device are chosen once, in :meth:`DiffusionPrior.to`: fp16 weights on CUDA when
``half_precision`` is set, fp32 otherwise (always fp32 on CPU).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import UserError
from .diffusion import to_epsilon

HOW_TO_PROVIDE = (
    "download it once with `huggingface-cli download <id>` (or set HF_HOME to a cache that has it; "
    "HF_HUB_OFFLINE=1 keeps it offline), or pass the model's local directory"
)


def resolve_pretrained_dir(name_or_path: str, revision: Optional[str] = None) -> str:
    """A local directory as is; a hub id → its snapshot directory in the local HF cache.

    Never downloads (``local_files_only=True``). Raises :class:`UserError` naming what was tried
    and how to provide the model.
    """
    path = os.path.expanduser(str(name_or_path))
    if os.path.isdir(path):
        return path
    if os.path.isabs(path) or path.startswith(".") or os.path.exists(path) or path.count("/") > 1:
        raise UserError(
            f"pretrained model directory '{name_or_path}' does not exist; pass an existing "
            f"model directory or a hub id ({HOW_TO_PROVIDE})"
        )
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id=path, revision=revision, local_files_only=True)
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, a broken cache...
        raise UserError(
            f"pretrained model '{name_or_path}' is neither a local directory nor in the local "
            f"Hugging Face cache ({type(e).__name__}); {HOW_TO_PROVIDE}"
        ) from None


PRETRAINED_KINDS = {
    "stable-diffusion": "a Stable Diffusion-format diffusers pipeline (model_index.json with unet/ and scheduler/)",
    "zero123": "a Zero123 diffusers pipeline (model_index.json naming Zero123Pipeline, with cc_projection/)",
    "clip": "a CLIP model (config.json with model_type 'clip')",
}
"""What a component's ``pretrained_model_name_or_path`` may hold, by kind."""


def pretrained_kind_of(model_dir: str) -> Optional[str]:
    """The kind (:data:`PRETRAINED_KINDS`) of a local model directory, from its json files only."""
    for name in ("model_index.json", "config.json"):
        try:
            with open(os.path.join(model_dir, name)) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if name == "config.json":
            return "clip" if data.get("model_type") == "clip" else None
        if "Zero123" in str(data.get("_class_name", "")) or has_component(data, "cc_projection"):
            return "zero123"
        return "stable-diffusion" if has_component(data, "unet") and has_component(data, "scheduler") else None
    return None


def check_pretrained(name_or_path: str, kind: str, where: str) -> str:
    """Resolve ``name_or_path`` locally (:func:`resolve_pretrained_dir`) and check it holds a model
    of ``kind``; returns the directory. Reads json files only: no weights are loaded."""
    try:
        model_dir = resolve_pretrained_dir(name_or_path)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    found = pretrained_kind_of(model_dir)
    if found != kind:
        what = PRETRAINED_KINDS[found] if found else "no model this project can read"
        raise UserError(
            f"{where}.pretrained_model_name_or_path '{name_or_path}' holds {what}; it needs {PRETRAINED_KINDS[kind]}"
        )
    return model_dir


def read_model_index(model_dir: str) -> dict[str, Any]:
    """``model_index.json`` of a pipeline directory (UserError if missing or unreadable)."""
    index_file = os.path.join(model_dir, "model_index.json")
    try:
        with open(index_file) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(
            f"'{model_dir}' is not a diffusers pipeline directory: cannot read model_index.json "
            f"({type(e).__name__}); pass the directory that holds model_index.json"
        ) from None


def has_component(index: dict[str, Any], name: str) -> bool:
    """Whether ``model_index.json`` declares component ``name`` (absent, null and [null, null] = no)."""
    entry = index.get(name)
    return entry is not None and not (isinstance(entry, (list, tuple)) and all(e is None for e in entry))


def weights_dtype(device: torch.device, half_precision: bool) -> torch.dtype:
    """fp16 on CUDA when ``half_precision``, fp32 otherwise."""
    return torch.float16 if half_precision and torch.device(device).type == "cuda" else torch.float32


def load_component(cls: Any, model_dir: str, subfolder: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(model_dir, subfolder=…, local_files_only=True)`` with a UserError
    naming the folder when it is missing or broken."""
    try:
        return cls.from_pretrained(model_dir, subfolder=subfolder, local_files_only=True, **kwargs)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load '{subfolder}' of the pretrained model at '{model_dir}': {first}") from None


class DiffusionPrior:
    """A frozen Stable Diffusion-format denoiser: UNet, noise scheduler, optional VAE.

    Not an ``nn.Module`` on purpose: guidances keep it as a plain attribute so its weights stay
    out of their ``parameters()`` and checkpoints. Build with :func:`load_diffusion_prior`.
    """

    def __init__(self, unet: Any, scheduler: Any, vae: Any, model_dir: str, half_precision: bool) -> None:
        self.unet, self.scheduler, self.vae = unet, scheduler, vae
        self.model_dir = model_dir
        self.half_precision = half_precision
        for m in (unet, vae):
            if m is not None:
                m.requires_grad_(False).eval()
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        cfg = unet.config
        self.camera_conditioned = (
            cfg.class_embed_type == "projection" and cfg.projection_class_embeddings_input_dim == 16
        )
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = scheduler.config.prediction_type
        self.alphas_cumprod = scheduler.alphas_cumprod.float()  # (T,)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def sample_size(self) -> int:
        s = self.unet.config.sample_size
        return int(s[0] if isinstance(s, (list, tuple)) else s)

    def to(self, device: torch.device | str) -> DiffusionPrior:
        """Move to ``device`` with the weights dtype chosen for it (see module docstring)."""
        self.device = torch.device(device)
        self.dtype = weights_dtype(self.device, self.half_precision)
        for m in (self.unet, self.vae):
            if m is not None:
                m.to(self.device)
                if m.dtype != self.dtype:
                    m.to(dtype=self.dtype)
        self.alphas_cumprod = self.alphas_cumprod.to(self.device)
        return self

    def enable_channels_last(self) -> None:
        self.unet.to(memory_format=torch.channels_last)

    def enable_memory_efficient_attention(self) -> None:
        """xformers attention when installed and on CUDA; otherwise diffusers already uses
        torch's scaled-dot-product attention, which is memory-efficient."""
        if self.device.type != "cuda":
            return
        try:
            import xformers  # noqa: F401
        except ImportError:
            return
        self.unet.enable_xformers_memory_efficient_attention()

    # ---- renders → latents -------------------------------------------------------------------
    def encode(self, rgb: Tensor, rgb_as_latents: bool = False) -> Tensor:
        """(B,H,W,C) renders in [0,1] → (B,c,s,s) fp32 latents (differentiable; see module doc).

        ``C`` is 3, or the UNet's latent channel count with ``rgb_as_latents``.
        """
        x = rgb.permute(0, 3, 1, 2).float()
        s = self.sample_size
        if rgb_as_latents or self.vae is None:
            if x.shape[1] != self.latent_channels:
                what = "rgb_as_latents" if rgb_as_latents else "this pixel-space prior"
                raise UserError(f"{what} needs renders with {self.latent_channels} channels, got {x.shape[1]}")
            return F.interpolate(x, (s, s), mode="bilinear", align_corners=False) * 2.0 - 1.0
        if x.shape[1] != 3:
            raise UserError(
                f"the VAE encodes RGB renders (3 channels), got {x.shape[1]}; "
                "set rgb_as_latents=true for latent renders"
            )
        size = s * (2 ** (len(self.vae.config.block_out_channels) - 1))
        x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False) * 2.0 - 1.0
        posterior = self.vae.encode(x.to(self.dtype)).latent_dist
        return posterior.sample().float() * float(self.vae.config.scaling_factor)

    def decode(self, latents: Tensor, rgb_as_latents: bool = False) -> Tensor:
        """(B,c,s,s) latents → (B,H,W,C) in [0,1], the inverse of :meth:`encode`: the VAE's decoding
        (H = s × its downsampling, C = 3), or ``(z + 1)/2`` where ``encode`` took ``2·x − 1``
        (pixel-space priors, ``rgb_as_latents``: H = s); clamped to [0,1]."""
        if rgb_as_latents or self.vae is None:
            x = (latents.float() + 1.0) / 2.0
        else:
            scaled = latents.to(self.dtype) / float(self.vae.config.scaling_factor)
            x = self.vae.decode(scaled).sample.float() / 2.0 + 0.5
        return x.clamp(0.0, 1.0).permute(0, 2, 3, 1)

    # ---- the denoiser ------------------------------------------------------------------------
    def class_labels(self, c2w: Tensor) -> Optional[Tensor]:
        """(B,4,4) cameras → (B,16) class labels for a camera-conditioned prior, else None."""
        return c2w.reshape(c2w.shape[0], 16).to(self.device, self.dtype) if self.camera_conditioned else None

    def predict(self, noisy: Tensor, t: Tensor, text: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        """The UNet's raw output (ε, v or x₀ per ``prediction_type``) as fp32 (N,c,s,s) for
        ``noisy`` (N,c,s,s), ``t`` (N,), ``text`` (N,L,D). Differentiable (in trainable adapter
        weights); guidances call it under ``no_grad`` for their scores."""
        out = self.unet(
            noisy.to(self.dtype), t, encoder_hidden_states=text.to(self.dtype), class_labels=class_labels
        ).sample
        return out.float()

    def predict_epsilon(self, noisy: Tensor, t: Tensor, text: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        """:meth:`predict` converted to ε (v- and x₀-prediction models included), fp32 (N,c,s,s)."""
        out = self.predict(noisy, t, text, class_labels)
        return to_epsilon(out, noisy.float(), self.alphas_cumprod[t], self.prediction_type)

    def training_target(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the UNet regresses in its own parameterization (ε, v or x₀) — for LoRA training."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(latents, noise, t)
        if self.prediction_type == "sample":
            return latents
        raise UserError(f"unsupported scheduler prediction_type '{self.prediction_type}'")


def load_diffusion_prior(name_or_path: str, half_precision: bool = True) -> DiffusionPrior:
    """Load UNet, scheduler (as ``DDPMScheduler``, for ``add_noise`` and ᾱ) and the VAE if the
    pipeline has one, on CPU in fp32; call :meth:`DiffusionPrior.to` to place it."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    model_dir = resolve_pretrained_dir(name_or_path)
    index = read_model_index(model_dir)
    unet = load_component(UNet2DConditionModel, model_dir, "unet")
    scheduler = load_component(DDPMScheduler, model_dir, "scheduler")
    vae = load_component(AutoencoderKL, model_dir, "vae") if has_component(index, "vae") else None
    return DiffusionPrior(unet, scheduler, vae, model_dir, half_precision)


def load_text_encoder(model_dir: str) -> tuple[Any, Any]:
    """The pipeline's own ``tokenizer/`` and ``text_encoder/`` (CLIP), frozen, fp32 on CPU."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = load_component(CLIPTokenizer, model_dir, "tokenizer")
    encoder = load_component(CLIPTextModel, model_dir, "text_encoder")
    return tokenizer, encoder.requires_grad_(False).eval()
