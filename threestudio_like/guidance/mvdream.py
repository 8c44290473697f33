"""Score distillation with MVDream's multi-view prior (``guidance=mvdream``), against the Janus
problem: the prior denoises V views of the object at once, camera-conditioned, attending across
them (:mod:`.mvdream_unet`), so a face or a handle cannot read well from every side.

The step is SDS's (:class:`~.sds.ScoreDistillationGuidance` over
:class:`~.distillation.DistillationGuidance`), as threestudio-mvdream's
``multiview_diffusion_guidance.py`` forms it; what differs:

* the renders come in groups of V consecutive views of one camera (``data.n_views``, the
  sampler's), each group sharing one t; the text embedding is the prompt's for every view
  (``view_dependent_prompting`` off: the camera says which side is seen);
* the UNet also takes each view's camera (:func:`~.mvdream_unet.camera_condition`);
* after classifier-free guidance, the guided x̂₀ is rescaled towards the conditional one's
  standard deviation over each group (``guidance_rescale`` φ; the rescale of Lin et al.,
  arXiv 2305.08891, on x̂₀ as threestudio-mvdream's ``recon_std_rescale``):
  x̂₀ ← x̂₀ (φ σ(x̂₀,c)/σ(x̂₀) + 1 − φ), and ε̂ is the noise of that x̂₀ (:func:`rescale_guided_noise`);
* the default weighting ``sigma`` makes the gradient z − x̂₀: threestudio-mvdream's x₀
  reconstruction loss (``recon_loss``).

The VAE and the noise schedule are Stable Diffusion 2.1 base's, which MVDream kept
(``pretrained_model_name_or_path``, any SD pipeline directory or hub id); the text encoder is
the prompt processor's (SD 2.1 base's OpenCLIP); the UNet is MVDream's (``multiview_unet``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import torch
from torch import Tensor

from ..core.config import PositiveInt, Probability, Range, Schedule
from ..core.errors import UserError
from ..data.cameras import CameraBatch
from ..prompt.processor import PromptEmbeddings
from .base import GuidanceOutput
from .diffusion import Weighting, classifier_free_guidance, sample_timesteps
from .distillation import DistillationGuidance, NoisyPoint
from .mvdream_unet import MVDREAM_UNET_CONFIG, camera_condition, load_multiview_unet, locate_multiview_unet
from .pretrained import DiffusionPrior, has_component, load_component, read_model_index, resolve_pretrained_dir
from .sds import ScoreDistillationGuidance


class MultiViewPrior(DiffusionPrior):
    """A :class:`DiffusionPrior` around MVDream's UNet (its views attended jointly): each view
    with its camera (:func:`~.mvdream_unet.camera_condition`), ε-prediction (MVDream's
    ``parameterization: eps``, whatever the SD pipeline's scheduler says)."""

    def __init__(self, unet: Any, scheduler: Any, vae: Any, model_dir: str, half_precision: bool) -> None:
        super().__init__(unet, scheduler, vae, model_dir, half_precision)
        self.prediction_type = "epsilon"

    def class_labels(self, c2w: Tensor) -> Tensor:
        """(B,4,4) cameras → (B,16) MVDream camera inputs."""
        return camera_condition(c2w).to(self.device, self.dtype)

    def enable_memory_efficient_attention(self) -> None:
        """Nothing: the cross-view processors already run torch's memory-efficient
        scaled-dot-product attention (xformers' processors would replace them)."""


def load_multiview_prior(
    sd_name_or_path: str, multiview_unet: str, num_views: int, half_precision: bool = True
) -> MultiViewPrior:
    """MVDream's UNet (:func:`~.mvdream_unet.load_multiview_unet`) with the SD pipeline's
    scheduler (as ``DDPMScheduler``) and VAE if it has one, on CPU; call :meth:`DiffusionPrior.to`.
    UserError when the VAE's latents are not what the UNet takes."""
    from diffusers import AutoencoderKL, DDPMScheduler

    model_dir = resolve_pretrained_dir(sd_name_or_path)
    index = read_model_index(model_dir)
    scheduler = load_component(DDPMScheduler, model_dir, "scheduler")
    vae = load_component(AutoencoderKL, model_dir, "vae") if has_component(index, "vae") else None
    unet = load_multiview_unet(multiview_unet, num_views)
    latent = 3 if vae is None else int(vae.config.latent_channels)
    if latent != int(unet.config.in_channels):
        raise UserError(
            f"the multi-view UNet '{multiview_unet}' takes {unet.config.in_channels}-channel inputs but "
            f"'{sd_name_or_path}' gives {latent}-channel {'images' if vae is None else 'latents'}: "
            f"use Stable Diffusion 2.1 base (stabilityai/stable-diffusion-2-1-base) with MVDream's weights"
        )
    return MultiViewPrior(unet, scheduler, vae, model_dir, half_precision)


def rescale_guided_noise(
    eps: Tensor, eps_cond: Tensor, noisy: Tensor, alphas: Tensor, rescale: float, num_views: int
) -> Tensor:
    """ε̂ (B·V,C,h,w) whose x̂₀ = (z_t − √(1−ᾱ) ε̂)/√ᾱ is rescaled towards the conditional x̂₀'s
    spread: with σ and σ_c the standard deviations of the guided and conditional x̂₀ over each
    group of ``num_views`` views, x̂₀' = x̂₀ (φ (σ_c + 10⁻⁸)/(σ + 10⁻⁸) + 1 − φ) and
    ε̂' = (z_t − √ᾱ x̂₀')/√(1−ᾱ). ``alphas``: ᾱ_t (B·V,); φ = ``rescale`` (0: ``eps`` unchanged)."""
    if rescale == 0:
        return eps
    a = alphas.view(-1, *([1] * (eps.ndim - 1))).to(eps)
    x0 = (noisy - (1.0 - a).sqrt() * eps) / a.sqrt()
    x0_cond = (noisy - (1.0 - a).sqrt() * eps_cond) / a.sqrt()
    groups = x0.shape[0] // num_views
    ratio = (x0_cond.reshape(groups, -1).std(dim=1) + 1e-8) / (x0.reshape(groups, -1).std(dim=1) + 1e-8)
    factor = (rescale * ratio + 1.0 - rescale).repeat_interleave(num_views).view_as(a)
    return (noisy - a.sqrt() * (x0 * factor)) / (1.0 - a).sqrt()


class MultiViewDiffusionGuidance(ScoreDistillationGuidance):
    """``guidance(rgb (B·V,H,W,3) in [0,1], cameras (B·V), prompt) -> GuidanceOutput`` for groups
    of V consecutive views of one camera (see module docstring)."""

    name = "MVDream"

    @dataclass
    class Config(ScoreDistillationGuidance.Config):
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        """Stable Diffusion 2.1 base pipeline directory or hub id (local HF cache only): its VAE and
        noise schedule, which MVDream kept."""
        multiview_unet: str = "MVDream/MVDream"
        """MVDream's UNet: ``sd-v2.1-base-4view.pt``, a directory holding it or its conversion to
        diffusers' layout, or a hub id (local HF cache only)."""
        num_views: PositiveInt = 4
        """Views denoised together (MVDream's ``num_frames``; its checkpoint was trained with 4)."""
        guidance_scale: Annotated[Any, Schedule(Range(ge=0))] = 50.0
        """Classifier-free guidance scale (threestudio-mvdream: 50)."""
        guidance_rescale: Probability = 0.5
        """φ of the x̂₀ std rescale after CFG (threestudio-mvdream's ``recon_std_rescale`` 0.5; 0 = off)."""
        weighting: Weighting = "sigma"
        """w(t); ``sigma`` (√((1−ᾱ)/ᾱ)) gives the gradient z − x̂₀, threestudio-mvdream's ``recon_loss``."""
        view_dependent_prompting: bool = False
        """Append ", front/side/back view" to each view's prompt (threestudio-mvdream: off)."""

    @classmethod
    def check_weights(cls, cfg: dict[str, Any], where: str) -> None:
        """MVDream's UNet is where ``multiview_unet`` says (run before anything is written)."""
        try:
            locate_multiview_unet(str(cfg.get("multiview_unet", cls.Config.multiview_unet)))
        except UserError as e:
            raise UserError(f"{where}.multiview_unet: {e}") from None

    @classmethod
    def denoiser_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """The architecture of the UNet this guidance denoises with — MVDream's, not the Stable
        Diffusion pipeline's (its 32² latents set the render's encoded size: 256²); read without
        loading weights (the memory estimate's hook)."""
        path, converted = locate_multiview_unet(str(cfg.get("multiview_unet", cls.Config.multiview_unet)))
        if converted:
            with open(os.path.join(path, "config.json")) as f:
                return json.load(f)
        return dict(MVDREAM_UNET_CONFIG)

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        # SDS's own __init__ would load a Stable Diffusion UNet; the rest of SDS is used as is.
        DistillationGuidance.__init__(self, cfg, where)
        c = self.cfg
        self.prior: MultiViewPrior = load_multiview_prior(
            c.pretrained_model_name_or_path, c.multiview_unet, c.num_views, c.half_precision
        )

    def check_inputs(self, prompt: Any) -> None:
        super().check_inputs(prompt)
        if self.cfg.use_perp_neg or prompt.use_perp_neg:
            raise UserError(f"{self.where}: MVDream guidance does not combine with Perp-Neg: set use_perp_neg=false")
        width, needed = int(prompt.cond.shape[-1]), int(self.prior.unet.config.cross_attention_dim)
        if width != needed:
            raise UserError(
                f"{self.where}: MVDream's UNet takes {needed}-wide text embeddings, the prompt processor gives "
                f"{width}-wide ones: use prompt_processor=text with Stable Diffusion 2.1 base"
            )

    def check_views(self, cameras: CameraBatch) -> None:
        """UserError unless the batch is whole groups of V views of one camera each (same
        elevation and distance)."""
        v, b = self.cfg.num_views, cameras.batch_size
        if b % v:
            raise UserError(
                f"{self.where}: MVDream scores groups of {v} views; the batch has {b}: "
                f"set data.n_views={v} and data.batch_size to a multiple of {v}"
            )
        for name in ("elevation", "distance"):
            groups = getattr(cameras, name).reshape(-1, v)
            if (groups.amax(1) - groups.amin(1)).max() > 1e-4 * max(1.0, float(groups.abs().max())):
                raise UserError(
                    f"{self.where}: each group of {v} renders must be views of one camera (their {name}s "
                    f"differ): sample them with data.n_views={v}"
                )

    def forward(
        self,
        rgb: Tensor,
        cameras: Any,
        prompt: Any = None,
        noise: Optional[Tensor] = None,
        timesteps: Optional[Tensor] = None,
    ) -> GuidanceOutput:
        """As SDS's, for groups of V views (``timesteps`` (B·V,), when given, hold one t per group)."""
        self.check_views(cameras)
        return super().forward(rgb, cameras, prompt, noise, timesteps)

    def noisy_point(
        self, latents: Tensor, prompt: Any, cameras: Any, noise: Optional[Tensor], timesteps: Optional[Tensor]
    ) -> NoisyPoint:
        """One t per group of views, uniform in :meth:`step_range`."""
        if timesteps is None:
            v = self.cfg.num_views
            timesteps = sample_timesteps(latents.shape[0] // v, *self.step_range(), device=latents.device)
            timesteps = timesteps.repeat_interleave(v)
        return super().noisy_point(latents, prompt, cameras, noise, timesteps)

    def guided_noise(self, noisy: Tensor, t: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch) -> Tensor:
        """ε̂ (B·V,C,h,w) fp32: one UNet call on [cond (B·V); uncond (B·V)] — groups of V stay
        consecutive — then CFG and the x̂₀ rescale."""
        b = noisy.shape[0]
        cond, uncond = prompt.get_text_embeddings(
            cameras.elevation, cameras.azimuth, view_dependent=self.cfg.view_dependent_prompting
        )
        views = torch.arange(b, device=noisy.device)
        rows = torch.cat([views, views])
        camera = self.prior.class_labels(cameras.c2w)
        text = torch.cat([cond, uncond]).to(noisy.device)
        eps = self.prior.predict_epsilon(noisy[rows], t[rows], text, camera[rows])
        eps_cond, eps_uncond = eps[:b], eps[b:]
        guided = classifier_free_guidance(eps_cond, eps_uncond, self.guidance_scale(), self.cfg.cfg_form)
        alphas = self.prior.alphas_cumprod[t]
        return rescale_guided_noise(
            guided, eps_cond, noisy.float(), alphas, self.cfg.guidance_rescale, self.cfg.num_views
        )
