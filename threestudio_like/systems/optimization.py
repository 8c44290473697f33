"""A stage's optimizer and learning-rate schedule: typed configs and the objects they build."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

import torch
from torch import nn

from ..core.config import Range, Schedule, to_container
from ..core.errors import UserError
from ..core.schedule import schedule_value


@dataclass
class ParamGroupConfig:
    """Settings of the parameters whose names start with a prefix."""

    lr: Annotated[Any, Schedule(Range(gt=0))] = None
    """Learning rate of the group (null: the optimizer's ``lr``), a number or a schedule over the
    stage's steps (``{start: 1.0e-3, end: 2.0e-5, start_step: 0, end_step: 500, kind: exponential}``,
    3DGS's position rate); the stage's ``lr_scheduler`` factor applies on top."""


@dataclass
class OptimizerConfig:
    """``stage.<name>.optimizer``: torch's Adam or AdamW, or Adan (``pytorch-optimizer``'s), over
    the system's trainable parameters."""

    name: Literal["Adam", "AdamW", "Adan"] = "Adam"
    """Optimizer class. Adan (Xie et al. 2022): Nesterov momentum estimated from gradient
    differences; three betas, weight decay as a proximal step (the paper's, threestudio's)."""
    lr: float = 0.01
    """Learning rate of every parameter no ``params`` prefix matches."""
    betas: Optional[list[float]] = None
    """Adam's (β₁, β₂) / Adan's (β₁, β₂, β₃); null: (0.9, 0.999) / (0.98, 0.92, 0.99)."""
    eps: float = 1.0e-8
    """ε of the denominator."""
    weight_decay: Optional[float] = None
    """Weight decay (decoupled for AdamW, proximal for Adan); null: the class default (AdamW 0.01, else 0)."""
    max_grad_norm: float = 0.0
    """Adan only: rescale the gradients so their global norm is at most this (0 = off)."""
    params: dict[str, ParamGroupConfig] = field(default_factory=dict)
    """Per-prefix groups (``geometry.encoding: {lr: 0.01}``); the longest matching prefix wins."""


DEFAULT_BETAS = {"Adam": (0.9, 0.999), "AdamW": (0.9, 0.999), "Adan": (0.98, 0.92, 0.99)}
"""Each optimizer's betas when ``betas`` is null (torch's; Adan's paper)."""


@dataclass
class LRSchedulerConfig:
    """``stage.<name>.lr_scheduler``: a factor on every group's learning rate."""

    name: Literal["constant", "cosine", "exponential"] = "constant"
    """Decay over the stage's steps: none, half a cosine to 0, or exponential down to ``gamma``."""
    warmup_steps: int = 0
    """Linear warm-up from 1/warmup_steps to 1 over the first steps (0 = off)."""
    gamma: float = 0.1
    """Final factor of the ``exponential`` decay."""


def build_optimizer(
    cfg: OptimizerConfig, named_parameters: list[tuple[str, nn.Parameter]], where: str
) -> torch.optim.Optimizer:
    """One param group per configured prefix (plus ``default``), parameters without
    ``requires_grad`` left out."""
    groups: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in cfg.params}
    groups[""] = []
    for name, p in named_parameters:
        if p.requires_grad:
            groups[max((pre for pre in cfg.params if name.startswith(pre)), key=len, default="")].append(p)
    param_groups = []
    for prefix, params in groups.items():
        if params:
            spec = cfg.params[prefix].lr if prefix and cfg.params[prefix].lr is not None else cfg.lr
            spec = to_container(spec)
            group = {"params": params, "lr": schedule_value(spec, 0), "name": prefix or "default"}
            if not isinstance(spec, (int, float)):
                group["lr_schedule"] = spec  # followed by the stage's scheduler (build_lr_scheduler)
            param_groups.append(group)
    if not param_groups:
        raise UserError(f"{where}: nothing to optimize (all parameters frozen)")
    n_betas = 3 if cfg.name == "Adan" else 2
    betas = DEFAULT_BETAS[cfg.name] if cfg.betas is None else tuple(cfg.betas)
    if len(betas) != n_betas:
        raise UserError(f"{where}.betas: {cfg.name} takes {n_betas} betas, got {list(betas)}")
    decay = {} if cfg.weight_decay is None else {"weight_decay": cfg.weight_decay}
    if cfg.name == "Adan":
        from pytorch_optimizer import Adan

        return Adan(param_groups, lr=cfg.lr, betas=betas, eps=cfg.eps, max_grad_norm=cfg.max_grad_norm, **decay)
    if cfg.max_grad_norm:
        raise UserError(f"{where}.max_grad_norm is Adan's; clip {cfg.name}'s gradients with the stage's clip_grad_norm")
    cls = torch.optim.Adam if cfg.name == "Adam" else torch.optim.AdamW
    return cls(param_groups, lr=cfg.lr, betas=betas, eps=cfg.eps, **decay)


def lr_factor(cfg: LRSchedulerConfig, step: int, steps: int) -> float:
    """The factor on the learning rate at ``step`` of a stage of ``steps`` steps."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    progress = min(1.0, step / max(steps, 1))
    if cfg.name == "cosine":
        return warmup * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "exponential":
        return warmup * cfg.gamma**progress
    return warmup


def build_lr_scheduler(
    cfg: Optional[LRSchedulerConfig], optimizer: torch.optim.Optimizer, steps: int
) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
    """Each group's learning rate at a step: its ``lr_schedule``'s value (if it has one, else its
    ``lr``) × the ``cfg`` factor; None when nothing changes over the stage."""
    scheduled = [g.get("lr_schedule") for g in optimizer.param_groups]
    if cfg is None and not any(s is not None for s in scheduled):
        return None
    cfg = cfg or LRSchedulerConfig()

    def factor(spec: Any) -> Any:
        if spec is None:
            return lambda step: lr_factor(cfg, step, steps)
        return lambda step: lr_factor(cfg, step, steps) * schedule_value(spec, step) / schedule_value(spec, 0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(spec) for spec in scheduled])
