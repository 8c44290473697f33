"""Score distillation with Zero123: novel views scored against one reference image.

The step is SDS's (:mod:`.distillation`); this class supplies the prior and its conditioning,
for renders (B,H,W,3) at cameras relative to the reference camera:

* ``encode``: VAE sample × scale, or ``2·rgb − 1`` for pixel-space priors;
* ``guided_noise``: context = cc_projection([CLIP(reference), pose(camera)]), UNet input =
  [z_t, z_ref]; ε̂ = ε_u + s(ε_c − ε_u) with zero context + zero reference latent as
  unconditional; grad = w(t)(ε̂ − ε).

The pose convention is documented in :mod:`.zero123_pipeline`. The reference image is encoded
once by :meth:`Zero123Guidance.set_reference` (CLIP embedding + concat latent cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

import torch
from torch import Tensor

from ..core.config import Range, Schedule
from ..core.errors import UserError
from ..data.cameras import CameraBatch
from ..data.image import load_image
from .base import move_model
from .distillation import DistillationGuidance
from .zero123_pipeline import Zero123Pipeline, relative_pose


class Zero123Guidance(DistillationGuidance):
    """``guidance(rgb (B,H,W,3) [0,1], cameras, prompt=None) -> GuidanceOutput``.

    The frozen pipeline (a diffusers pipeline, not an ``nn.Module``) is a plain attribute: the
    guidance has no trainable state and checkpoints hold nothing of it.
    """

    name = "Zero123"
    pretrained_kind = "zero123"
    uses_reference = True

    @dataclass
    class Config(DistillationGuidance.Config):
        pretrained_model_name_or_path: str = "kxic/zero123-xl-diffusers"
        """Local directory or hub id (local HF cache only) of a diffusers-format Zero123 checkpoint."""
        guidance_scale: Annotated[Any, Schedule(Range(ge=0))] = 3.0
        """CFG scale (Zero123 uses 3–5); number or schedule."""
        pose_embedding: Literal["auto", "zero123", "stable_zero123"] = "auto"
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
        super().__init__(cfg, where)
        c = self.cfg
        kind = c.pose_embedding
        if kind == "auto":
            kind = "stable_zero123" if "stable" in c.pretrained_model_name_or_path.lower() else "zero123"
        self.pose_kind = kind
        pipe = Zero123Pipeline.from_pretrained(c.pretrained_model_name_or_path)
        pipe.set_progress_bar_config(disable=True)
        for m in (pipe.unet, pipe.image_encoder, pipe.cc_projection, pipe.vae):
            if m is not None:
                m.requires_grad_(False).eval()
        if pipe.scheduler.config.prediction_type != "epsilon":
            raise UserError(
                f"{where}: Zero123 guidance needs an epsilon-prediction checkpoint "
                f"(this one predicts '{pipe.scheduler.config.prediction_type}')"
            )
        self.pipe = pipe
        self._reference: Optional[dict[str, Any]] = None
        if c.reference_image:
            self.set_reference(
                load_image(c.reference_image, what="reference image"),
                c.reference_elevation_deg,
                c.reference_azimuth_deg,
                c.reference_distance,
            )

    @property
    def scheduler(self) -> Any:
        return self.pipe.scheduler

    def place(self, device: torch.device | str) -> Zero123Guidance:
        device = torch.device(device)
        half = self.cfg.half_precision and device.type == "cuda"
        move_model(self.pipe, device, torch.float16 if half else torch.float32)
        if self._reference is not None:
            self._reference = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self._reference.items()}
        super().place(device)
        return self

    # ---- reference ---------------------------------------------------------------------------
    @torch.no_grad()
    def set_reference(self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float) -> None:
        """Encode the reference image (1,H,W,3) in [0,1] seen from the given camera (degrees)."""
        if rgb.ndim != 4 or rgb.shape[0] != 1 or rgb.shape[-1] != 3:
            raise UserError(f"the Zero123 reference image must be (1,H,W,3), got {tuple(rgb.shape)}")
        pipe = self.pipe
        x = rgb.permute(0, 3, 1, 2).to(pipe.device, torch.float32)
        self._reference = {
            "embedding": pipe.encode_image_embedding(x),  # (1,1,D)
            "latent": pipe.encode_reference_latent(x),  # (1,C,h,w), unscaled VAE mode
            "elevation": float(elevation_deg),
            "azimuth": float(azimuth_deg),
            "distance": float(distance),
        }

    def poses(self, cameras: CameraBatch) -> Tensor:
        """(B,4) pose conditioning of ``cameras`` relative to the reference camera."""
        r = self._require_reference()
        return relative_pose(
            cameras.elevation.float(),
            cameras.azimuth.float(),
            cameras.distance.float(),
            r["elevation"],
            r["azimuth"],
            r["distance"],
            self.pose_kind,
        )

    def _require_reference(self) -> dict[str, Any]:
        if self._reference is None:
            raise UserError(
                "Zero123 guidance has no reference image: set guidance.reference_image "
                "(or the system must call set_reference)"
            )
        return self._reference

    # ---- the steps Zero123 supplies -----------------------------------------------------------
    def check_inputs(self, prompt: Any) -> None:
        self._require_reference()

    def encode(self, rgb: Tensor) -> Tensor:
        return self.pipe.encode_latents(rgb.permute(0, 3, 1, 2).to(self.pipe.dtype)).float()

    def decode(self, latents: Tensor) -> Tensor:
        return self.pipe.decode_latents(latents.to(self.pipe.dtype)).float().permute(0, 2, 3, 1)

    def guided_noise(self, noisy: Tensor, t: Tensor, prompt: Any, cameras: CameraBatch) -> Tensor:
        """View-conditioned ε̂ with CFG (``prompt`` is unused: image-conditioned)."""
        ref = self._require_reference()
        context = self.pipe.conditioning(ref["embedding"], self.poses(cameras).to(noisy.device))
        return self.pipe.predict_noise(noisy, t, context, ref["latent"], self.guidance_scale()).float()
