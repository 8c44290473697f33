"""The stage loop: build each stage's system, train it, checkpoint, hand off to the next.

Checkpoints (``core/checkpoint.py``) live in ``<run>/ckpts/``: ``last.ckpt`` is the latest
progress of whichever stage is running (written every ``ckpt_every`` steps, at the end of each
stage and on Ctrl-C); ``<stage>.ckpt`` is a finished stage, from which later stages are rebuilt
on resume. On CPU a run resumed from ``last.ckpt`` at step k ends with exactly the parameters
of an uninterrupted run (every RNG state is saved with the step).
"""

from __future__ import annotations

import contextlib
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .config import NonNegativeInt, PositiveInt, import_target, parse_structured
from .determinism import use_deterministic_algorithms
from .errors import UserError
from .heap import trim_heap
from .interrupts import Interrupted, StopRequest
from .metrics_log import MetricsLogger
from .stages import resolve_stage, stage_names

DEFAULT_SYSTEM = "threestudio_like.systems.score_distillation.ScoreDistillationSystem"


class TrainingInterrupted(Interrupted):
    """SIGINT/SIGTERM during training; a checkpoint was written to ``path``."""

    def __init__(self, signum: int, path: Path) -> None:
        super().__init__(signum)
        self.path = path


@dataclass
class TrainerConfig:
    device: str = "auto"
    """``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``..."""
    deterministic: Optional[bool] = None
    """Bit-identical results for the same seed (torch's deterministic algorithms); null: on for CPU
    runs, off on CUDA (``core/determinism.py``)."""
    precision: Literal["32", "bf16", "16-mixed"] = "32"
    """``32``, ``bf16`` or ``16-mixed`` (autocast; CUDA only, fp32 on CPU)."""
    log_every: PositiveInt = 10
    """Write a metrics.jsonl record every N steps."""
    ckpt_every: NonNegativeInt = 200
    """Write ckpts/last.ckpt every N steps (0 = only at stage ends)."""
    max_nonfinite_steps: PositiveInt = 20
    """Abort after this many consecutive steps with a non-finite loss or gradient."""
    progress: bool = True
    """Show a progress bar with loss and it/s."""
    tensorboard: bool = False
    """Mirror scalars and validation images to TensorBoard (<run>/tb)."""


