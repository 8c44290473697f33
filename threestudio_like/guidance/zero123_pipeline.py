"""Zero-1-to-3 (Zero123) as a diffusers-style pipeline of our own, with no remote code.

Zero123 is Stable Diffusion fine-tuned to draw an object from a new viewpoint given one image:

* the UNet input is ``concat(noisy latent, reference latent)`` (``2·C`` channels, 8 for SD);
  the reference latent is the VAE posterior *mode* of the reference image, **not** scaled by
  the VAE scaling factor (as the original ``encode_first_stage(...).mode()``), while the noisy
  latents are scaled as in SD;
* the cross-attention context is one token, ``cc_projection(concat(CLIP image embedding, pose))``
  (:class:`CCProjection`: Linear(D + 4 → D));
* classifier-free guidance uses a zero context and a zero reference latent as unconditional.

**Pose convention.** ``pose = [Δpolar (rad), sin Δazimuth, cos Δazimuth, Δradius]`` with
Δ = target − reference. Zero123 uses the polar angle ``90° − elevation``, so
``Δpolar = (90 − e_target) − (90 − e_ref) = e_ref − e_target``: a camera moving *up* has a
negative first entry. Azimuths are our world's (``data/cameras.py``: Z up, counter-clockwise
from +X), which matches Zero123's Objaverse renders. Stable Zero123 replaces Δradius by the
reference polar angle ``deg2rad(90 − e_ref)`` (``pose_embedding="stable_zero123"``).

**Checkpoints.** :meth:`Zero123Pipeline.from_pretrained` reads the diffusers-format layouts in
use — ``kxic/zero123-*`` (``cc_projection/``, ``CCProjection`` with a ``projection`` Linear) and
``ashawkey/zero123-xl-diffusers`` / ``ashawkey/stable-zero123-diffusers``
(``clip_camera_projection/``, ``CLIPCameraProjection`` with a ``proj`` Linear) — plus our own
``save_pretrained`` output. Pixel-space toy priors have no ``vae``: their "latents" are
``2·rgb − 1`` at the UNet's resolution (C = 3).
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn

from ..core.errors import UserError
from ..ops.clip_preprocess import ClipImageNormalization, clip_preprocess
from .pretrained import resolve_pretrained_dir

POSE_EMBEDDINGS = ("zero123", "stable_zero123")
PROJECTION_FOLDERS = ("cc_projection", "clip_camera_projection")
"""Folder names the camera projection is stored under (our/kxic layout, ashawkey layout)."""


def relative_pose(
    elevation_deg: Tensor,
    azimuth_deg: Tensor,
    distance: Tensor,
    ref_elevation_deg: Union[float, Tensor],
    ref_azimuth_deg: Union[float, Tensor],
    ref_distance: Union[float, Tensor],
    kind: str = "zero123",
) -> Tensor:
    """(B,) target cameras relative to the reference camera (a number, or (B,) for a reference
    per target) → (B,4) pose conditioning.

    ``zero123``: ``[deg2rad(e_ref − e), sin(a − a_ref), cos(a − a_ref), d − d_ref]`` (angles in
    degrees in, see the module doc for the polar-angle sign); ``stable_zero123``: the last
    entry is ``deg2rad(90 − e_ref)``.
    """
    d_polar = torch.deg2rad(ref_elevation_deg - elevation_deg)
    d_azimuth = torch.deg2rad(azimuth_deg - ref_azimuth_deg)
    if kind == "zero123":
        last = distance - ref_distance
    elif kind == "stable_zero123":
        ref_polar = torch.as_tensor(90.0 - ref_elevation_deg, dtype=elevation_deg.dtype, device=elevation_deg.device)
        last = torch.deg2rad(ref_polar).expand_as(elevation_deg)
    else:
        raise UserError(f"pose_embedding must be one of {', '.join(POSE_EMBEDDINGS)}, got '{kind}'")
    return torch.stack([d_polar, torch.sin(d_azimuth), torch.cos(d_azimuth), last], dim=-1)


class CCProjection(ModelMixin, ConfigMixin):
    """Linear(embedding_dim + additional_embeddings → embedding_dim) applied to
    ``concat(CLIP image embedding, pose)``: (B,1,D+4) → (B,1,D)."""

    @register_to_config
    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)

    @classmethod
    def load_checkpoint(cls, folder: str, torch_dtype: Optional[torch.dtype] = None) -> CCProjection:
        """Load any of the known layouts (weights ``proj.*`` or ``projection.*``); the sizes are
        read from the weight, so configs without them (kxic's) load too."""
        state = _read_weights(folder)
        renamed = {
            k.split(".", 1)[1] if "." in k else k: v
            for k, v in state.items()
            if k.split(".", 1)[0] in ("proj", "projection")
        }
        if set(renamed) != {"weight", "bias"}:
            raise UserError(
                f"'{folder}' does not hold a camera projection (weights found: {sorted(state)}); "
                "expected a Linear named 'proj' or 'projection'"
            )
        out_dim, in_dim = renamed["weight"].shape
        module = cls(embedding_dim=out_dim, additional_embeddings=in_dim - out_dim)
        module.proj.load_state_dict(renamed)
        if torch_dtype is not None:
            module.proj.to(torch_dtype)  # (the Linear: ModelMixin.to warns about casting)
        return module


def _read_weights(folder: str) -> dict[str, Tensor]:
    names = (
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.bin",
    )
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file

                return {k: v.float() for k, v in load_file(path).items()}
            return {k: v.float() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
    raise UserError(f"no weights in '{folder}' (looked for {', '.join(names)}); the checkpoint is incomplete")


class Zero123Pipeline(DiffusionPipeline):
    """Novel-view sampling and the pieces a Zero123 guidance needs.

    Components: ``vae`` (AutoencoderKL or None: pixel space), ``image_encoder``
    (CLIPVisionModelWithProjection), ``feature_extractor`` (CLIP image processor or None; only its
    size/mean/std are used, applied in torch), ``unet`` (UNet2DConditionModel, ``in_channels = 2·C``),
    ``scheduler``, ``cc_projection`` (:class:`CCProjection`).
    Images are (B,3,H,W) in [0,1] throughout.
    """

    _optional_components = ["vae", "feature_extractor"]
    model_cpu_offload_seq = "image_encoder->cc_projection->unet->vae"

    def __init__(
        self,
        vae: Optional[AutoencoderKL],
        image_encoder: nn.Module,
        unet: UNet2DConditionModel,
        scheduler: Any,
        cc_projection: CCProjection,
        feature_extractor: Any = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            unet=unet,
            scheduler=scheduler,
            cc_projection=cc_projection,
        )
        c = self.latent_channels
        if unet.config.in_channels != 2 * c or unet.config.out_channels != c:
            raise UserError(
                f"Zero123 UNet must take {2 * c} input channels (noisy + reference latents) and predict {c}; "
                f"got in={unet.config.in_channels}, out={unet.config.out_channels}"
            )
        self.clip_norm = ClipImageNormalization.from_processor(feature_extractor, image_encoder.config.image_size)

    # ---- sizes ----------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels if self.vae is not None else 3

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def image_size(self) -> int:
        """Side of the images the model works at (256 for Zero123)."""
        return self.unet.config.sample_size * self.vae_scale_factor

    # ---- encoders -------------------------------------------------------------------------
    def _resize(self, rgb: Tensor) -> Tensor:
        s = self.image_size
        if rgb.shape[-2:] == (s, s):
            return rgb
        return F.interpolate(rgb, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    def encode_image_embedding(self, rgb: Tensor) -> Tensor:
        """(B,3,H,W) [0,1] → (B,1,D) CLIP image embeddings."""
        dtype = self.image_encoder.dtype
        pixels = clip_preprocess(rgb, self.clip_norm).to(dtype)
        return self.image_encoder(pixel_values=pixels).image_embeds[:, None]

    def encode_reference_latent(self, rgb: Tensor) -> Tensor:
        """(B,3,H,W) [0,1] → (B,C,h,w) concat-conditioning latent (VAE mode, unscaled)."""
        x = self._resize(rgb) * 2.0 - 1.0
        if self.vae is None:
            return x
        return self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode()

    def encode_latents(self, rgb: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """(B,3,H,W) [0,1] → (B,C,h,w) diffusion latents (VAE sample × scaling factor);
        differentiable."""
        x = self._resize(rgb) * 2.0 - 1.0
        if self.vae is None:
            return x
        posterior = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        return posterior.sample(generator) * self.vae.config.scaling_factor

    def decode_latents(self, latents: Tensor) -> Tensor:
        """(B,C,h,w) → (B,3,H,W) images in [0,1]."""
        if self.vae is not None:
            latents = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return (latents * 0.5 + 0.5).clamp(0, 1)

    def conditioning(self, image_embeds: Tensor, pose: Tensor) -> Tensor:
        """(1|B,1,D) CLIP embeddings, (B,4) poses → (B,1,D) cross-attention context."""
        emb = image_embeds.expand(pose.shape[0], -1, -1)
        return self.cc_projection(torch.cat([emb, pose[:, None].to(emb)], dim=-1))

    def predict_noise(
        self, latents: Tensor, timesteps: Tensor, context: Tensor, ref_latent: Tensor, guidance_scale: float
    ) -> Tensor:
        """UNet prediction with CFG: ``u + s·(c − u)``, unconditional = zero context and zero
        reference latent. ``latents`` (B,C,h,w), ``timesteps`` (B,) or scalar, ``context``
        (B,1,D), ``ref_latent`` (1|B,C,h,w) → (B,C,h,w)."""
        b = latents.shape[0]
        ref = ref_latent.expand(b, -1, -1, -1).to(latents)
        t = timesteps.reshape(-1).expand(b) if timesteps.numel() == 1 else timesteps
        dtype = self.unet.dtype
        if guidance_scale == 1.0:
            return self.unet(torch.cat([latents, ref], 1).to(dtype), t, encoder_hidden_states=context.to(dtype)).sample
        x = torch.cat([torch.cat([latents, ref], 1), torch.cat([latents, torch.zeros_like(ref)], 1)])
        ctx = torch.cat([context, torch.zeros_like(context)])
        out = self.unet(x.to(dtype), torch.cat([t, t]), encoder_hidden_states=ctx.to(dtype)).sample
        cond, uncond = out.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    # ---- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        image: Tensor,
        elevation: Union[float, Tensor] = 0.0,
        azimuth: Union[float, Tensor] = 0.0,
        radius: Union[float, Tensor] = 0.0,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        generator: Optional[torch.Generator] = None,
        latents: Optional[Tensor] = None,
        pose_embedding: str = "zero123",
        reference_elevation: float = 0.0,
        return_dict: bool = True,
    ) -> Union[ImagePipelineOutput, tuple]:
        """Draw the object of ``image`` (1,3,H,W) in [0,1] from relative viewpoints.

        ``elevation``/``azimuth`` (degrees) and ``radius`` are the *changes* from the input
        camera (scalars or (B,) tensors: B views; up is positive elevation); ``reference_elevation``
        (degrees) is only used by ``pose_embedding="stable_zero123"``. Returns images (B,3,H,W)
        in [0,1] (``.images``).
        """
        device = self._execution_device
        kw = dict(dtype=torch.float32, device=device)
        d_elev, d_az, d_rad = (torch.as_tensor(v, **kw).reshape(-1) for v in (elevation, azimuth, radius))
        b = max(d_elev.numel(), d_az.numel(), d_rad.numel())
        d_elev, d_az, d_rad = d_elev.expand(b), d_az.expand(b), d_rad.expand(b)
        pose = relative_pose(reference_elevation + d_elev, d_az, d_rad, reference_elevation, 0.0, 0.0, pose_embedding)
        image = image.to(**kw)
        context = self.conditioning(self.encode_image_embedding(image), pose)
        ref_latent = self.encode_reference_latent(image)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (b, self.latent_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents.to(device) * self.scheduler.init_noise_sigma
        step_kwargs = (
            {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        )
        for t in self.progress_bar(self.scheduler.timesteps):
            model_in = self.scheduler.scale_model_input(latents, t)
            noise = self.predict_noise(model_in, t.to(device).reshape(1), context, ref_latent, guidance_scale)
            latents = self.scheduler.step(noise.float(), t, latents, **step_kwargs).prev_sample
        images = self.decode_latents(latents.to(self.vae.dtype if self.vae is not None else latents.dtype)).float()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str, torch_dtype: Optional[torch.dtype] = None, **kwargs: Any
    ) -> Zero123Pipeline:
        """Load a Zero123 checkpoint directory (or cached hub id) in any supported layout, every
        part in ``torch_dtype`` (default float32, whatever dtype the checkpoint stores)."""
        import diffusers
        import transformers

        torch_dtype = torch_dtype or torch.float32

        path = resolve_pretrained_dir(str(pretrained_model_name_or_path))
        index_file = os.path.join(path, "model_index.json")
        if not os.path.isfile(index_file):
            raise UserError(
                f"'{path}' is not a diffusers checkpoint (no model_index.json); "
                "pass the directory of a Zero123 diffusers checkpoint"
            )
        with open(index_file) as f:
            index = json.load(f)

        def present(name: str) -> bool:
            entry = index.get(name)
            return bool(entry) and entry[0] is not None and os.path.isdir(os.path.join(path, name))

        for required in ("image_encoder", "unet", "scheduler"):
            if not present(required):
                raise UserError(
                    f"Zero123 checkpoint '{path}' lacks its '{required}' folder; the download is incomplete"
                )
        sub = lambda name: os.path.join(path, name)  # noqa: E731
        vae = AutoencoderKL.from_pretrained(sub("vae"), torch_dtype=torch_dtype) if present("vae") else None
        image_encoder = transformers.CLIPVisionModelWithProjection.from_pretrained(
            sub("image_encoder"), dtype=torch_dtype
        )
        feature_extractor = None
        processor_file = os.path.join(sub("feature_extractor"), "preprocessor_config.json")
        if present("feature_extractor") and os.path.isfile(processor_file):
            with open(processor_file) as f:
                # looked up only where the Pil one is missing: naming CLIPImageProcessor without
                # torchvision warns that it falls back
                processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
                feature_extractor = processor_cls(
                    **{
                        k: v
                        for k, v in json.load(f).items()
                        if k
                        in (
                            "size",
                            "crop_size",
                            "image_mean",
                            "image_std",
                            "do_center_crop",
                            "do_resize",
                            "do_normalize",
                        )
                    }
                )
        unet = UNet2DConditionModel.from_pretrained(sub("unet"), torch_dtype=torch_dtype)
        scheduler_cls = getattr(diffusers, index["scheduler"][1], diffusers.DDIMScheduler)
        scheduler = scheduler_cls.from_pretrained(sub("scheduler"))
        folder = next((name for name in PROJECTION_FOLDERS if present(name)), None)
        if folder is None:
            raise UserError(
                f"Zero123 checkpoint '{path}' has no camera projection "
                f"(expected one of the folders {', '.join(PROJECTION_FOLDERS)})"
            )
        cc_projection = CCProjection.load_checkpoint(sub(folder), torch_dtype)
        return cls(
            vae=vae,
            image_encoder=image_encoder,
            unet=unet,
            scheduler=scheduler,
            cc_projection=cc_projection,
            feature_extractor=feature_extractor,
        )
