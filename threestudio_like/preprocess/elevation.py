"""The elevation of a photo's view, estimated with the Zero123 prior (One-2-3-45's scheme).

Zero123 is conditioned on camera changes *relative* to the input view, so the views it draws do not
depend on the input's elevation ``e``; but the 3D cameras of those views do: turning the azimuth
by ``Δa`` is a sideways orbit for ``e = 0`` and a spin of the image for ``e = 90°``. One-2-3-45
therefore draws a few nearby views once and keeps the candidate ``e`` under which the input and
the drawn views are most consistent geometrically (it matches features; we compare silhouettes):

1. draw ``samples`` views at each relative pose ``(Δe, Δa)`` of ``views`` with the prior (DDIM,
   ``steps`` steps, classifier-free guidance, starting from the white background noised with the
   noise of ``seed``), the reference being the object over white;
2. their silhouettes (:func:`~.visual_hull.object_silhouette`, averaged over the samples) and
   the input's alpha, at the prior's resolution (at most ``resolution``);
3. for each candidate ``e`` in ``elevation_range`` every ``step_deg``, the cameras at
   ``(e, 0)`` and ``(e + Δe, Δa)`` (``distance``, ``fovy_deg``) and the mean silhouette
   consistency of all the views under them (:func:`~.visual_hull.silhouette_consistency`);
4. the candidate with the best consistency.

Stable Zero123's pose embedding holds the input's absolute polar angle, so with it the views are
drawn again for each candidate. With ``align_input`` the prior first draws the input's own view, and
the input is moved and scaled onto it before the views are drawn from it (see the setting). The
estimate is deterministic given the seed (on one device).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.config import Configurable, NonNegativeInt, PositiveFloat, PositiveInt, Range
from ..core.errors import UserError
from ..guidance.pretrained import PRETRAINED_KINDS, pretrained_kind_of
from .models import WeightsDtype, model_dir, torch_device, torch_dtype
from .visual_hull import moment_transform, object_silhouette, silhouette_consistency, warp

NEARBY_VIEWS = [
    [0.0, 45.0],
    [0.0, -45.0],
    [0.0, 90.0],
    [0.0, -90.0],
    [20.0, 0.0],
    [-20.0, 0.0],
    [20.0, 90.0],
    [20.0, -90.0],
]
"""Relative poses ``[Δelevation, Δazimuth]`` (degrees) of the drawn views: sideways turns (the
roll they cause grows with the elevation) and tilts (for objects round about the vertical axis,
which sideways turns leave unchanged)."""


@dataclass
class ElevationEstimate:
    """The estimate and how it was reached; ``float(estimate)`` is the elevation in degrees."""

    elevation_deg: float
    candidates_deg: list[float]
    """The candidate elevations, in order."""
    consistency: list[float]
    """Mean silhouette consistency (soft IoU in [0, 1]) of the views under each candidate."""
    settings: dict[str, Any]
    """The estimator's settings, for the record."""

    def __float__(self) -> float:
        return self.elevation_deg

    def record(self) -> dict[str, Any]:
        return {
            "method": "Zero123 novel views, silhouette consistency over candidate elevations (One-2-3-45's scheme)",
            **self.settings,
            "candidates_deg": self.candidates_deg,
            "consistency": [round(s, 4) for s in self.consistency],
        }


