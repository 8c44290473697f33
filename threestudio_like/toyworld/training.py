"""The denoiser training loop shared by ``train_sd`` and ``train_zero123``.

ε-prediction DDPM training: ``loss = w_t ‖ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t, cond) − ε‖²`` with t
uniform and the min-SNR weight ``w_t = min(SNR_t, γ) / SNR_t`` (Hang et al. 2023; SNR = ᾱ/(1−ᾱ);
γ = 0: w = 1), which stops the easy low-noise steps from dominating the gradient; AdamW with
linear warm-up then cosine decay, an exponential moving average (EMA) of the weights (the EMA is
what gets saved), gradient-norm clipping at 1. The state (weights, EMA, optimizer,
step, RNG) is saved atomically to ``<work_dir>/state.pt`` every ``checkpoint_every`` steps and at
the end, and a run resumes from it; ``export(ema_modules)`` writes the pipeline whenever the state
is saved, so an interrupted run still leaves a usable prior (and rerunning a finished run
re-exports it). ``--device cuda`` trains on a GPU: the dataset stays on the CPU, each batch moves
to the device, and the random draws (batch indices, timesteps, noise) come from the same CPU
generator, so a run on either device sees the same batches.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..core.atomic import atomic_write
from ..core.errors import UserError


@dataclass
class TrainConfig:
    steps: int = 8000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    ema_decay: float = 0.998
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    snr_gamma: float = 5.0
    device: str = "cpu"


def train_parser(description: str, out: str, n_images: int) -> argparse.ArgumentParser:
    """``--steps --batch-size --lr --checkpoint-every --log-every --seed --snr-gamma --threads
    --device --n-images --work-dir --out``, defaults from :class:`TrainConfig` (a training script adds its
    own on top)."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--snr-gamma", type=float, default=defaults.snr_gamma, help="min-SNR loss weight γ (0: unweighted ε loss)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N")
    parser.add_argument("--n-images", type=int, default=n_images, help="renders in the dataset")
    parser.add_argument("--work-dir", required=True, help="dataset cache, training state, log")
    parser.add_argument("--out", default=out, help="where the pipeline is saved (save_pretrained)")
    return parser


def add_unet_channels_flag(parser: argparse.ArgumentParser) -> None:
    """``--unet-channels A B C``: the toy UNet's widths per level (:func:`.priors.unet_config`)."""
    from .priors import UNET_CHANNELS

    parser.add_argument(
        "--unet-channels",
        type=int,
        nargs=3,
        default=list(UNET_CHANNELS),
        help="UNet widths per level (the shipped priors: 16 32 64; ignored with --init-from)",
    )


def train_config(args: argparse.Namespace, **fields: Any) -> TrainConfig:
    """Set the threads and check the device of ``args``; the :class:`TrainConfig` of its common flags
    (``--steps --batch-size --lr --checkpoint-every --log-every --seed --device``) and ``fields``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    check_device(args.device)
    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        **fields,
    )


def cached(path: str, make: Callable[[], Any]) -> tuple[Any, bool]:
    """(``torch.load(path)``, False) if it exists, else (``make()``, True) saved there atomically."""
    if os.path.isfile(path):
        return torch.load(path, weights_only=True), False
    data = make()
    atomic_write(path, lambda fh: torch.save(data, fh))
    return data, True


def prepare(args: argparse.Namespace, name: str, dataset: Callable[[int, int], dict]) -> tuple[TrainConfig, dict]:
    """Set the threads; the :class:`TrainConfig` of ``args`` and the dataset
    ``dataset(n_images, seed)``, cached as ``<work_dir>/<name>-data-<n>-<seed>.pt`` (rendered once)."""
    cfg = train_config(args, snr_gamma=args.snr_gamma)
    os.makedirs(args.work_dir, exist_ok=True)
    t0 = time.time()
    data, made = cached(
        os.path.join(args.work_dir, f"{name}-data-{args.n_images}-{cfg.seed}.pt"),
        lambda: dataset(args.n_images, cfg.seed),
    )
    if made:
        print(json.dumps({"images": int(data["images"].shape[0]), "render_s": round(time.time() - t0, 1)}), flush=True)
    return cfg, data


def check_device(device: str) -> None:
    """Raise :class:`UserError` unless ``device`` names a device torch can use here."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"--device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this torch has no usable CUDA device; train with --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: expected cpu, cuda or cuda:N")


def noised(x0: Tensor, scheduler, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(t, ε, x_t) on ``x0``'s device: a uniform timestep per sample, Gaussian noise (both drawn
    from the CPU generator ``gen``) and the forward process ``x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε``."""
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
    return t, noise, scheduler.add_noise(x0, noise, t)


def denoising_loss(eps: Tensor, noise: Tensor, t: Tensor, scheduler, snr_gamma: float) -> Tensor:
    """Mean over the batch of ``w_t · mean((ε_θ − ε)²)`` with the min-SNR weight
    ``w_t = min(SNR_t, γ) / SNR_t`` (``snr_gamma = 0``: plain MSE)."""
    per_sample = (eps - noise).pow(2).flatten(1).mean(dim=1)
    if snr_gamma <= 0:
        return per_sample.mean()
    alpha_bar = scheduler.alphas_cumprod.to(eps.device)[t].to(eps.dtype)
    snr = alpha_bar / (1.0 - alpha_bar)
    return (per_sample * snr.clamp(max=snr_gamma) / snr).mean()


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to 0.05 at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))


def train(
    modules: nn.ModuleDict,
    loss_fn: Callable[[torch.Generator], Tensor],
    cfg: TrainConfig,
    work_dir: str,
    export: Callable[[nn.ModuleDict], None],
) -> dict:
    """Run (or resume) training of ``modules`` on ``loss_fn(generator) -> scalar``; returns a summary."""
    os.makedirs(work_dir, exist_ok=True)
    state_path, log_path = os.path.join(work_dir, "state.pt"), os.path.join(work_dir, "train_log.jsonl")
    modules.to(cfg.device)
    ema = copy.deepcopy(modules).requires_grad_(False)
    params = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    step, elapsed = 0, 0.0
    if os.path.isfile(state_path):
        state = torch.load(state_path, weights_only=False, map_location=cfg.device)
        modules.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        step, elapsed = state["step"], state.get("elapsed", 0.0)
        print(json.dumps({"resumed_at_step": step}), flush=True)

    def save() -> None:
        state = {
            "model": modules.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "step": step,
            "elapsed": time.time() - t_start,
        }
        atomic_write(state_path, lambda fh: torch.save(state, fh))
        export(ema)

    modules.train()
    running, t_start = None, time.time() - elapsed
    while step < cfg.steps:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg)
        loss = loss_fn(generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), modules.parameters()):
                e.lerp_(p, 1.0 - decay)
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % cfg.log_every == 0 or step == cfg.steps:
            record = {
                "step": step,
                "loss": round(value, 5),
                "loss_ema": round(running, 5),
                "lr": optimizer.param_groups[0]["lr"],
                "elapsed_s": round(time.time() - t_start, 1),
            }
            print(json.dumps(record), flush=True)
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save()
    save()  # also re-exports a finished state with the current code
    return {"steps": step, "loss_ema": running, "train_s": round(time.time() - t_start, 1)}
