"""Command line: ``python launch.py [experiment=NAME] [prompt="…"] [key=value …]``.

Single runs compose the config with Hydra's compose API so that every mistake a user can
make (unknown experiment, unknown key, bad value, empty prompt, missing image or model,
corrupt checkpoint) prints one ``error:`` line and exits with status 2. ``-m``/``--multirun``
hands the command line to ``@hydra.main`` so sweeps and launcher plugins (joblib, submitit)
work as in any Hydra app.
"""

from __future__ import annotations

import difflib
import os
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from .core.errors import EXIT_USER_ERROR, UserError
from .core.interrupts import Interrupted, handle_signals, ignore_signals, interruption, run_started, signals_handled

PACKAGE_DIR = Path(__file__).resolve().parent
MODES = ("train", "export", "test")
EXIT_INTERRUPTED = 130


def config_dir() -> Path:
    """``$THREESTUDIO_LIKE_CONFIG_DIR``, the checkout's ``configs/``, or the installed copy."""
    env = os.environ.get("THREESTUDIO_LIKE_CONFIG_DIR")
    for candidate in (env, PACKAGE_DIR.parent / "configs", PACKAGE_DIR / "configs"):
        if candidate and (Path(candidate) / "config.yaml").is_file():
            return Path(candidate).resolve()
    raise UserError("cannot find the configs directory; set THREESTUDIO_LIKE_CONFIG_DIR")


def register_resolvers() -> None:
    """``${asset:toy-sd}`` → absolute path of a shipped asset."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", lambda name: str(PACKAGE_DIR / "assets" / name))


# ---- composing the config ------------------------------------------------------------
def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The run's config from the command-line overrides (or a run dir's config on resume)."""
    register_resolvers()
    resume = _find_override(overrides, "resume")
    if resume not in (None, "null", ""):
        return _resume_config(Path(resume), [o for o in overrides if not o.startswith("resume=")], resume)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    overrides = list(overrides)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for _ in range(len(overrides) + 1):
            try:
                return compose(config_name="config", overrides=overrides)
            except HydraException as e:
                overrides = _retry_with_append(overrides, e)
    raise UserError("could not compose the config")  # pragma: no cover


