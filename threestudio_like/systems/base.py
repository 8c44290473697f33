"""The one training-step skeleton every method is composed from.

A *stage* of an experiment (DreamFusion's only stage, Magic3D's coarse and refine stages,
ProlificDreamer's three) is a :class:`ScoreDistillationSystem` built from the stage's
resolved config: a geometry, a material, a background, a renderer, a camera sampler, a
guidance with its prompt, and loss terms. Methods differ by composition and loss weights,
not by subclassing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.config import Configurable, instantiate, to_container
from ..core.errors import UserError
from ..core.schedule import Updateable, schedule_value
from ..data.cameras import CameraBatch, RandomCameraSampler  # noqa: F401  (type of self.data)
from ..renderers.base import RenderOutput


@dataclass
class StepContext:
    """What a loss term may look at: the step's cameras and render, the system, the step."""

    system: "ScoreDistillationSystem"
    cameras: CameraBatch
    render: RenderOutput
    global_step: int


class ScoreDistillationSystem(Configurable, Updateable, nn.Module):
    """One stage: render random views, score them with the guidance, add regularizers."""

    @dataclass
    class Config:
        steps: int = 1000
        """Training steps of this stage."""
        data: dict = field(default_factory=dict)
        """Camera sampler config (``data/cameras.py`` RandomCameraSampler)."""
        geometry: dict = field(default_factory=dict)
        """Geometry component (``_target_`` + its Config)."""
        geometry_init: str = "scratch"
        """``scratch`` or ``previous`` (``create_from`` the previous stage's geometry)."""
        material: dict = field(default_factory=dict)
        """Material component."""
        background: dict = field(default_factory=dict)
        """Background component."""
        renderer: dict = field(default_factory=dict)
        """Renderer component."""
        guidance: Optional[dict] = None
        """Guidance component (SDS, VSD, Zero123...) or null."""
        guidance_input: str = "rgb"
        """What the guidance scores: ``rgb`` or ``normal`` (geometry-refinement stages)."""
        prompt_processor: Optional[dict] = None
        """Prompt processor component (text guidance) or null."""
        terms: dict = field(default_factory=dict)
        """Loss terms by name (regularizers, reference-view losses, extra guidance)."""
        loss: dict = field(default_factory=dict)
        """Weight (number or schedule) of every loss name the guidance and terms return."""
        optimizer: dict = field(default_factory=dict)
        """Optimizer: name (Adam|AdamW), lr, betas, eps, weight_decay, params {prefix: {lr}}."""
        lr_scheduler: Optional[dict] = None
        """Optional LR schedule: {name: constant|cosine|exponential, warmup_steps, gamma}."""
        clip_grad_norm: Optional[float] = None
        """Clip the global gradient norm (null = off)."""
        val_every: int = 0
        """Render validation views every N steps (0 = at the end of the stage only)."""

    def __init__(self, cfg: Any, where: str = "stage", previous: Optional["ScoreDistillationSystem"] = None) -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.where = where
        c = self.cfg
        self.data: RandomCameraSampler = instantiate(c.data, where=f"{where}.data")
        self.geometry = self._build_geometry(previous)
        self.material = instantiate(c.material, where=f"{where}.material")
        self.background = instantiate(c.background, where=f"{where}.background")
        if previous is not None:
            _carry_state(previous.material, self.material)
            _carry_state(previous.background, self.background)
        self.renderer = instantiate(c.renderer, where=f"{where}.renderer")
        self.terms = nn.ModuleDict({
            name: instantiate(t, where=f"{where}.terms.{name}", name=name)
            for name, t in c.terms.items() if t is not None
        })
        # Guidance and prompt hold frozen pretrained models: plain attributes (not submodules),
        # so checkpoints hold only their trainable state; built by setup_guidance().
        self.guidance: Any = None
        self.prompt: Any = None
        self.global_step = 0

    # ---- construction ------------------------------------------------------------------
    def _build_geometry(self, previous: Optional["ScoreDistillationSystem"]) -> nn.Module:
        c, where = self.cfg, f"{self.where}.geometry"
        if c.geometry_init == "scratch" or previous is None:
            if c.geometry_init not in ("scratch", "previous"):
                raise UserError(f"{self.where}.geometry_init must be 'scratch' or 'previous', got '{c.geometry_init}'")
            return instantiate(c.geometry, where=where)
        from ..core.config import import_target

        data = dict(to_container(c.geometry))
        cls = import_target(data.pop("_target_"))
        return cls.create_from(previous.geometry, data, where=where)

    def setup_guidance(self) -> None:
        """Load the guidance and the prompt embeddings (heavy; only for stages that train)."""
        c = self.cfg
        reference = next((t for t in self.terms.values() if hasattr(t, "reference_image")), None)
        guidance, prompt = build_guidance(c.guidance, c.prompt_processor, self.device, reference, self.where)
        # plain attributes, not submodules: checkpoints must not hold the frozen pretrained weights
        object.__setattr__(self, "guidance", guidance)
        object.__setattr__(self, "prompt", prompt)
        for term in self.terms.values():
            if hasattr(term, "setup_guidance"):
                term.setup_guidance(self.device, reference)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # ---- training ----------------------------------------------------------------------
    def on_update_step(self, epoch: int, global_step: int) -> None:
        self.global_step = global_step

    def render(self, cameras: CameraBatch, shading: str = "diffuse") -> RenderOutput:
        return self.renderer(cameras, self.geometry, self.material, self.background, shading=shading)

    def training_step(self, global_step: int) -> dict[str, Tensor]:
        """One step; returns every weighted loss term and ``loss`` (their sum)."""
        # 1. sample this step's cameras
        cameras = self.data.sample(dtype=torch.float32, device=self.device)
        # 2. render them (shading augmentation chosen by the material)
        shading = self.material.training_shading(global_step)
        render = self.render(cameras, shading=shading)
        terms: dict[str, Tensor] = {}
        logs: dict[str, Tensor] = {}
        # 3. score the renders with the guidance
        if self.guidance is not None:
            image = render.rgb if self.cfg.guidance_input == "rgb" else _normal_image(render)
            out = self.guidance(rgb=image, cameras=cameras, prompt=self.prompt)
            terms[out.name] = out.loss
            if out.grad_norm is not None:
                logs[f"{out.name}_grad_norm"] = out.grad_norm
            logs.update({k: v.detach() for k, v in out.extras.items()})
        # 4. regularizers and other loss terms
        ctx = StepContext(system=self, cameras=cameras, render=render, global_step=global_step)
        for term in self.terms.values():
            terms.update(term(ctx))
        # 5. weight and sum
        total = self._weighted_sum(terms, global_step, logs)
        return {"loss": total, **logs}

    def _weighted_sum(self, terms: dict[str, Tensor], step: int, logs: dict[str, Tensor]) -> Tensor:
        total: Optional[Tensor] = None
        for name, value in terms.items():
            if name not in self.cfg.loss:
                raise UserError(
                    f"{self.where}.loss has no weight for the loss term '{name}'; add "
                    f"{self.where}.loss.{name}=<weight> (0 disables it)"
                )
            weight = float(schedule_value(self.cfg.loss[name], step))
            logs[f"loss_{name}"] = value.detach()
            if weight != 0.0:
                total = value * weight if total is None else total + value * weight
        if total is None:
            raise UserError(f"{self.where}: every loss weight is 0 or no loss term is configured")
        return total

    def configure_optimizer(self) -> tuple[torch.optim.Optimizer, Optional[torch.optim.lr_scheduler.LRScheduler]]:
        opt_cfg = dict(self.cfg.optimizer)
        name = opt_cfg.pop("name", "Adam")
        lr = opt_cfg.pop("lr", 1e-2)
        groups_cfg = opt_cfg.pop("params", {}) or {}
        if name not in ("Adam", "AdamW"):
            raise UserError(f"{self.where}.optimizer.name must be Adam or AdamW, got '{name}'")
        groups: dict[str, list] = {prefix: [] for prefix in groups_cfg}
        groups[""] = []
        for pname, p in self.named_parameters():
            if not p.requires_grad:
                continue
            match = max((pre for pre in groups_cfg if pname.startswith(pre)), key=len, default="")
            groups[match].append(p)
        param_groups = [{"params": ps, "lr": (groups_cfg[pre] or {}).get("lr", lr) if pre else lr, "name": pre or "default"}
                        for pre, ps in groups.items() if ps]
        if self.guidance is not None and hasattr(self.guidance, "trainable_parameter_groups"):
            param_groups += self.guidance.trainable_parameter_groups()
        if not param_groups:
            raise UserError(f"{self.where}: nothing to optimize (all parameters frozen)")
        cls = torch.optim.Adam if name == "Adam" else torch.optim.AdamW
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in opt_cfg.items()}
        optimizer = cls(param_groups, lr=lr, **kwargs)
        return optimizer, self._lr_scheduler(optimizer)

    def _lr_scheduler(self, optimizer: torch.optim.Optimizer) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
        s = self.cfg.lr_scheduler
        if not s:
            return None
        kind, warmup, steps = s.get("name", "constant"), int(s.get("warmup_steps", 0)), self.cfg.steps
        gamma = float(s.get("gamma", 0.1))

        def factor(step: int) -> float:
            w = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
            a = min(1.0, step / max(steps, 1))
            if kind == "constant":
                return w
            if kind == "cosine":
                return w * 0.5 * (1 + math.cos(math.pi * a))
            if kind == "exponential":
                return w * gamma**a
            raise UserError(f"{self.where}.lr_scheduler.name must be constant|cosine|exponential, got '{kind}'")

        factor(0)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # ---- checkpoints -------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"system": self.state_dict()}
        g = self.guidance
        if g is not None and any(p.requires_grad for p in g.parameters()):
            state["guidance"] = g.state_dict()
            if hasattr(g, "optimizer_state_dict"):
                state["guidance_optimizer"] = g.optimizer_state_dict()
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["system"])
        if "guidance" in state and self.guidance is not None:
            self.guidance.load_state_dict(state["guidance"])
            if "guidance_optimizer" in state and hasattr(self.guidance, "load_optimizer_state_dict"):
                self.guidance.load_optimizer_state_dict(state["guidance_optimizer"])

    # ---- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def render_views(self, cameras: CameraBatch, shading: str = "diffuse", chunk: int = 4) -> dict[str, Tensor]:
        """Render cameras in eval mode → {"rgb", "normal", "opacity"} each (B,H,W,3) in [0,1]."""
        was_training = self.training
        self.eval()
        out: dict[str, list[Tensor]] = {"rgb": [], "normal": [], "opacity": []}
        try:
            for i in range(0, cameras.batch_size, chunk):
                r = self.render(cameras.index(slice(i, i + chunk)), shading=shading)
                out["rgb"].append(r.rgb)
                out["normal"].append(_normal_image(r))
                out["opacity"].append(r.opacity.expand(*r.opacity.shape[:-1], 3))
        finally:
            self.train(was_training)
        return {k: torch.cat(v, 0).clamp(0, 1) for k, v in out.items()}


