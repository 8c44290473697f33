"""The one training-step skeleton every method is composed from.

A *stage* of an experiment (DreamFusion's only stage, Magic3D's coarse and refine stages,
ProlificDreamer's three) is a :class:`ScoreDistillationSystem` built from the stage's
resolved config: a geometry, a material, a background, a renderer, a camera sampler, a
guidance with its prompt, and loss terms. Methods differ by composition and loss weights,
not by subclassing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
from torch import Tensor, nn

from ..background.base import Background
from ..core.config import Configurable, NonNegativeInt, PositiveFloat, import_target, instantiate, to_container
from ..core.errors import UserError
from ..core.schedule import Updateable, schedule_value
from ..data.cameras import CameraBatch, RandomCameraSampler
from ..geometry.base import Geometry
from ..guidance.base import Guidance, GuidanceOutput
from ..materials.base import Material
from ..prompt.processor import PromptEmbeddings
from ..renderers.base import Renderer, RenderOutput
from .optimization import LRSchedulerConfig, OptimizerConfig, build_lr_scheduler, build_optimizer
from .regularizers import LossTerm

GUIDANCE_LOSS = "guidance"
"""The loss name the stage's guidance is weighted under (``loss.guidance``), whatever prior fills it."""


@dataclass
class ScoringGuidance(Updateable):
    """A guidance with its prompt embeddings, ready to score renders.

    Held by a plain (non-``nn.Module``) object so that neither lands in the owner's module tree:
    the guidance is loaded only for stages that train, and its trainable state (VSD's LoRA) is
    checkpointed on its own. ``update_step`` reaches the guidance through it.
    """

    guidance: Guidance
    prompt: Optional[PromptEmbeddings]

    def __call__(self, image: Tensor, cameras: CameraBatch) -> GuidanceOutput:
        return self.guidance(rgb=image, cameras=cameras, prompt=self.prompt)


@dataclass
class StepContext:
    """What a loss term may look at: the step's cameras and render, the system, the step."""

    system: ScoreDistillationSystem
    cameras: CameraBatch
    render: RenderOutput
    global_step: int


