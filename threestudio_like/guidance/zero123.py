"""Score distillation with Zero123: novel views scored against one reference image.

Per step, for renders (B,H,W,3) at cameras relative to the reference camera:

1. z = encode(render) (VAE sample × scale, or ``2·rgb − 1`` for pixel-space priors);
2. t ~ U[t_min, t_max] per view; z_t = √ᾱ_t z + √(1−ᾱ_t) ε (``scheduler.add_noise``);
3. context = cc_projection([CLIP(reference), pose(camera)]), UNet input = [z_t, z_ref];
   ε̂ = ε_u + s(ε_c − ε_u) with zero context + zero reference latent as unconditional;
4. grad = w(t)(ε̂ − ε) (ε̂'s x̂₀ clamped with ``denoised_clip``), optionally clipped;
   loss = ½‖z − (z − grad).detach()‖² / B.

The pose convention is documented in :mod:`.zero123_pipeline`. The reference image is encoded
once by :meth:`Zero123Guidance.set_reference` (CLIP embedding + concat latent cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.errors import UserError
from ..core.schedule import Updateable, schedule_value
from ..data.cameras import CameraBatch
from .base import GuidanceOutput
from .clip import load_image
from .diffusion import (
    DistillationConfig, add_noise, clamp_denoised, distillation_gradient, scheduled_grad_clip, scheduled_step_range, sds_loss,
)
from .zero123_pipeline import POSE_EMBEDDINGS, Zero123Pipeline, relative_pose


class Zero123Guidance(Configurable, Updateable, nn.Module):
    """``__call__(rgb (B,H,W,3) [0,1], cameras, prompt=None) -> GuidanceOutput(name="sds")``.

    The frozen pipeline is a plain attribute (not a submodule): the guidance has no trainable
    state and checkpoints hold nothing of it.
    """

    @dataclass
    class Config(DistillationConfig):
        pretrained_model_name_or_path: str = "kxic/zero123-xl-diffusers"
        """Local directory or hub id (local HF cache only) of a diffusers-format Zero123 checkpoint."""
        guidance_scale: Any = 3.0
        """CFG scale (Zero123 uses 3–5); number or schedule."""
        pose_embedding: str = "auto"
        """``zero123`` (Δradius last), ``stable_zero123`` (reference polar last) or ``auto``
        (``stable_zero123`` when the model name contains 'stable')."""
        reference_image: str = ""
        """Path of the reference image (RGBA is composited over white); or call set_reference."""
        reference_elevation_deg: float = 0.0
        """Elevation of the reference camera (degrees), used with ``reference_image``."""
        reference_azimuth_deg: float = 0.0
        """Azimuth of the reference camera (degrees)."""
        reference_distance: float = 3.8
        """Distance of the reference camera (same units as the data's camera distances)."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        c = self.cfg
        kind = c.pose_embedding
        if kind == "auto":
            kind = "stable_zero123" if "stable" in c.pretrained_model_name_or_path.lower() else "zero123"
        if kind not in POSE_EMBEDDINGS:
            raise UserError(f"{where}.pose_embedding must be auto, {' or '.join(POSE_EMBEDDINGS)}; got '{kind}'")
        self.pose_kind = kind
        pipe = Zero123Pipeline.from_pretrained(c.pretrained_model_name_or_path)
        pipe.set_progress_bar_config(disable=True)
        for m in (pipe.unet, pipe.image_encoder, pipe.cc_projection, pipe.vae):
            if m is not None:
                m.requires_grad_(False).eval()
        self.__dict__["pipe"] = pipe  # frozen: kept out of parameters()/state_dict()
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps
        self._reference: Optional[dict[str, Any]] = None
        self._step = 0
        if c.reference_image:
            self.set_reference(load_image(c.reference_image), c.reference_elevation_deg,
                               c.reference_azimuth_deg, c.reference_distance)

    # ---- device ------------------------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> "Zero123Guidance":
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            half = self.cfg.half_precision and torch.device(device).type == "cuda"
            self.pipe.to(torch.device(device), torch.float16 if half else torch.float32)
        if self._reference is not None:
            self._reference = {k: v.to(self.pipe.device) if isinstance(v, Tensor) else v
                               for k, v in self._reference.items()}
        return nn.Module.to(self, *args, **kwargs)

    # ---- reference ---------------------------------------------------------------------------
    @torch.no_grad()
    def set_reference(self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float) -> None:
        """Encode the reference image (1,H,W,3) in [0,1] seen from the given camera (degrees)."""
        if rgb.ndim != 4 or rgb.shape[0] != 1 or rgb.shape[-1] != 3:
            raise UserError(f"the Zero123 reference image must be (1,H,W,3), got {tuple(rgb.shape)}")
        pipe = self.pipe
        x = rgb.permute(0, 3, 1, 2).to(pipe.device, torch.float32)
        self._reference = {
            "embedding": pipe.encode_image_embedding(x),     # (1,1,D)
            "latent": pipe.encode_reference_latent(x),       # (1,C,h,w), unscaled VAE mode
            "elevation": float(elevation_deg), "azimuth": float(azimuth_deg), "distance": float(distance),
        }

    def poses(self, cameras: CameraBatch) -> Tensor:
        """(B,4) pose conditioning of ``cameras`` relative to the reference camera."""
        r = self._require_reference()
        return relative_pose(cameras.elevation.float(), cameras.azimuth.float(), cameras.distance.float(),
                             r["elevation"], r["azimuth"], r["distance"], self.pose_kind)

    def _require_reference(self) -> dict[str, Any]:
        if self._reference is None:
            raise UserError("Zero123 guidance has no reference image: set guidance.reference_image "
                            "(or the system must call set_reference)")
        return self._reference

    # ---- schedules ---------------------------------------------------------------------------
    def on_update_step(self, epoch: int, global_step: int) -> None:
        self._step = global_step

    def step_range(self) -> tuple[int, int]:
        """Inclusive (t_min, t_max) at the current training step."""
        return scheduled_step_range(self.cfg, self.num_train_timesteps, self._step)

    # ---- the guidance ------------------------------------------------------------------------
    def forward(self, rgb: Tensor, cameras: CameraBatch, prompt: Any = None, noise: Optional[Tensor] = None,
                timesteps: Optional[Tensor] = None) -> GuidanceOutput:
        """``rgb`` (B,H,W,3) in [0,1] at ``cameras`` (B) → SDS loss. ``noise``/``timesteps``
        (B,C,h,w)/(B,) may be given (tests); ``prompt`` is ignored (image-conditioned)."""
        ref = self._require_reference()
        pipe = self.pipe
        if pipe.scheduler.config.prediction_type != "epsilon":
            raise UserError("Zero123 guidance needs an epsilon-prediction checkpoint "
                            f"(this one predicts '{pipe.scheduler.config.prediction_type}')")
        # 1. latents of the renders (differentiable)
        latents = pipe.encode_latents(rgb.permute(0, 3, 1, 2).to(pipe.dtype)).float()
        # 2. timesteps and noise
        timesteps, noise, noisy = add_noise(latents, pipe.scheduler, self.step_range(), noise, timesteps)
        # 3. view-conditioned noise prediction with CFG
        with torch.no_grad():
            context = pipe.conditioning(ref["embedding"], self.poses(cameras).to(latents.device))
            scale = float(schedule_value(self.cfg.guidance_scale, self._step))
            eps = pipe.predict_noise(noisy, timesteps, context, ref["latent"], scale).float()
        # 4. SDS gradient and the loss whose gradient it is
        alphas = pipe.scheduler.alphas_cumprod.to(latents.device)[timesteps]
        eps = clamp_denoised(eps, noisy.float(), alphas, self.cfg.denoised_clip)
        clip = scheduled_grad_clip(self.cfg, self._step)
        grad = distillation_gradient(eps - noise, alphas, self.cfg.weighting, clip)
        return GuidanceOutput(loss=sds_loss(latents, grad), name="sds", grad_norm=grad.norm().detach(),
                              timesteps=timesteps)
