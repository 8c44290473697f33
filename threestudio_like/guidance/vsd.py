"""Variational Score Distillation (ProlificDreamer): a frozen prior against a LoRA that learns
the score of the current renders.

Design: **one UNet, adapters on/off** (no copy — a second SD UNet would cost ~1.7 GB in fp16).
peft LoRA layers (rank 4 on ``to_q/to_k/to_v/to_out.0``) are added to the prior's UNet and are
*disabled* except inside :meth:`VariationalScoreDistillation.lora_branch`, which also installs
the trainable camera embedding (``TimestepEmbedding`` 16 → time-embedding dim, by default last
layer zero-initialised so the LoRA branch starts equal to the prior) as the UNet's
``class_embedding``: the flattened c2w is added to the time embedding (ProlificDreamer's
camera condition). On a camera-conditioned prior the prior's own class embedding still sees the
true camera and the trainable one is added to it.

The step is SDS's (:mod:`.distillation`) with two steps changed:

* the baseline is ε_lora — the LoRA branch with the view-independent prompt and the camera
  (CFG ``guidance_scale_lora`` over a zeroed camera; 1 = camera-conditioned only) — so
  grad = w(t)(ε_pretrained − ε_lora), ε_pretrained the prior with CFG ``guidance_scale`` (7.5);
* after the gradient (training mode), one LoRA step: diffusion loss on the detached z at
  t ~ U[0, T), cameras dropped to zero with probability ``camera_dropout``; own AdamW;
  ``extras["loss_lora"]``.

Only the LoRA and camera-embedding weights are registered submodules (the LoRA layers live in
the prior's UNet, which is no submodule), so ``parameters()`` and
``state_dict()`` hold just the trainable state; the optimizer's state is
:meth:`optimizer_state_dict` / :meth:`load_optimizer_state_dict`. Trainable weights stay fp32
(also when the prior runs in fp16 on CUDA).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Iterator, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.config import NonNegativeFloat, PositiveFloat, PositiveInt, Probability, Range, Schedule
from ..core.errors import UserError
from ..data.cameras import CameraBatch
from ..prompt.processor import PromptEmbeddings
from .diffusion import classifier_free_guidance, sample_timesteps
from .distillation import NoisyPoint
from .sds import ScoreDistillationGuidance

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


class VariationalScoreDistillation(ScoreDistillationGuidance):
    """``guidance(rgb (B,H,W,3) in [0,1], cameras, prompt) -> GuidanceOutput``."""

    name = "VSD"

    @dataclass
    class Config(ScoreDistillationGuidance.Config):
        guidance_scale: Annotated[Any, Schedule(Range(ge=0))] = 7.5
        """CFG scale of the pretrained branch (ProlificDreamer: 7.5); number or schedule."""
        guidance_scale_lora: float = 1.0
        """CFG of the LoRA branch over a zeroed camera (1 = camera-conditioned prediction only)."""
        half_precision: bool = True
        """fp16 prior weights on CUDA (fp32 on CPU; LoRA and camera embedding always fp32)."""
        lora_rank: PositiveInt = 4
        """LoRA rank on the attention projections."""
        lora_alpha: float = 4.0
        """LoRA scale numerator (scaling = alpha / rank)."""
        lora_init: Literal["peft", "gaussian"] = "peft"
        """Init of the LoRA down-projections A (up-projections B are zero either way): peft's
        default (Kaiming-uniform, std 1/√(3·fan_in)) or normal with std 1/rank (diffusers' LoRA
        layers, threestudio's)."""
        camera_embedding_init: Literal["zero", "default"] = "zero"
        """``zero``: the camera embedding's last layer starts at zero, so the LoRA branch starts
        equal to the prior; ``default``: torch's Linear init (threestudio's)."""
        lora_lr: PositiveFloat = 1.0e-3
        """AdamW learning rate of the LoRA and camera embedding (threestudio: 1e-4)."""
        lora_betas: tuple[float, float] = (0.9, 0.999)
        """AdamW betas of the LoRA optimizer (threestudio: 0.9, 0.99)."""
        lora_eps: PositiveFloat = 1.0e-8
        """AdamW ε of the LoRA optimizer (threestudio: 1e-15)."""
        lora_weight_decay: NonNegativeFloat = 0.0
        """AdamW weight decay of the LoRA optimizer (threestudio: 0.01)."""
        lora_n_timestamp_samples: PositiveInt = 1
        """Timesteps sampled per render for each LoRA step."""
        camera_dropout: Probability = 0.1
        """Probability of replacing a camera by zeros while training the LoRA (enables its CFG)."""

    def __init__(self, cfg: Any = None, where: str = "guidance") -> None:
        super().__init__(cfg, where)
        c = self.cfg
        unet = self.prior.unet
        if not (unet.class_embedding is None or self.prior.camera_conditioned):
            raise UserError(
                f"{where}: VSD needs a UNet without class embedding or with a 16-d camera projection "
                f"(this one has class_embed_type={unet.config.class_embed_type!r})"
            )
        from diffusers.models.embeddings import TimestepEmbedding
        from peft import LoraConfig
        from peft.tuners.tuners_utils import BaseTunerLayer

        init = True if c.lora_init == "peft" else "gaussian"
        unet.add_adapter(
            LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, target_modules=LORA_TARGETS, init_lora_weights=init)
        )
        lora_modules = {name: m for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer)}
        self._lora_modules = list(lora_modules.values())  # a plain list: switched by lora_branch()
        self._switch_adapters(False)
        self.lora_layers = nn.ModuleDict(
            {name.replace(".", "__"): nn.ModuleDict({"A": m.lora_A, "B": m.lora_B}) for name, m in lora_modules.items()}
        )
        time_dim = unet.time_embedding.linear_1.out_features
        self.camera_embedding = TimestepEmbedding(16, time_dim)
        if c.camera_embedding_init == "zero":
            nn.init.zeros_(self.camera_embedding.linear_2.weight)
            nn.init.zeros_(self.camera_embedding.linear_2.bias)
        self._optimizer: Optional[torch.optim.AdamW] = None
        self._in_lora_branch = False

    # ---- checkpoints -------------------------------------------------------------------------
    @property
    def lora_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the LoRA + camera embedding, created on first use (after ``.to(device)``)."""
        if self._optimizer is None:
            c = self.cfg
            self._optimizer = torch.optim.AdamW(
                self.parameters(),
                lr=c.lora_lr,
                betas=tuple(c.lora_betas),
                eps=c.lora_eps,
                weight_decay=c.lora_weight_decay,
            )
        return self._optimizer

    def optimizer_state_dict(self) -> dict[str, Any]:
        return self.lora_optimizer.state_dict()

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        self.lora_optimizer.load_state_dict(state)

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
        unet.class_embedding = CameraClassEmbedding(self.camera_embedding, original)
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
        return torch.cat([cam, dropped], dim=1) if self.prior.camera_conditioned else dropped

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
            eps = self.prior.predict_epsilon(
                torch.cat([noisy, noisy]), torch.cat([t, t]), torch.cat([cond, cond]), torch.cat([labels, zero])
            )
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

    # ---- the steps VSD changes ---------------------------------------------------------------
    def baseline_noise(
        self, latents: Tensor, point: NoisyPoint, prompt: PromptEmbeddings, cameras: CameraBatch
    ) -> Tensor:
        """ε_lora at the noisy point."""
        return self.lora_noise(point.noisy, point.timesteps, prompt, cameras)

    def after_step(self, latents: Tensor, prompt: PromptEmbeddings, cameras: CameraBatch) -> dict[str, Tensor]:
        """Fit the LoRA to the current renders (training mode only)."""
        return {"loss_lora": self.train_lora(latents, prompt, cameras)} if self.training else {}