class Trainer:
    """Runs the experiment's stages in ``run_dir`` (see module docstring)."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.tcfg: TrainerConfig = parse_structured(TrainerConfig, cfg.get("trainer"), "trainer")
        self.device = _resolve_device(self.tcfg.device)
        use_deterministic_algorithms(self.tcfg.deterministic, self.device)
        self.names = stage_names(cfg)
        self.logger = MetricsLogger(self.run_dir, self.tcfg.tensorboard)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "ckpts"

    # ---- public -----------------------------------------------------------------------
    def build_stage(self, index: int, previous: Any = None) -> Any:
        """Instantiate stage ``index``'s system (guidance not loaded), on the run's device."""
        name = self.names[index]
        stage_cfg = resolve_stage(self.cfg, name)
        cls = import_target(stage_cfg.pop("_target_", DEFAULT_SYSTEM))
        system = cls(stage_cfg, where=f"stage.{name}", previous=previous)
        return system.to(self.device)

    def load_finished(self, upto: Optional[int] = None) -> Any:
        """Rebuild stages ``0..upto`` (default: all) from their finished checkpoints."""
        upto = len(self.names) - 1 if upto is None else upto
        system = None
        for i in range(upto + 1):
            system = self.build_stage(i, previous=system)
            payload = load_checkpoint(self.ckpt_dir / f"{self.names[i]}.ckpt", self.device)
            system.load_checkpoint_state(payload["state"])
        return system

    def fit(self, resume: bool = False, start_stage: Optional[str] = None) -> Any:
        """Train every stage from the start, from ``last.ckpt`` (``resume``), or from ``start_stage``."""
        start_index, payload, rng = 0, None, None
        if start_stage is not None:
            if start_stage not in self.names:
                raise UserError(f"start_stage '{start_stage}' is not one of the stages {self.names}")
            start_index = self.names.index(start_stage)
        elif resume and (self.ckpt_dir / "last.ckpt").exists():
            payload = load_checkpoint(self.ckpt_dir / "last.ckpt", self.device)
            if payload["stage"] not in self.names:
                raise UserError(f"checkpoint is of stage '{payload['stage']}', not among stages {self.names}")
            start_index = self.names.index(payload["stage"])
            steps = int(resolve_stage(self.cfg, payload["stage"]).get("steps", 0))
            if payload.get("stage_done") and payload["global_step"] >= steps:
                # finished: go on with the next stage, from the random state the finished one ended in
                start_index, payload, rng = start_index + 1, None, payload["rng"]
        previous = self.load_finished(start_index - 1) if start_index > 0 else None
        if rng is not None:
            set_rng_state(rng)  # as an uninterrupted run enters the next stage
        system = previous
        for index in range(start_index, len(self.names)):
            system = self.build_stage(index, previous=previous)
            # the hand-off is done: the finished stage (its prior and text encoder above all) is
            # freed before this one loads its own, so two stages' models never share the memory
            previous = None
            trim_heap()
            system.setup_guidance()
            self._train_stage(system, index, payload if index == start_index else None)
            previous = system
        self.logger.close()
        return system

    # ---- one stage --------------------------------------------------------------------
    def _train_stage(self, system: Any, index: int, payload: Optional[dict[str, Any]]) -> None:
        name, steps = self.names[index], system.cfg.steps
        if payload is not None:  # before the optimizer: a geometry may take its size from the checkpoint
            system.load_checkpoint_state(payload["state"])
        optimizer, scheduler = system.configure_optimizer()
        run = _StageRun(system, name, index, steps, optimizer, scheduler)
        if payload is not None:
            optimizer.load_state_dict(payload["optimizer"])
            if scheduler is not None and payload.get("scheduler") is not None:
                scheduler.load_state_dict(payload["scheduler"])
            run.step = run.step_logged = int(payload["global_step"])
            set_rng_state(payload["rng"])
        system.train()
        bar = _progress(self.tcfg.progress, steps, run.step, name)
        try:
            with StopRequest() as stop:
                while run.step < steps:
                    if stop.requested:
                        raise Interrupted(stop.signum)
                    self._step(run, bar)
        except (Interrupted, KeyboardInterrupt) as e:
            path = self._save(run, done=False)
            raise TrainingInterrupted(e.signum if isinstance(e, Interrupted) else signal.SIGINT, path) from None
        except torch.OutOfMemoryError:
            run.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            path = self._save(run, done=False)
            raise UserError(out_of_memory_message(name, run.step, path)) from None
        finally:
            if bar is not None:
                bar.close()
        self.validate(system, name, run.step)
        self._save(run, done=True)

    def _step(self, run: _StageRun, bar: Any) -> None:
        """One optimisation step (skipped when the loss or gradient is not finite)."""
        system, optimizer = run.system, run.optimizer
        system.update_step(0, run.step)
        with self._autocast():
            out = system.training_step(run.step)
        loss = out["loss"]
        optimizer.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            ok = bool(torch.isfinite(_grad_norm(optimizer, system.cfg.clip_grad_norm)))
        if ok:
            optimizer.step()
            system.after_optimizer_step(optimizer, run.step)
            run.bad_in_a_row = 0
        else:
            optimizer.zero_grad(set_to_none=True)
            run.bad_in_a_row += 1
            warnings.warn(f"stage {run.name} step {run.step}: non-finite loss or gradient, step skipped", stacklevel=2)
            if run.bad_in_a_row >= self.tcfg.max_nonfinite_steps:
                raise UserError(
                    f"training diverged: {run.bad_in_a_row} steps in a row with a non-finite loss or "
                    f"gradient (stage {run.name}, step {run.step}); lower the learning rate "
                    f"(stage.{run.name}.optimizer.lr) or the guidance scale"
                )
        if run.scheduler is not None:
            run.scheduler.step()
        run.step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
        if run.step % max(self.tcfg.log_every, 1) == 0 or run.step == run.steps:
            self._log(run, out)
        if system.cfg.val_every and run.step % system.cfg.val_every == 0 and run.step < run.steps:
            self.validate(system, run.name, run.step)
        if self.tcfg.ckpt_every and run.step % self.tcfg.ckpt_every == 0 and run.step < run.steps:
            self._save(run, done=False)

    def _log(self, run: _StageRun, out: dict[str, Any]) -> None:
        now = time.perf_counter()
        rate = (run.step - run.step_logged) / max(now - run.time_logged, 1e-9)
        run.time_logged, run.step_logged = now, run.step
        record = {"stage": run.name, "step": run.step, "it_s": rate, "lr": run.optimizer.param_groups[0]["lr"]}
        record.update({k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.items()})
        earlier = sum(int(resolve_stage(self.cfg, name).get("steps", 0)) for name in self.names[: run.index])
        self.logger.log(record, step=earlier + run.step)  # the run's global step: earlier stages' steps + this one's

    def _save(self, run: _StageRun, done: bool) -> Path:
        payload = {
            "stage_index": run.index,
            "stage": run.name,
            "global_step": run.step,
            "stage_done": done,
            "state": run.system.checkpoint_state(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
            "rng": get_rng_state(),
        }
        if done:  # first: a last.ckpt that says "done" always has its stage checkpoint beside it
            save_checkpoint(self.ckpt_dir / f"{run.name}.ckpt", payload)
        return save_checkpoint(self.ckpt_dir / "last.ckpt", payload)

    def validate(self, system: Any, name: str, step: int) -> Path:
        """Render the validation orbit; save ``save/<stage>-<step>.png`` (rgb row, normal row)."""
        import imageio.v3 as iio

        cams = system.data.val_cameras(device=self.device)
        views = system.render_views(cams)
        rows = [torch.cat(list(views[k]), dim=1) for k in ("rgb", "normal")]
        grid = (torch.cat(rows, dim=0).cpu().numpy() * 255).round().astype(np.uint8)
        path = self.run_dir / "save" / f"{name}-{step:06d}.png"
        iio.imwrite(path, grid)
        self.logger.image(f"{name}/val", grid, step)
        return path

    def _autocast(self) -> Any:
        p = self.tcfg.precision
        if p == "32" or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if p == "bf16" else torch.float16)


@dataclass
class _StageRun:
    """Mutable state of the stage being trained."""

    system: Any
    name: str
    index: int
    steps: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: int = 0
    bad_in_a_row: int = 0
    step_logged: int = 0
    time_logged: float = field(default_factory=time.perf_counter)


def out_of_memory_message(stage: str, step: int, checkpoint: Path) -> str:
    """What to do when a step runs out of (GPU) memory: the settings that reduce it."""
    return (
        f"out of memory in stage {stage} at step {step}; the run is saved at {checkpoint}. Reduce memory with "
        f"stage.{stage}.data.batch_size, data.height/width (render size), renderer.num_samples_per_ray, "
        "guidance.half_precision=true, or the CUDA backends (renderer.implementation, "
        "geometry.pos_encoding_config.implementation), then continue with "
        f"resume={checkpoint.parent.parent}"
    )


def _grad_norm(optimizer: torch.optim.Optimizer, clip: Optional[float]) -> torch.Tensor:
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not params:
        return torch.tensor(0.0)
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.device={name} but CUDA is not available; use trainer.device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"trainer.device: cannot parse '{name}'") from None


def _progress(enabled: bool, total: int, initial: int, name: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, dynamic_ncols=True, leave=False)
