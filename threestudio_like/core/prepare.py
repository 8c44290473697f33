"""Inputs a run makes before its stages: the root ``prepare:`` entry.

``prepare: {_target_: …}`` names an :class:`InputPreparer` (``prepare=photo``: a photo → cut-out,
caption, depth and elevation, :class:`~threestudio_like.preprocess.prepare.PrepareInputs`). For a
new run (not on resume, whose saved config already holds the prepared inputs) the CLI, before it
validates anything else:

1. resolves the entry and builds the preparer (it checks its settings and locates its models);
2. calls ``prepare(directory)`` on an empty staging directory: the preparer checks its inputs,
   writes its files there and returns :class:`PreparedInputs` — config updates, some of them
   files of that directory;
3. applies the updates (validation then sees the prepared image, prompt, elevation…);
4. once the run directory exists, moves the staging directory to ``<run>/preprocess/`` and applies
   the file updates again with their final paths, before the config is saved.

The resolved entry replaces ``prepare`` in the config, so the saved config keeps what was prepared
from (the photo) while ``image`` names what it became. A refused or interrupted run removes the
staging directory: nothing is left behind.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from .config import Configurable, instantiate, to_container
from .interrupts import run_started

PREPARED_DIR = "preprocess"
"""Where a run keeps its prepared inputs."""


@dataclass
class PreparedInputs:
    """Config updates made by an :class:`InputPreparer`, by dotted config key."""

    files: dict[str, str] = field(default_factory=dict)
    """Keys whose value is a file the preparer wrote: its name in the preparer's directory."""
    values: dict[str, Any] = field(default_factory=dict)
    """Keys set to a value."""

    def updates(self, directory: Path) -> dict[str, Any]:
        return {**{key: str(directory / name) for key, name in self.files.items()}, **self.values}


class InputPreparer(Configurable):
    """A ``prepare:`` component: ``prepare(directory)`` writes a run's inputs into ``directory``
    (empty, existing) and returns the config updates that use them. It raises a
    :class:`~.errors.UserError` for a bad input before writing anything."""

    def prepare(self, directory: Path) -> PreparedInputs:
        raise NotImplementedError


class StagedInputs:
    """The prepared inputs of a run between their preparation and its run directory."""

    def __init__(self, directory: Optional[Path] = None, prepared: Optional[PreparedInputs] = None) -> None:
        self.directory = directory
        self.prepared = prepared

    def move_into(self, run_dir: Path, cfg: DictConfig) -> None:
        """Move the staged files to ``run_dir/preprocess`` and point the config at them there."""
        if self.directory is None or self.prepared is None:
            return
        target = run_dir / PREPARED_DIR
        shutil.rmtree(target, ignore_errors=True)  # an earlier run's, in a reused output_dir
        shutil.move(str(self.directory), str(target))
        self.directory = None
        apply_updates(cfg, self.prepared.updates(target))

    def discard(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


@contextmanager
def stage_inputs(cfg: DictConfig) -> Iterator[StagedInputs]:
    """Prepare ``cfg.prepare``'s inputs into a staging directory and apply them to ``cfg`` (steps
    1–3 of the module docstring); yields the staged inputs, removed on leaving unless moved into
    the run directory. Without a ``prepare`` entry, or on resume, nothing happens."""
    staged = StagedInputs()
    node = cfg.get("prepare")
    if node is None or cfg.get("resume"):
        yield staged
        return
    resolved = to_container(node)
    preparer = instantiate(dict(resolved), "prepare", expected=InputPreparer)
    cfg.prepare = OmegaConf.create(resolved)
    run_started()  # from here on an interruption is an exception, so the staging directory goes
    staged.directory = Path(tempfile.mkdtemp(prefix="threestudio_like-prepare-"))
    try:
        staged.prepared = preparer.prepare(staged.directory)
        apply_updates(cfg, staged.prepared.updates(staged.directory))
        yield staged
    finally:
        staged.discard()


def apply_updates(cfg: DictConfig, updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
