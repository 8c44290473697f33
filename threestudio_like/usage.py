"""What the command line answers without training: ``--help``, ``--version``, ``--cfg job|hydra|all``,
and subcommands beside ``key=value`` overrides.

:func:`dispatch` looks at the words first; what it does not answer (a run: overrides, ``-m``) goes
back to ``cli.main``. A word that is neither an override nor anything listed here is a
:class:`UserError` naming what the command line accepts.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Callable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import __version__
from .core.errors import UserError


@dataclass(frozen=True)
class Subcommand:
    """A command word before the overrides: ``threestudio-like NAME ARGS…``."""

    target: str
    """``module:function``; the function takes the words after NAME and returns the exit status."""
    summary: str
    """One line for ``--help``."""


# Subcommands by name; `preprocess` (issue 26), `eval` and `compare` (issue 28) register here.
SUBCOMMANDS: dict[str, Subcommand] = {
    "preprocess": Subcommand(
        "threestudio_like.preprocess.cli:main", "photo → cut-out, mask, depth, caption for image-to-3D (SAM, BLIP, DPT)"
    ),
    "eval": Subcommand(
        "threestudio_like.eval.command:main", "score a finished run (CLIP, consistency, geometry) → RUN_DIR/eval.json"
    ),
    "compare": Subcommand(
        "threestudio_like.eval.compare:main", "runs side by side: turntables, metrics, loss curves, config → one HTML"
    ),
}

CFG_PARTS = ("job", "hydra", "all")
HELP_FLAGS = ("-h", "--help")
MULTIRUN_FLAGS = ("-m", "--multirun")
SUMMARY_WIDTH = 100

# A Hydra override: key=value, +key=value (add), ++key=value (add or set), ~key[=value] (delete).
# Keys are dotted paths; `group@package` and `group/option` forms included.
_OVERRIDE = re.compile(r"^(?:(?:\+\+|\+)?[A-Za-z_][\w.\-/@]*=|~[A-Za-z_][\w.\-/@]*(?:=|$))")

# (key, meaning) for --help; tests/test_cli_usage.py checks that every key exists in the config.
COMMON_KEYS: tuple[tuple[str, str], ...] = (
    ('prompt="…"  negative_prompt="…"', "text input"),
    ("image=PATH  depth=PATH", "RGBA image (object segmented); optional monocular depth (.npy or 16-bit PNG)"),
    ("seed=N", "random seed (same command and seed on one machine: identical checkpoints)"),
    ("output_dir=DIR", "run directory (default outputs/<experiment>/<prompt>@<timestamp>/)"),
    ("stages=[A,B]  start_stage=A", "run part of an experiment; start_stage with resume= restarts from A"),
    ("resume=RUN_DIR  mode=train|export|test", "continue a run, or re-export / re-render a finished one"),
    ("debug=smoke", "tiny shipped models, 3 steps a stage, 32 px: any experiment in seconds on CPU"),
    ("stage.NAME.steps=N", "a field of one stage (any key: stage.refine.geometry.isosurface_resolution=64)"),
    ("stage.NAME.loss.guidance=W", "weight of a stage's guidance, whichever prior fills it (also loss.<term>)"),
    ("models.sd=ID|DIR", "hub id (local HF cache only) or a directory; also models.zero123, models.clip"),
    ("trainer.device=auto|cpu|cuda", "device; trainer.precision=32|bf16|16-mixed (autocast, CUDA only)"),
    ("export.formats=[obj,glb,ply]", "files the export writes (export.texture_size=N: texture side in pixels)"),
    ("evaluators=[]", "what scores the finished run ([] turns the toy-shape score off)"),
)


def dispatch(
    argv: Sequence[str], config_dir: Callable[[], Path], compose: Callable[[list[str]], DictConfig]
) -> Optional[int]:
    """Answer ``--help``, ``--version``, ``--cfg`` or a subcommand and return the exit status;
    ``None`` when ``argv`` is a run (``key=value`` overrides, or Hydra's ``-m`` command line).

    ``config_dir`` locates ``configs/``; ``compose`` builds the run's config from overrides.
    """
    words = list(argv)
    if words and words[0] in SUBCOMMANDS:  # its own --help
        module, _, function = SUBCOMMANDS[words[0]].target.partition(":")
        return int(getattr(import_module(module), function)(words[1:]))
    if any(w in HELP_FLAGS for w in words):
        print(help_text(config_dir()))
        return 0
    if "--version" in words:
        print(f"threestudio-like {__version__}")
        return 0
    if any(w in MULTIRUN_FLAGS or w.startswith("hydra/") for w in words):
        return None  # Hydra's own command line (sweeps, launcher plugins)
    part, overrides = _split_cfg_flag(words)
    for word in overrides:
        if not _OVERRIDE.match(word):
            raise UserError(_not_accepted(word, config_dir()))
    if part is None:
        return None
    print(show_config(part, overrides, config_dir(), compose), end="")
    return 0


def _split_cfg_flag(words: list[str]) -> tuple[Optional[str], list[str]]:
    """(``job``/``hydra``/``all`` or None, the other words) from ``--cfg PART``, ``--cfg=PART``, ``-c PART``."""
    part, rest, i = None, [], 0
    while i < len(words):
        word = words[i]
        if word in ("--cfg", "-c") or word.startswith("--cfg="):
            if "=" in word:
                value = word.split("=", 1)[1]
            else:
                value = words[i + 1] if i + 1 < len(words) else ""
                i += 1
            if value not in CFG_PARTS:
                raise UserError(f"--cfg takes one of {', '.join(CFG_PARTS)}, got '{value}'")
            part = value
        else:
            rest.append(word)
        i += 1
    return part, rest


def _not_accepted(word: str, configs: Path) -> str:
    options = {option: group for group, names in config_groups(configs).items() for option in names}
    hint = f" (did you mean {options[word]}={word}?)" if word in options else ""
    accepted = "key=value overrides, -m/--multirun, --cfg job|hydra|all, --help, --version"
    if SUBCOMMANDS:
        accepted += f", subcommands: {', '.join(sorted(SUBCOMMANDS))}"
    return f"'{word}' is not a key=value override{hint}; the command line takes {accepted}"


def show_config(part: str, overrides: list[str], configs: Path, compose: Callable[[list[str]], DictConfig]) -> str:
    """The composed config as YAML: ``job`` resolved (what a run would use), ``hydra`` Hydra's
    own node as composed (its runtime fields are filled only when Hydra launches a job), ``all`` both."""
    out = []
    if part in ("hydra", "all"):
        out.append(OmegaConf.to_yaml({"hydra": _hydra_node(overrides, configs)}))
    if part in ("job", "all"):
        cfg = compose(overrides)
        try:
            out.append(OmegaConf.to_yaml(cfg, resolve=True))
        except OmegaConfBaseException as e:
            raise UserError(f"cannot resolve the config: {str(e).splitlines()[0]}") from None
    return "".join(out)


def _hydra_node(overrides: list[str], configs: Path) -> DictConfig:
    """Hydra's node for the config groups chosen (``experiment=``, ``guidance=``…) and ``hydra.*`` keys."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    chosen = [o for o in overrides if "." not in o.split("=", 1)[0] or o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        try:
            return compose(config_name="config", overrides=chosen, return_hydra_config=True).hydra
        except HydraException as e:
            raise UserError(str(e).strip().splitlines()[0]) from None


# ---- --help ----------------------------------------------------------------------------
def program_name() -> str:
    """``python launch.py`` when started through the shim, else the console script's name."""
    return "python launch.py" if Path(sys.argv[0]).name == "launch.py" else "threestudio-like"


def config_groups(configs: Path) -> dict[str, list[str]]:
    """Config group → its options (``configs/<group>/<option>.yaml``), experiments included."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(configs.iterdir())
        if d.is_dir() and any(d.glob("*.yaml"))
    }


def experiment_summary(path: Path, width: int = SUMMARY_WIDTH) -> str:
    """One line from an experiment file's leading comment (after ``# @package``): its first
    sentence, or when that is longer than ``width``, its first line — cut at the line's last clause
    boundary (`` — ``, ``: ``, ``, ``, `` (``) outside parentheses when the line breaks off mid-clause."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith("@package"):
            lines.append(text)
    if not lines:
        return ""
    # a sentence ends at a full stop that ends a line or is followed by a capital ("et al. 2023" goes on)
    summary = re.split(r"(?<=\.)(?:\n|\s+(?=[A-Z`]))", "\n".join(lines), maxsplit=1)[0].replace("\n", " ")
    if len(summary) > width:
        summary = lines[0]
        if not summary.endswith((".", ":", ";", ",")) or summary.count("(") > summary.count(")"):
            cuts = [m.start() for m in re.finditer(r" — |: |, | \(", summary)]
            balanced = [c for c in cuts if summary[:c].count("(") == summary[:c].count(")")]
            summary = summary[: max(balanced)] if balanced else summary
    return summary.rstrip(".:;, ")


def help_text(configs: Path) -> str:
    prog = program_name()
    groups = config_groups(configs)
    experiments = groups.pop("experiment", [])
    pad = max(map(len, [*experiments, *groups, *SUBCOMMANDS]), default=0) + 2
    lines = [
        f"usage: {prog} [key=value …]                    run an experiment, all its stages",
        f"       {prog} -m key=a,b [key=value …]         one run per value (Hydra multirun)",
        f"       {prog} --cfg job|hydra|all [key=value …]  print the composed config; nothing runs",
        f"       {prog} --help | --version",
    ]
    if SUBCOMMANDS:
        lines.append(f"       {prog} COMMAND [args …]")
    lines += [
        "",
        "Text or one image → textured 3-D asset by score distillation. Overrides use Hydra's syntax:",
        "key=value sets a key, +key=value adds one, GROUP=OPTION picks a config file.",
        "",
        "experiments (experiment=NAME; configs/experiment/NAME.yaml):",
        *(f"  {name:<{pad}}{experiment_summary(configs / 'experiment' / f'{name}.yaml')}" for name in experiments),
        "",
        "config groups (GROUP=OPTION; an experiment picks its own, the command line overrides it):",
        *(f"  {group:<{pad}}{' | '.join(options)}" for group, options in groups.items()),
        "",
        "common keys:",
        *(f"  {key:<40}{meaning}" for key, meaning in COMMON_KEYS),
    ]
    if SUBCOMMANDS:
        lines += ["", "commands:", *(f"  {n:<{pad}}{s.summary}" for n, s in sorted(SUBCOMMANDS.items()))]
    lines += [
        "",
        "examples:",
        f'  {prog} experiment=magic3d prompt="a red cube" debug=smoke',
        f'  {prog} experiment=dreamfusion prompt="a hamburger" guidance=vsd seed=1',
        f"  {prog} mode=export resume=outputs/default/a_red_cube@20261204-120000 export.texture_size=2048",
        "",
        "More: README.md (the manual), docs/configuration.md (every key of every component).",
    ]
    return "\n".join(lines)
