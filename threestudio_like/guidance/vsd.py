"""Variational Score Distillation (ProlificDreamer): a frozen prior against a LoRA that learns
the score of the current renders.

Design: **one UNet, adapters on/off** (no copy — a second SD UNet would cost ~1.7 GB in fp16).
peft LoRA layers (rank 4 on ``to_q/to_k/to_v/to_out.0``) are added to the prior's UNet and are
*disabled* except inside :meth:`VariationalScoreDistillation.lora_branch`, which also installs
the trainable camera embedding (``TimestepEmbedding`` 16 → time-embedding dim, last layer
zero-initialised so the LoRA branch starts equal to the prior) as the UNet's
``class_embedding``: the flattened c2w is added to the time embedding (ProlificDreamer's
camera condition). On a camera-conditioned prior the prior's own class embedding still sees the
true camera and the trainable one is added to it.

Per call, for renders (B,H,W,3) in [0,1]:

1. z = latents; t ~ U[t_min, t_max]; z_t = √ᾱ z + √(1−ᾱ) ε;
2. ε_pretrained: prior with CFG ``guidance_scale`` (7.5) on the view-dependent prompt;
   ε_lora: LoRA branch with the view-independent prompt and the camera (CFG
   ``guidance_scale_lora`` over a zeroed camera; 1 = camera-conditioned only);
3. grad = w(t)(ε_pretrained − ε_lora) (ε_pretrained's x̂₀ clamped with ``denoised_clip``), clipped,
   NaN → 0; loss = ½‖z − (z − grad).detach()‖² / B;
4. (training mode) one LoRA step: diffusion loss on the detached z at t ~ U[0, T), cameras
   dropped to zero with probability ``camera_dropout``; own AdamW; ``extras["loss_lora"]``.

Only the LoRA and camera-embedding weights are registered submodules, so ``parameters()`` and
``state_dict()`` hold just the trainable state; the optimizer's state is
:meth:`optimizer_state_dict` / :meth:`load_optimizer_state_dict`. Trainable weights stay fp32
(also when the prior runs in fp16 on CUDA).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.config import Configurable
from ..core.errors import UserError
from ..core.schedule import Updateable, schedule_value
from ..data.cameras import CameraBatch
from ..prompt.processor import PromptEmbeddings
from .base import GuidanceOutput
from .diffusion import (
    DistillationConfig, add_noise, check_weighting, clamp_denoised, classifier_free_guidance, distillation_gradient, sample_timesteps, scheduled_grad_clip, scheduled_step_range, sds_loss,
)
from .pretrained import DiffusionPrior, load_diffusion_prior

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


class CameraClassEmbedding(nn.Module):
    """The UNet's ``class_embedding`` on the LoRA branch: labels (B,16) = c2w → trainable MLP;
    with a camera-conditioned prior, labels (B,32) = [true c2w, dropped c2w] → prior's own
    embedding of the first half + trainable MLP of the second."""

    def __init__(self, trainable: nn.Module, base: Optional[nn.Module]) -> None:
        super().__init__()
        self.trainable = trainable
        self.base = base

    def forward(self, labels: Tensor) -> Tensor:
        if self.base is None:
            return self.trainable(labels.float())
        base_dtype = next(self.base.parameters()).dtype
        return self.base(labels[:, :16].to(base_dtype)).float() + self.trainable(labels[:, 16:].float())


class VariationalScoreDistillation(Configurable, Updateable, nn.Module):
    """``__call__(rgb (B,H,W,3) in [0,1], prompt, cameras) -> GuidanceOutput(name="vsd")``."""

    @dataclass
    class Config(DistillationConfig):
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        """Diffusers pipeline directory or hub id (resolved from the local HF cache only)."""
        guidance_scale: Any = 7.5
        """CFG scale of the pretrained branch (ProlificDreamer: 7.5); number or schedule."""
        guidance_scale_lora: float = 1.0
        """CFG of the LoRA branch over a zeroed camera (1 = camera-conditioned prediction only)."""
        rgb_as_latents: bool = False
        """The render's channels are latents: resized to the UNet size, no VAE."""
        half_precision: bool = True
        """fp16 prior weights on CUDA (fp32 on CPU; LoRA and camera embedding always fp32)."""
        lora_rank: int = 4
        """LoRA rank on the attention projections."""
        lora_alpha: float = 4.0
        """LoRA scale numerator (scaling = alpha / rank)."""
        lora_lr: float = 1.0e-3
        """AdamW learning rate of the LoRA and camera embedding (threestudio uses 1e-4)."""
        lora_weight_decay: float = 0.0
        """AdamW weight decay of the LoRA optimizer."""
        lora_n_timestamp_samples: int = 1
        """Timesteps sampled per render for each LoRA step."""
        camera_dropout: float = 0.1
        """Probability of replacing a camera by zeros while training the LoRA (enables its CFG)."""
        enable_memory_efficient_attention: bool = False
        """xformers attention when installed on CUDA (torch SDPA, already memory-efficient, otherwise)."""
        enable_channels_last: bool = False
        """UNet weights in channels-last memory format."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        nn.Module.__init__(self)
        c = self.parse_config(cfg, where)
        check_weighting(c.weighting, where)
        if not 0.0 <= c.camera_dropout <= 1.0:
            raise UserError(f"{where}.camera_dropout must be in [0, 1], got {c.camera_dropout}")
        prior = load_diffusion_prior(c.pretrained_model_name_or_path, c.half_precision)
        unet = prior.unet
        if not (unet.class_embedding is None or prior.camera_conditioned):
            raise UserError(f"{where}: VSD needs a UNet without class embedding or with a 16-d camera projection "
                            f"(this one has class_embed_type={unet.config.class_embed_type!r})")
        self.__dict__["prior"] = prior  # frozen: kept out of parameters()/state_dict()
        from diffusers.models.embeddings import TimestepEmbedding
        from peft import LoraConfig
        from peft.tuners.tuners_utils import BaseTunerLayer

        unet.add_adapter(LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, target_modules=LORA_TARGETS))
        lora_modules = {name: m for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer)}
        self.__dict__["_lora_modules"] = list(lora_modules.values())  # switched by lora_branch()
        self._switch_adapters(False)
        self.lora_layers = nn.ModuleDict({
            name.replace(".", "__"): nn.ModuleDict({"A": m.lora_A, "B": m.lora_B}) for name, m in lora_modules.items()
        })
        time_dim = unet.time_embedding.linear_1.out_features
        self.camera_embedding = TimestepEmbedding(16, time_dim)
        nn.init.zeros_(self.camera_embedding.linear_2.weight)
        nn.init.zeros_(self.camera_embedding.linear_2.bias)
        self.__dict__["class_embedding"] = CameraClassEmbedding(self.camera_embedding, unet.class_embedding)
        self._optimizer: Optional[torch.optim.AdamW] = None
        self._step = 0
        self._in_lora_branch = False

    prior: DiffusionPrior
    class_embedding: CameraClassEmbedding

    def to(self, *args: Any, **kwargs: Any) -> "VariationalScoreDistillation":
        """Place the prior on the device in its weights dtype; trainable weights stay fp32."""
        device, _, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is None:
            return self
        self.prior.to(device)
        if self.cfg.enable_channels_last:
            self.prior.enable_channels_last()
        if self.cfg.enable_memory_efficient_attention:
            self.prior.enable_memory_efficient_attention()
        return nn.Module.to(self, device=device, dtype=torch.float32)

    # ---- checkpoints -------------------------------------------------------------------------
    @property
    def lora_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the LoRA + camera embedding, created on first use (after ``.to(device)``)."""
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(self.parameters(), lr=self.cfg.lora_lr,
                                                weight_decay=self.cfg.lora_weight_decay)
        return self._optimizer

    def optimizer_state_dict(self) -> dict[str, Any]:
        return self.lora_optimizer.state_dict()

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        self.lora_optimizer.load_state_dict(state)

    # ---- schedules ---------------------------------------------------------------------------
    def on_update_step(self, epoch: int, global_step: int) -> None:
        self._step = global_step

    def step_range(self) -> tuple[int, int]:
        """Inclusive (t_min, t_max) at the current training step."""
        return scheduled_step_range(self.cfg, self.prior.num_train_timesteps, self._step)

    # ---- the two branches --------------------------------------------------------------------
    @contextmanager
    def lora_branch(self) -> Iterator[None]:
        """Within: the UNet runs with the LoRA adapters and the camera class embedding.
        Re-entrant: only the outermost exit switches back to the prior."""
        if self._in_lora_branch:
            yield
            return
        unet = self.prior.unet
        original = unet.class_embedding
        self._switch_adapters(True)
        unet.class_embedding = self.class_embedding
        self._in_lora_branch = True
        try:
            yield
        finally:
            self._in_lora_branch = False
            unet.class_embedding = original
            self._switch_adapters(False)

    def _switch_adapters(self, enabled: bool) -> None:
        """peft's per-layer switch (as ``unet.enable_adapters()`` without walking the whole UNet);
        it also sets the LoRA weights' ``requires_grad`` — backward must run inside the branch."""
        for m in self._lora_modules:
            m.enable_adapters(enabled)

    def camera_labels(self, c2w: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """(B,4,4) cameras → LoRA-branch class labels (B,16) or (B,32) (see
        :class:`CameraClassEmbedding`); ``keep`` (B,) bool zeroes the dropped cameras."""
        cam = c2w.reshape(c2w.shape[0], 16).float()
        dropped = cam if keep is None else cam * keep.view(-1, 1).to(cam)
        return dropped if self.class_embedding.base is None else torch.cat([cam, dropped], dim=1)

    def pretrained_noise(self, noisy: Tensor, t: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch) -> Tensor:
        """ε_pretrained (B,C,h,w): the frozen prior, CFG ``guidance_scale``, view-dependent prompt."""
        cond, uncond = prompt.get_text_embeddings(cameras.elevation, cameras.azimuth)
        labels = self.prior.class_labels(cameras.c2w)
        eps = self.prior.predict_epsilon(torch.cat([noisy, noisy]), torch.cat([t, t]), torch.cat([cond, uncond]),
                                         None if labels is None else torch.cat([labels, labels]))
        b = noisy.shape[0]
        return classifier_free_guidance(eps[:b], eps[b:], float(schedule_value(self.cfg.guidance_scale, self._step)))

    def lora_noise(self, noisy: Tensor, t: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch) -> Tensor:
        """ε_lora (B,C,h,w): LoRA branch, view-independent prompt, the cameras (CFG over zeroed ones)."""
        b = noisy.shape[0]
        cond, _ = prompt.get_text_embeddings(cameras.elevation, cameras.azimuth, view_dependent=False)
        labels = self.camera_labels(cameras.c2w)
        scale = self.cfg.guidance_scale_lora
        with self.lora_branch():
            if scale == 1.0:
                return self.prior.predict_epsilon(noisy, t, cond, labels)
            zero = self.camera_labels(cameras.c2w, keep=torch.zeros(b, dtype=torch.bool, device=noisy.device))
            eps = self.prior.predict_epsilon(torch.cat([noisy, noisy]), torch.cat([t, t]), torch.cat([cond, cond]),
                                             torch.cat([labels, zero]))
        return classifier_free_guidance(eps[:b], eps[b:], scale)

    def lora_loss(self, latents: Tensor, text: Tensor, labels: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Diffusion loss of the LoRA branch: mean ‖UNet_lora(z_t, t, text, labels) − target‖²
        (target ε, v or x₀ per the prior's parameterization). Differentiable in the trainable weights."""
        noisy = self.prior.scheduler.add_noise(latents, noise, t)
        target = self.prior.training_target(latents, noise, t)
        with self.lora_branch():
            pred = self.prior.predict(noisy, t, text, labels)
            return F.mse_loss(pred, target.float())

    def train_lora(self, latents: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch) -> Tensor:
        """One AdamW step of the LoRA + camera embedding on detached latents (B,C,h,w); returns the loss."""
        n, b = self.cfg.lora_n_timestamp_samples, latents.shape[0]
        z = latents.detach().repeat(n, 1, 1, 1)
        t = sample_timesteps(b * n, 0, self.prior.num_train_timesteps - 1, device=z.device)
        cond, _ = prompt.get_text_embeddings(cameras.elevation, cameras.azimuth, view_dependent=False)
        keep = torch.rand(b, device=z.device) >= self.cfg.camera_dropout
        labels = self.camera_labels(cameras.c2w, keep).repeat(n, 1)
        # backward inside the branch: peft's adapter switch also switches requires_grad
        with torch.enable_grad(), self.lora_branch():
            loss = self.lora_loss(z, cond.repeat(n, 1, 1), labels, t, torch.randn_like(z))
            self.lora_optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.lora_optimizer.step()
        return loss.detach()

    # ---- the guidance ------------------------------------------------------------------------
    def forward(self, rgb: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch, rgb_as_latents: bool = False,
                noise: Optional[Tensor] = None, timesteps: Optional[Tensor] = None) -> GuidanceOutput:
        """``rgb`` (B,H,W,3) in [0,1] at ``cameras`` (B) → VSD loss; trains the LoRA once when in
        training mode. ``noise`` (B,C,h,w) / ``timesteps`` (B,) may be given (tests)."""
        if prompt is None:
            raise UserError("VSD guidance needs text embeddings: configure a prompt_processor")
        prior = self.prior
        # 1. latents, timesteps, noise
        latents = prior.encode(rgb, rgb_as_latents or self.cfg.rgb_as_latents)
        timesteps, noise, noisy = add_noise(latents, prior.scheduler, self.step_range(), noise, timesteps)
        # 2. the two scores
        with torch.no_grad():
            eps_pretrained = self.pretrained_noise(noisy, timesteps, prompt, cameras)
            eps_lora = self.lora_noise(noisy, timesteps, prompt, cameras)
        # 3. the VSD gradient and the loss whose gradient it is
        alphas = prior.alphas_cumprod.to(latents.device)[timesteps]
        eps_pretrained = clamp_denoised(eps_pretrained, noisy.float(), alphas, self.cfg.denoised_clip)
        clip = scheduled_grad_clip(self.cfg, self._step)
        grad = distillation_gradient(eps_pretrained - eps_lora, alphas, self.cfg.weighting, clip)
        extras: dict[str, Tensor] = {}
        # 4. fit the LoRA to the current renders
        if self.training:
            extras["loss_lora"] = self.train_lora(latents, prompt, cameras)
        return GuidanceOutput(loss=sds_loss(latents, grad), name="vsd", grad_norm=grad.norm().detach(),
                              timesteps=timesteps, extras=extras)