class ElevationEstimator(Configurable):
    """``ElevationEstimator(cfg)(rgba) -> ElevationEstimate`` (see the module docstring); in a run,
    ``prepare.elevation.KEY`` (``prepare=photo``, ``experiment=anything3d``).

    The model is located (json files only) when the estimator is built and loaded only while it
    estimates.
    """

    @dataclass
    class Config:
        model: str = "kxic/zero123-xl-diffusers"
        """The Zero123 prior: a local diffusers directory or a hub id (local Hugging Face cache only)."""
        pose_embedding: Literal["auto", "zero123", "stable_zero123"] = "auto"
        """Zero123's pose conditioning (``auto``: ``stable_zero123`` when the model name contains 'stable')."""
        elevation_range: list[float] = field(default_factory=lambda: [-20.0, 60.0])
        """Lowest and highest candidate elevation, in degrees."""
        step_deg: PositiveFloat = 5.0
        """Spacing of the candidate elevations, in degrees."""
        views: list[list[float]] = field(default_factory=lambda: [list(v) for v in NEARBY_VIEWS])
        """Relative poses ``[Δelevation, Δazimuth]`` (degrees) of the views the prior draws."""
        align_input: bool = False
        """First draw the input's own view (pose ``[0, 0]``) and move and scale the input onto it
        (:func:`~.visual_hull.moment_transform`), then draw the views from the input so framed and
        score its silhouette: for a prior that draws its views in its training framing whatever
        the input's (the toy priors: natural size, the object's origin at the centre) where the
        photo is framed by its bounding box at ``fill``. With Stable Zero123, for each candidate."""
        samples: PositiveInt = 2
        """Views drawn per pose (their silhouettes are averaged)."""
        steps: PositiveInt = 30
        """DDIM steps per view."""
        guidance_scale: Annotated[float, Range(ge=1)] = 3.0
        """Classifier-free guidance scale of the prior."""
        distance: PositiveFloat = 3.8
        """Camera distance the prior's views are drawn at (``experiment=zero123``'s reference camera)."""
        fovy_deg: Annotated[float, Range(gt=0, lt=120)] = 20.0
        """Vertical field of view of those cameras, in degrees."""
        resolution: Annotated[int, Range(ge=8)] = 64
        """Largest silhouette side used for the consistency (the prior's image size if smaller)."""
        ray_samples: Annotated[int, Range(ge=2)] = 48
        """Points per ray of the visual hull."""
        seed: NonNegativeInt = 0
        """Seed of the prior's initial noise."""
        start_from_background: bool = True
        """Start the drawing from the white background noised to the first DDIM timestep (the
        signal a prior trained with a schedule whose last step keeps a little of the image expects)
        instead of from pure noise, from which a pixel-space prior draws tinted backgrounds."""
        device: str = "auto"
        """auto (CUDA when available), cpu, cuda, cuda:N."""
        dtype: WeightsDtype = "auto"
        """Weights dtype; auto: float16 on CUDA, float32 elsewhere."""

    def __init__(self, cfg: Any = None, where: str = "elevation") -> None:
        c = self.parse_config(cfg, where)
        self.where = where
        if len(c.elevation_range) != 2 or c.elevation_range[0] > c.elevation_range[1]:
            raise UserError(f"{where}.elevation_range must be [lowest, highest] degrees, got {c.elevation_range}")
        low, high = c.elevation_range
        if not c.views or any(len(v) != 2 for v in c.views):
            raise UserError(f"{where}.views must be a non-empty list of [Δelevation, Δazimuth] pairs, got {c.views}")
        tilts = [v[0] for v in c.views] + [0.0]
        if low + min(tilts) <= -90 or high + max(tilts) >= 90:
            raise UserError(
                f"{where}: candidate elevations {low:g}…{high:g}° with view tilts {min(tilts):g}…{max(tilts):g}° "
                "reach a pole; narrow elevation_range or the tilts of views"
            )
        self.candidates = [float(e) for e in np.arange(low, high + 1e-6, c.step_deg)]
        self.model_dir = model_dir(c.model, where)
        if pretrained_kind_of(self.model_dir) != "zero123":
            raise UserError(f"{where} '{c.model}' does not hold {PRETRAINED_KINDS['zero123']}")
        self.device = torch_device(c.device, where)
        self.dtype = torch_dtype(c.dtype, self.device)
        kind = c.pose_embedding
        self.pose_kind = ("stable_zero123" if "stable" in c.model.lower() else "zero123") if kind == "auto" else kind

    def __call__(self, rgba: np.ndarray) -> ElevationEstimate:
        """(S,S,4) float RGBA in [0,1], the object centred → the estimate."""
        from ..guidance.zero123_pipeline import Zero123Pipeline

        pipe = Zero123Pipeline.from_pretrained(self.model_dir, torch_dtype=self.dtype).to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return self.estimate(pipe, rgba)

    @torch.no_grad()
    def estimate(self, pipe: Any, rgba: np.ndarray) -> ElevationEstimate:
        """The estimate with a loaded :class:`~..guidance.zero123_pipeline.Zero123Pipeline`."""
        c = self.cfg
        x = torch.as_tensor(np.asarray(rgba, dtype=np.float32)).permute(2, 0, 1)[None].to(self.device)  # (1,4,S,S)
        premultiplied = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1)
        size = min(pipe.image_size, c.resolution)

        def framed(theta: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
            """(the input over white (1,3,S,S), its silhouette (1,size,size)), moved by ``theta``."""
            p = premultiplied if theta is None else warp(premultiplied, theta)
            return p[:, :3] + (1.0 - p[:, 3:]), F.interpolate(p[:, 3:], size=(size, size), mode="area")[:, 0]

        as_given = framed()
        image, reference = as_given
        poses = torch.tensor(c.views, dtype=torch.float32)
        tilts = torch.cat([torch.zeros(1), poses[:, 0]])  # the photo's camera first: (0, 0)
        azimuths = torch.cat([torch.zeros(1), poses[:, 1]])
        views: Optional[Tensor] = None
        scores = []
        for e in self.candidates:
            if views is None or self.pose_kind == "stable_zero123":
                if c.align_input:  # the input in the framing the prior draws its own view of it in
                    own = self.silhouettes(self.draw_views(pipe, as_given[0], torch.zeros(1, 2), e), size)
                    image, reference = framed(moment_transform(as_given[1][0], own[0]))
                views = self.silhouettes(self.draw_views(pipe, image, poses, e), size).to(reference)
            all_views = torch.cat([reference, views])
            consistency = silhouette_consistency(
                all_views, e + tilts, azimuths, c.distance, c.fovy_deg, c.ray_samples
            ).mean()
            scores.append(float(consistency))
        best = int(np.argmax(scores))
        settings = {
            "model": c.model,
            "pose_embedding": self.pose_kind,
            "views": c.views,
            "align_input": c.align_input,
            "samples": c.samples,
            "steps": c.steps,
            "guidance_scale": c.guidance_scale,
            "distance": c.distance,
            "fovy_deg": c.fovy_deg,
            "seed": c.seed,
        }
        return ElevationEstimate(self.candidates[best], list(self.candidates), scores, settings)

    @staticmethod
    def silhouettes(drawn: Tensor, size: int) -> Tensor:
        """(samples,V,3,s,s) drawn views → (V,size,size) their silhouettes, averaged over the samples."""
        silhouettes = object_silhouette(drawn.flatten(0, 1).float()).view(*drawn.shape[:2], *drawn.shape[-2:])
        return F.interpolate(silhouettes.mean(0)[:, None], size=(size, size), mode="area")[:, 0]

    def draw_views(self, pipe: Any, image: Tensor, poses: Tensor, reference_elevation: float) -> Tensor:
        """(samples,V,3,s,s) views in [0,1] of the object of ``image`` (1,3,H,W) at the relative
        ``poses`` (V,2), drawn by DDIM from the seed's noise (added to the white background, see
        ``start_from_background``). Each step moves along the noise
        implied by the (clipped, where the scheduler clips) x̂₀, so that a pixel-space prior's clip
        of x̂₀ is consistent with its step."""
        from diffusers import DDIMScheduler
        from diffusers.utils.torch_utils import randn_tensor

        from ..guidance.zero123_pipeline import relative_pose

        c = self.cfg
        d_elevation, d_azimuth = poses[:, 0].repeat(c.samples), poses[:, 1].repeat(c.samples)
        e = reference_elevation + d_elevation
        pose = relative_pose(e, d_azimuth, torch.zeros_like(e), reference_elevation, 0.0, 0.0, self.pose_kind).to(
            self.device
        )
        context = pipe.conditioning(pipe.encode_image_embedding(image.to(pipe.dtype)), pose)
        ref_latent = pipe.encode_reference_latent(image.to(pipe.dtype))
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(c.steps, device=self.device)
        side = pipe.unet.config.sample_size
        shape = (pose.shape[0], pipe.latent_channels, side, side)
        generator = torch.Generator().manual_seed(c.seed)  # on the CPU: the same noise on every device
        noise = randn_tensor(shape, generator=generator, dtype=torch.float32).to(self.device)
        if c.start_from_background:
            white = pipe.encode_latents(torch.ones_like(image).to(pipe.dtype), generator).float()
            latents = scheduler.add_noise(white.expand(shape), noise, scheduler.timesteps[:1])
        else:
            latents = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            noise = pipe.predict_noise(model_input, t.reshape(1), context, ref_latent, c.guidance_scale).float()
            latents = scheduler.step(noise, t, latents, eta=0.0, use_clipped_model_output=True).prev_sample
        images = pipe.decode_latents(latents.to(pipe.dtype)).float()
        return images.view(c.samples, poses.shape[0], *images.shape[1:])
