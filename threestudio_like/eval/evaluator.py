"""Evaluators: what scores a finished run.

The root config's ``evaluators`` lists them (each a component with ``_target_``, like
``{_target_: threestudio_like.eval.toy_shape.ToyShapeEvaluator}``); an experiment lists the ones
that apply to it. At the end of a ``train`` or ``export`` run ``systems/finalize.py`` calls, in the
order listed, :meth:`Evaluator.evaluate` on the final system (in eval mode, without gradients),
logs the scores it returns to ``metrics.jsonl`` as one record with ``"stage": "eval"`` and prints
:meth:`Evaluator.summary` on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..core.config import Configurable, import_target, to_container
from ..core.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from ..systems.score_distillation import ScoreDistillationSystem

Scores = dict[str, float | int | str]
"""Scalars by name (numbers, or names such as the shape scored against)."""


@dataclass(frozen=True)
class RunInputs:
    """What the run was asked for (the root config's ``prompt`` and ``image``)."""

    prompt: str = ""
    """The text prompt ("" when none)."""
    image: Optional[str] = None
    """Path of the input image, or None."""

    @classmethod
    def from_config(cls, cfg: Any) -> RunInputs:
        return cls(prompt=str(cfg.get("prompt") or ""), image=str(cfg.get("image")) if cfg.get("image") else None)

    def descriptions(self) -> list[str]:
        """What the run is of, most trusted first: the input image's file name as words
        (``red_cube.png`` → ``"red cube"``: what the picture shows), then the prompt (for a photo, it
        may be a captioner's guess)."""
        image = [Path(self.image).stem.replace("_", " ")] if self.image else []
        return image + ([self.prompt] if self.prompt else [])


class Evaluator(Configurable):
    """Scores the final model of a run. Subclasses declare their ``Config`` and implement
    :meth:`evaluate` and :meth:`summary`; the constructor only validates the config (it runs when
    the command line is checked, before anything is written)."""

    def __init__(self, cfg: Any = None, where: str = "evaluators") -> None:
        self.parse_config(cfg, where)

    def evaluate(self, system: ScoreDistillationSystem, inputs: RunInputs) -> Optional[Scores]:
        """Scores of ``system`` (the last stage's, in eval mode), or None when there is nothing to
        score for these inputs."""
        raise NotImplementedError  # pragma: no cover - abstract

    def summary(self, scores: Scores) -> str:
        """One line for stderr from the scores :meth:`evaluate` returned."""
        raise NotImplementedError  # pragma: no cover - abstract


def build_evaluators(cfg: Any) -> list[Evaluator]:
    """The evaluators of the root config's ``evaluators`` list, in order (config errors are
    :class:`UserError` naming ``evaluators[i]``)."""
    entries = to_container(cfg)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UserError(f"evaluators must be a list of components with a _target_, got {type(entries).__name__}")
    evaluators = []
    for i, entry in enumerate(entries):
        where = f"evaluators[{i}]"
        if not isinstance(entry, dict) or "_target_" not in entry:
            raise UserError(f"{where}: an evaluator needs a _target_ naming its class, got {entry!r}")
        cls = import_target(entry["_target_"])
        if not (isinstance(cls, type) and issubclass(cls, Evaluator)):
            raise UserError(
                f"{where}: {entry['_target_']} is not an evaluator "
                "(a subclass of threestudio_like.eval.evaluator.Evaluator)"
            )
        evaluators.append(cls({k: v for k, v in entry.items() if k != "_target_"}, where=where))
    return evaluators