class ScoreDistillationSystem(Configurable, Updateable, nn.Module):
    """One stage: render random views, score them with the guidance, add regularizers."""

    @dataclass
    class Config:
        steps: NonNegativeInt = 1000
        """Training steps of this stage."""
        data: dict = field(default_factory=dict)
        """Camera sampler config (``data/cameras.py`` RandomCameraSampler)."""
        geometry: dict = field(default_factory=dict)
        """Geometry component (``_target_`` + its Config)."""
        geometry_init: Literal["scratch", "previous"] = "scratch"
        """``scratch`` or ``previous`` (``create_from`` the previous stage's geometry)."""
        material: dict = field(default_factory=dict)
        """Material component."""
        background: dict = field(default_factory=dict)
        """Background component."""
        renderer: dict = field(default_factory=dict)
        """Renderer component."""
        guidance: Optional[dict] = None
        """Guidance component (SDS, VSD, Zero123...) or null."""
        guidance_input: Literal["rgb", "normal"] = "rgb"
        """What the guidance scores: ``rgb`` or ``normal`` (geometry-refinement stages)."""
        normal_background: Literal["white", "black"] = "white"
        """Background of the normal image the guidance scores (``guidance_input: normal``)."""
        prompt_processor: Optional[dict] = None
        """Prompt processor component (text guidance) or null."""
        terms: dict = field(default_factory=dict)
        """Loss terms by name (regularizers, reference-view losses, extra guidance)."""
        loss: dict = field(default_factory=dict)
        """Weight (number or schedule) of every loss name: ``guidance`` for the guidance, and each
        name the terms return."""
        optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
        """Optimizer of the geometry, material and background parameters."""
        lr_scheduler: Optional[LRSchedulerConfig] = None
        """Optional learning-rate schedule (null = constant)."""
        clip_grad_norm: Optional[PositiveFloat] = None
        """Clip the global gradient norm (null = off)."""
        val_every: NonNegativeInt = 0
        """Render validation views every N steps (0 = at the end of the stage only)."""

    def __init__(self, cfg: Any, where: str = "stage", previous: Optional[ScoreDistillationSystem] = None) -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.where = where
        c = self.cfg
        self.data: RandomCameraSampler = instantiate(c.data, where=f"{where}.data", expected=RandomCameraSampler)
        self.geometry: Geometry = self._build_geometry(previous)
        self.material: Material = instantiate(c.material, where=f"{where}.material", expected=Material)
        self.background: Background = instantiate(c.background, where=f"{where}.background", expected=Background)
        if previous is not None:
            _carry_state(previous.material, self.material)
            _carry_state(previous.background, self.background)
        self.renderer: Renderer = instantiate(c.renderer, where=f"{where}.renderer", expected=Renderer)
        if GUIDANCE_LOSS in c.terms:
            raise UserError(
                f"{where}.terms.{GUIDANCE_LOSS}: '{GUIDANCE_LOSS}' is the stage guidance's loss name; "
                "give the term another name"
            )
        self.terms: dict[str, LossTerm] = nn.ModuleDict(
            {  # type: ignore[assignment]
                name: instantiate(t, where=f"{where}.terms.{name}", expected=LossTerm, name=name)
                for name, t in c.terms.items()
                if t is not None
            }
        )
        self.scoring: Optional[ScoringGuidance] = None  # built by setup_guidance()
        self.global_step = 0
        self._last_render: Optional[RenderOutput] = None

    # ---- construction ------------------------------------------------------------------
    def _build_geometry(self, previous: Optional[ScoreDistillationSystem]) -> Geometry:
        c, where = self.cfg, f"{self.where}.geometry"
        if c.geometry_init == "scratch" or previous is None:
            return instantiate(c.geometry, where=where, expected=Geometry)
        data = dict(to_container(c.geometry))
        cls = import_target(data.pop("_target_"))
        if not (isinstance(cls, type) and issubclass(cls, Geometry)):
            raise UserError(f"{where}: _target_ is not a Geometry ({Geometry.__module__}.Geometry)")
        return cls.create_from(previous.geometry, data, where=where)

    def setup_guidance(self) -> None:
        """Load the guidance and the prompt embeddings (heavy; only for stages that train)."""
        reference = next((r for r in (t.reference_image() for t in self.terms.values()) if r is not None), None)
        self.scoring = build_guidance(self.cfg.guidance, self.cfg.prompt_processor, self.device, reference, self.where)
        for term in self.terms.values():
            term.setup_guidance(self.device, reference)

    @property
    def guidance(self) -> Optional[Guidance]:
        return None if self.scoring is None else self.scoring.guidance

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
        if self.scoring is not None:
            bg = 1.0 if self.cfg.normal_background == "white" else 0.0
            out = self.scoring(render.rgb if self.cfg.guidance_input == "rgb" else normal_image(render, bg), cameras)
            terms[GUIDANCE_LOSS] = out.loss
            if out.grad_norm is not None:
                logs[f"{GUIDANCE_LOSS}_grad_norm"] = out.grad_norm
            logs.update({k: v.detach() for k, v in out.extras.items()})
        # 4. regularizers and other loss terms
        ctx = StepContext(system=self, cameras=cameras, render=render, global_step=global_step)
        for term in self.terms.values():
            terms.update(term(ctx))
        # 5. weight and sum
        total = self._weighted_sum(terms, global_step, logs)
        self._last_render = render  # for after_optimizer_step (e.g. the view-space gradients densification reads)
        return {"loss": total, **logs}

    def after_optimizer_step(self, optimizer: torch.optim.Optimizer, global_step: int) -> None:
        """Called by the trainer after each optimizer step: the geometry may change its parameters
        and the optimizer's state with them (Gaussians densify and prune)."""
        render, self._last_render = self._last_render, None
        if render is not None:
            self.geometry.after_optimizer_step(optimizer, global_step, render)

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
        """The stage's optimizer over its trainable parameters (the guidance trains its own), and
        the learning-rate schedule."""
        optimizer = build_optimizer(self.cfg.optimizer, list(self.named_parameters()), f"{self.where}.optimizer")
        return optimizer, build_lr_scheduler(self.cfg.lr_scheduler, optimizer, self.cfg.steps)

    # ---- checkpoints -------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"system": self.state_dict()}
        g = self.guidance
        if g is not None and g.has_trainable_state():
            state["guidance"] = g.state_dict()
            optimizer = g.optimizer_state_dict()
            if optimizer is not None:
                state["guidance_optimizer"] = optimizer
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["system"])
        g = self.guidance
        if "guidance" in state and g is not None:
            g.load_state_dict(state["guidance"])
            if "guidance_optimizer" in state:
                g.load_optimizer_state_dict(state["guidance_optimizer"])

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
                out["normal"].append(normal_image(r))
                out["opacity"].append(r.opacity.expand(*r.opacity.shape[:-1], 3))
        finally:
            self.train(was_training)
        return {k: torch.cat(v, 0).clamp(0, 1) for k, v in out.items()}


def build_guidance(
    guidance_cfg: Optional[dict],
    prompt_cfg: Optional[dict],
    device: torch.device,
    reference: Optional[tuple[Tensor, float, float, float]],
    where: str,
) -> Optional[ScoringGuidance]:
    """Instantiate a guidance and its prompt embeddings on ``device`` (None without a guidance);
    hand it the input image ``reference`` = (rgb (1,H,W,3), elevation°, azimuth°, distance) when
    it conditions on one."""
    if guidance_cfg is None:
        return None
    prompt = None
    if prompt_cfg is not None:
        processor = instantiate(prompt_cfg, where=f"{where}.prompt_processor")
        prompt = processor(device=device)
    guidance = instantiate(guidance_cfg, where=f"{where}.guidance", expected=Guidance)
    guidance.place(device)
    if reference is not None and guidance.uses_reference:
        guidance.set_reference(*reference)
    return ScoringGuidance(guidance, prompt)


def normal_image(render: RenderOutput, background: float = 1.0) -> Tensor:
    """World normals as an image: (n+1)/2 over a grey level ``background`` (1 white, 0 black), (B,H,W,3)."""
    if render.normal is None:
        return torch.full_like(render.rgb, background)
    n = (nn.functional.normalize(render.normal, dim=-1) + 1.0) / 2.0  # volume normals are Σw·n
    return n * render.opacity + background * (1.0 - render.opacity)


def _carry_state(old: nn.Module, new: nn.Module) -> None:
    """Copy a component's parameters to the next stage when it is the same class and shape."""
    if type(old) is not type(new):
        return
    new_sd = new.state_dict()
    old_sd = old.state_dict()
    if old_sd.keys() == new_sd.keys() and all(old_sd[k].shape == new_sd[k].shape for k in old_sd):
        new.load_state_dict(old_sd)