def build_guidance(guidance_cfg: Optional[dict], prompt_cfg: Optional[dict], device: torch.device,
                   reference: Any, where: str) -> tuple[Any, Any]:
    """Instantiate a guidance (and its prompt embeddings) on ``device``; hand it the input image
    when it conditions on one (``set_reference(rgb, elevation_deg, azimuth_deg, distance)``)."""
    prompt = None
    if prompt_cfg is not None:
        processor = instantiate(prompt_cfg, where=f"{where}.prompt_processor")
        prompt = processor(device=device)
    if guidance_cfg is None:
        return None, prompt
    guidance = instantiate(guidance_cfg, where=f"{where}.guidance")
    guidance.to(device)
    if reference is not None and hasattr(guidance, "set_reference"):
        guidance.set_reference(*reference.reference_image())
    return guidance, prompt


def _normal_image(render: RenderOutput) -> Tensor:
    """World normals as an image: (n+1)/2 over a white background (B,H,W,3)."""
    if render.normal is None:
        return torch.ones_like(render.rgb)
    n = (nn.functional.normalize(render.normal, dim=-1) + 1.0) / 2.0  # volume normals are Σw·n
    return n * render.opacity + (1.0 - render.opacity)


def _carry_state(old: nn.Module, new: nn.Module) -> None:
    """Copy a component's parameters to the next stage when it is the same class and shape."""
    if type(old) is not type(new):
        return
    new_sd = new.state_dict()
    old_sd = old.state_dict()
    if old_sd.keys() == new_sd.keys() and all(old_sd[k].shape == new_sd[k].shape for k in old_sd):
        new.load_state_dict(old_sd)
