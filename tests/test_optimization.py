"""The stage optimizers: Adan (pytorch-optimizer's) against the paper's update rule written here,
the betas each optimizer takes."""

import pytest
import torch

from threestudio_like.core.config import parse_structured
from threestudio_like.core.errors import UserError
from threestudio_like.systems.optimization import OptimizerConfig, build_optimizer


def adan_reference(p0, grads, lr, betas, eps, weight_decay):
    """Adan (Xie et al. 2022, Algorithm 1 as in the authors' code), step k = 1, 2, …:
    g₀ := g₁ (no difference at the first step);
    m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)(g − g_prev);  n ← β₃n + (1−β₃)(g + β₂(g − g_prev))²;
    p ← [p − lr·(m/(1−β₁ᵏ) + β₂·v/(1−β₂ᵏ)) / (√(n/(1−β₃ᵏ)) + ε)] / (1 + lr·λ)."""
    b1, b2, b3 = betas
    p = p0.clone().double()
    m, v, n = (torch.zeros_like(p) for _ in range(3))
    prev = grads[0].double()
    for k, g in enumerate(grads, start=1):
        g = g.double()
        diff = g - prev
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * diff
        n = b3 * n + (1 - b3) * (g + b2 * diff) ** 2
        denom = (n / (1 - b3**k)).sqrt() + eps
        p = (p - lr * (m / (1 - b1**k) + b2 * v / (1 - b2**k)) / denom) / (1 + lr * weight_decay)
        prev = g
    return p.float()


def test_adan_matches_the_published_update_rule():
    torch.manual_seed(0)
    p0 = torch.randn(5, 3)
    grads = [torch.randn(5, 3) for _ in range(6)]
    cfg = parse_structured(
        OptimizerConfig, {"name": "Adan", "lr": 0.05, "betas": [0.98, 0.92, 0.99], "eps": 1e-8, "weight_decay": 0.02}
    )
    w = torch.nn.Parameter(p0.clone())
    opt = build_optimizer(cfg, [("geometry.w", w)], "o")
    for g in grads:
        w.grad = g.clone()
        opt.step()
    expected = adan_reference(p0, grads, 0.05, (0.98, 0.92, 0.99), 1e-8, 0.02)
    assert (w.detach() - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    # the default betas are the paper's
    default = build_optimizer(parse_structured(OptimizerConfig, {"name": "Adan"}), [("w", torch.nn.Parameter(p0))], "o")
    assert tuple(default.param_groups[0]["betas"]) == (0.98, 0.92, 0.99)


def test_adan_max_grad_norm_rescales_the_gradients():
    torch.manual_seed(1)
    p0, grads = torch.randn(4), [torch.randn(4) * 10 for _ in range(3)]
    cfg = parse_structured(OptimizerConfig, {"name": "Adan", "lr": 0.01, "max_grad_norm": 1.0, "betas": None})
    w = torch.nn.Parameter(p0.clone())
    opt = build_optimizer(cfg, [("w", w)], "o")
    for g in grads:
        w.grad = g.clone()
        opt.step()
    clipped = [g * min(1.0, 1.0 / (g.norm().item() + 1e-8)) for g in grads]
    expected = adan_reference(p0, clipped, 0.01, (0.98, 0.92, 0.99), 1e-8, 0.0)
    assert (w.detach() - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_betas_count_and_adan_only_options_are_user_errors():
    w = [("w", torch.nn.Parameter(torch.zeros(2)))]
    with pytest.raises(UserError, match="Adan takes 3 betas"):
        build_optimizer(parse_structured(OptimizerConfig, {"name": "Adan", "betas": [0.9, 0.99]}), w, "o")
    with pytest.raises(UserError, match="Adam takes 2 betas"):
        build_optimizer(parse_structured(OptimizerConfig, {"name": "Adam", "betas": [0.9, 0.9, 0.9]}), w, "o")
    with pytest.raises(UserError, match="max_grad_norm"):
        build_optimizer(parse_structured(OptimizerConfig, {"name": "AdamW", "max_grad_norm": 1.0}), w, "o")
    adam = build_optimizer(parse_structured(OptimizerConfig, {"name": "Adam"}), w, "o")
    assert tuple(adam.param_groups[0]["betas"]) == (0.9, 0.999)


def test_a_scheduled_group_learning_rate_follows_its_schedule_times_the_stage_factor():
    from threestudio_like.systems.optimization import LRSchedulerConfig, build_lr_scheduler

    position_lr = {"start": 1e-3, "end": 2e-5, "start_step": 0, "end_step": 50, "kind": "exponential"}
    cfg = parse_structured(OptimizerConfig, {"lr": 0.01, "params": {"geometry.means": {"lr": position_lr}}})
    means, colours = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    for stage_cfg, stage_factor in ((None, lambda k: 1.0), (LRSchedulerConfig(name="exponential", gamma=0.5), None)):
        opt = build_optimizer(cfg, [("geometry.means", means), ("geometry.features", colours)], "o")
        sched = build_lr_scheduler(stage_cfg, opt, steps=100)
        factor = stage_factor or (lambda k: 0.5 ** (k / 100))
        for k in range(80):
            lrs = {g["name"]: g["lr"] for g in opt.param_groups}
            position = 1e-3 * (2e-5 / 1e-3) ** (min(k, 50) / 50)  # log-linear, then held
            assert lrs["geometry.means"] == pytest.approx(position * factor(k), rel=1e-9), k
            assert lrs["default"] == pytest.approx(0.01 * factor(k), rel=1e-9), k
            opt.step()
            sched.step()


def test_an_exponential_schedule_needs_positive_ends():
    from threestudio_like.core.schedule import schedule_value

    with pytest.raises(UserError, match="exponential"):
        schedule_value({"start": 0.0, "end": 1.0, "start_step": 0, "end_step": 10, "kind": "exponential"}, 5)