def _retry_with_append(overrides: list[str], error: Exception) -> list[str]:
    """Hydra refuses ``a.b=v`` when ``b`` is not in the YAML; allow it when ``b`` is a field of
    the component at ``a`` (its ``_target_``'s Config), else raise a UserError naming the keys."""
    msg = str(error)
    m = re.search(r"Could not override '([^']+)'", msg)
    if not m:
        raise UserError(_hydra_message(msg)) from None
    key = m.group(1)
    parent_path, _, leaf = key.rpartition(".")
    fields = _component_fields(overrides, parent_path)
    if fields is None or leaf not in fields:
        valid = f"; valid keys: {', '.join(sorted(fields))}" if fields else ""
        close = difflib.get_close_matches(leaf, fields or [], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown config key '{key}'{hint}{valid}") from None
    return [("+" + o) if o.split("=", 1)[0] == key else o for o in overrides]


def _component_fields(overrides: list[str], path: str) -> Optional[list[str]]:
    """The fields of the config at ``path``: a component's (its ``_target_``'s Config), the
    trainer's, a stage entry's (the system's), or a nested config field of one of those
    (``prepare.elevation``); None when ``path`` is none of these."""
    import dataclasses

    from hydra import compose

    from .core.config import nested_config_field

    if not path:
        return None
    # the config groups and top-level values pick the components; other dotted keys may themselves
    # still wait for their '+' (several new keys in one command line)
    safe = [o for o in overrides if "=" in o and (o.startswith("+") or "." not in o.lstrip("~").split("=", 1)[0])]
    try:
        cfg = compose(config_name="config", overrides=safe)
    except Exception:
        return None
    parts = path.split(".")
    for i in range(len(parts), 0, -1):  # the nearest node that names its config class, then down
        config_cls = _config_class(cfg, ".".join(parts[:i]))
        if config_cls is not None:
            for name in parts[i:]:
                config_cls = nested_config_field(config_cls, name)
                if config_cls is None:
                    return None
            return [f.name for f in dataclasses.fields(config_cls)]
    return None


def _config_class(cfg: DictConfig, path: str) -> Optional[type]:
    """The config dataclass of the node at ``path``: its ``_target_``'s Config, the trainer's, or a
    stage entry's (the system's); None otherwise."""
    from .core.config import Configurable, import_target
    from .core.trainer import DEFAULT_SYSTEM, TrainerConfig

    if path == "trainer":
        return TrainerConfig
    try:
        node = OmegaConf.select(cfg, path)
    except Exception:
        return None
    if not isinstance(node, DictConfig):
        return None
    if "_target_" in node:
        target = node["_target_"]
    elif path.startswith("stage.") and path.count(".") == 1:  # a stage entry is the system's config
        target = DEFAULT_SYSTEM
    else:
        return None
    try:
        cls = import_target(target)
    except UserError:
        return None
    return cls.Config if isinstance(cls, type) and issubclass(cls, Configurable) else None


def _hydra_message(msg: str) -> str:
    lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if lines else "invalid configuration"
    missing = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if missing:
        group, name = missing.groups()
        options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
        close = difflib.get_close_matches(name, options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        noun = "experiment" if group == "experiment" else f"{group} option"
        plural = "experiments" if group == "experiment" else f"{group} options"
        return f"unknown {noun} '{name}'{hint}; {plural}: {', '.join(options)}"
    return text


def _find_override(overrides: Sequence[str], key: str) -> Optional[str]:
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+") == key:
            return o.split("=", 1)[1].strip("'\"") if "=" in o else None
    return None


def _resume_config(run_dir: Path, overrides: list[str], raw: str) -> DictConfig:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"resume={raw}: {cfg_path} not found (resume takes a run directory)")
    cfg = OmegaConf.load(cfg_path)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # hydra's grammar errors
        raise UserError(_hydra_message(str(e))) from None
    for ov in parsed:
        key = ov.key_or_group
        if key in ("experiment", "debug"):
            raise UserError(f"cannot change '{key}' when resuming a run; start a new run instead")
        OmegaConf.update(cfg, key, ov.value(), merge=True, force_add=True)
    cfg.resume = str(run_dir)
    return cfg


# ---- validating and running ----------------------------------------------------------
def validate(cfg: DictConfig) -> None:
    """Catch user mistakes before anything is written: the whole config (types, choices, ranges),
    the inputs, the models (``train``), every stage's components and the output directory
    (``core/preflight.py``)."""
    from .core import preflight
    from .core.config import parse_structured, to_container
    from .core.stages import resolve_stage, stage_names
    from .core.trainer import TrainerConfig
    from .eval.evaluator import build_evaluators
    from .export.mesh_export import export_config
    from .guidance.pretrained import check_pretrained
    from .systems.finalize import turntable_config

    mode = cfg.get("mode", "train")
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    required = list(cfg.get("requires") or [])
    if "prompt" in required and not str(cfg.get("prompt") or "").strip():
        raise UserError(f"experiment '{cfg.experiment_name}' needs a text prompt: add prompt=\"a red cube\"")
    if "image" in required and not cfg.get("image"):
        raise UserError(f"experiment '{cfg.experiment_name}' needs an input image: add image=PATH")
    preflight.check_image_inputs(cfg.get("image"), cfg.get("depth"), needs_alpha="image" in required)
    parse_structured(TrainerConfig, cfg.get("trainer"), "trainer")
    export = dict(to_container(cfg.get("export")) or {})
    export.pop("enabled", None)
    export_config(export)
    turntable_config(cfg)
    parameters = []
    for name in stage_names(cfg):
        stage, where = resolve_stage(cfg, name), f"stage.{name}"
        _validate_stage(stage, where)
        if mode == "train":
            for path, model, kind in preflight.pretrained_components(stage, where):
                check_pretrained(model, kind, path)
            preflight.check_other_weights(stage, where)
        parameters.append(preflight.build_stage_for_check(stage, where))
    build_evaluators(cfg.get("evaluators"))
    if cfg.get("resume"):
        names = stage_names(cfg)
        steps = {n: int(resolve_stage(cfg, n).get("steps", 0)) for n in names}
        preflight.check_resume(Path(str(cfg.resume)), names, steps, mode, cfg.get("start_stage"))
    needed = preflight.estimate_run_bytes(parameters, preflight.texture_size(cfg))
    preflight.check_output_dir(preflight.run_dir_target(cfg), needed)


def _validate_stage(stage: dict[str, Any], where: str) -> None:
    from .core.config import Configurable, import_target, parse_structured
    from .core.trainer import DEFAULT_SYSTEM

    cls = import_target(stage.get("_target_", DEFAULT_SYSTEM))
    parse_structured(cls.Config, stage, where)
    components = [(f"{where}.{k}", v) for k, v in stage.items()]
    components += [(f"{where}.terms.{k}", v) for k, v in (stage.get("terms") or {}).items()]
    for path, sub in components:
        if isinstance(sub, dict) and "_target_" in sub:
            comp_cls = import_target(sub["_target_"])
            if isinstance(comp_cls, type) and issubclass(comp_cls, Configurable):
                parse_structured(comp_cls.Config, sub, path)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_run_dir(cfg: DictConfig) -> Path:
    from .core.rundir import make_run_dir, new_run_dir

    if cfg.get("resume"):
        return make_run_dir(cfg.resume)
    if cfg.get("output_dir"):
        return make_run_dir(cfg.output_dir)
    name = str(cfg.get("prompt") or "") or Path(str(cfg.get("image") or "run")).stem
    return new_run_dir(cfg.get("outputs_root", "outputs"), cfg.experiment_name, name)


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    from .core.atomic import atomic_write_text

    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


@dataclass
class RunProgress:
    """Where a run is, for the one line an interruption prints."""

    run_dir: Optional[Path] = None
    """The run directory, once created."""
    phase: str = "start-up"
    """``start-up``, ``training``, ``loading`` (export/test modes) or ``finishing`` (export, video, report)."""

    def interrupted(self, error: BaseException) -> str:
        """The line printed for a SIGINT/SIGTERM at this point of the run."""
        from .core.trainer import TrainingInterrupted

        if isinstance(error, TrainingInterrupted):
            return f"interrupted: checkpoint saved to {error.path}; continue with resume={self.run_dir}"
        if self.run_dir is None:
            return "interrupted during start-up; nothing was written"
        if self.phase == "finishing":
            return (
                f"interrupted while exporting; the trained model is saved in {self.run_dir / 'ckpts'}: "
                f"export it with `python launch.py resume={self.run_dir} mode=export`"
            )
        saved = (self.run_dir / "ckpts" / "last.ckpt").is_file()
        return (
            f"interrupted during {self.phase} ({'from its last checkpoint' if saved else 'nothing trained yet'}); "
            f"continue with resume={self.run_dir}"
        )


def run(cfg: DictConfig, progress: Optional[RunProgress] = None) -> Path:
    """Run one configured experiment; returns the run directory. ``progress`` is kept up to date
    for the message of an interruption."""
    from .core.prepare import stage_inputs
    from .core.rundir import lock_run_dir
    from .core.trainer import Trainer
    from .core.transformers_output import hide_loading_bars

    progress = progress if progress is not None else RunProgress()
    hide_loading_bars()  # a bar per loaded model would break into the stages' progress lines
    with stage_inputs(cfg) as staged:  # a `prepare:` entry makes inputs (a photo → cut-out…) first
        validate(cfg)
        if cfg.get("mode", "train") == "train":
            from .systems.memory_estimate import print_memory_estimate

            print_memory_estimate(cfg)
        seed_everything(int(cfg.get("seed", 0)))
        run_started()
        run_dir = prepare_run_dir(cfg)
        lock = lock_run_dir(run_dir)  # noqa: F841 - held until the process ends
        progress.run_dir = run_dir
        staged.move_into(run_dir, cfg)
        if cfg.get("mode", "train") == "train" and not cfg.get("resume"):
            write_config(cfg, run_dir)
    print(f"run directory: {run_dir}", file=sys.stderr)
    trainer = Trainer(cfg, run_dir)
    mode = cfg.get("mode", "train")
    if mode == "train":
        progress.phase = "training"
        system = trainer.fit(resume=bool(cfg.get("resume")), start_stage=cfg.get("start_stage"))
    else:
        progress.phase = "loading"
        system = trainer.load_finished()
    from .systems.finalize import finalize_run

    progress.phase = "finishing"
    finalize_run(system, trainer, cfg, run_dir, mode)
    return run_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line (``sys.argv[1:]`` by default) → exit status: 0, 2 (an ``error:`` line),
    130/143 (interrupted: one line)."""
    with signals_handled():
        return _command(list(sys.argv[1:] if argv is None else argv))


def console_main() -> None:
    """The process entry (``launch.py``, the ``threestudio-like`` script): as :func:`main`, then
    exit with its status. The handlers stay installed to the end (a signal after the run said how
    it ended changes nothing) and signals are ignored while the interpreter shuts down."""
    handle_signals()
    try:
        code = _command(sys.argv[1:])
    except Interrupted as e:  # arrived after the run had printed how it ended
        code = e.exit_code
    ignore_signals()
    sys.exit(code)


def _command(argv: list[str]) -> int:
    from .usage import dispatch

    try:
        answered = dispatch(argv, config_dir, compose_config)  # --help, --version, --cfg, subcommands
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    if answered is not None:
        return answered
    if any(a in ("-m", "--multirun") for a in argv) or any(a.startswith("hydra/") for a in argv):
        return _hydra_main(argv)
    progress = RunProgress()
    try:
        run(compose_config(argv), progress)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Interrupted, KeyboardInterrupt) as e:
        print(progress.interrupted(e), file=sys.stderr)
        return e.exit_code if isinstance(e, Interrupted) else EXIT_INTERRUPTED
    except Exception as e:
        cause = interruption(e)  # a signal wrapped by Python (e.g. raised inside an import)
        if cause is None:
            raise
        print(progress.interrupted(cause), file=sys.stderr)
        return cause.exit_code
    return 0


def _hydra_main(argv: list[str]) -> int:
    """Multirun / launcher plugins through ``@hydra.main`` (one job per sweep point)."""
    import hydra

    register_resolvers()

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _task(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None

    sys.argv = [sys.argv[0]] + argv
    _task()
    return 0
