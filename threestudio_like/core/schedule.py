"""Scheduled scalars and the ``update_step`` hook.

Any scalar in a config (loss weight, timestep range bound, resolution, batch size) may be a
*schedule* instead of a number:

* ``0.5`` — constant;
* ``[start_step, start_value, end_value, end_step]`` — linear ramp (threestudio's ``C()``):
  ``start_value`` until ``start_step``, ``end_value`` from ``end_step`` on, linear between;
* ``{"milestones": [[0, 64], [500, 128], [1000, 256]]}`` — stepwise: the value of the last
  milestone whose step is ≤ the current step;
* ``{"start": a, "end": b, "start_step": s0, "end_step": s1, "kind": "linear"|"cosine"|"exponential"}``
  (``exponential``: linear in the logarithm, a and b > 0 — 3DGS's position learning rate).

Components that hold schedules subclass :class:`Updateable`; the trainer calls
``system.update_step(epoch, global_step)`` once before every training step, and the call
recurses into every child component.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

from torch import nn

from .errors import UserError

ScheduleSpec = Any  # float | int | list[4] | dict


def schedule_value(spec: ScheduleSpec, global_step: int) -> float:
    """The value of ``spec`` at ``global_step`` (see module docstring for the forms)."""
    if isinstance(spec, bool):
        raise UserError(f"a schedule must be a number, a 4-list or a dict, got {spec!r}")
    if isinstance(spec, (int, float)):
        return spec
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != 4:
            raise UserError(f"a ramp schedule is [start_step, start_value, end_value, end_step], got {list(spec)!r}")
        s0, v0, v1, s1 = spec
        return _interp(global_step, s0, s1, v0, v1, "linear")
    if isinstance(spec, dict):
        if "milestones" in spec:
            value = None
            for step, v in sorted(spec["milestones"], key=lambda m: m[0]):
                if global_step >= step or value is None:
                    value = v
            if value is None:
                raise UserError("a milestones schedule needs at least one [step, value] pair")
            return value
        try:
            return _interp(
                global_step,
                spec["start_step"],
                spec["end_step"],
                spec["start"],
                spec["end"],
                spec.get("kind", "linear"),
            )
        except KeyError as e:
            raise UserError(f"schedule dict {spec!r} misses key {e}") from None
    raise UserError(f"cannot read schedule {spec!r}")


def schedule_values(spec: ScheduleSpec, where: str = "schedule") -> list[float]:
    """Every value ``spec`` takes (its constant, ramp ends or milestones); a :class:`UserError`
    naming ``where`` when it is no number or schedule."""

    def number(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UserError(f"{where} must be a number or a schedule, got {v!r}")
        return v

    if isinstance(spec, dict) and "milestones" in spec:
        pairs = spec["milestones"]
        if not pairs or not all(isinstance(m, Sequence) and len(m) == 2 for m in pairs):
            raise UserError(f"{where}: a milestones schedule is a list of [step, value] pairs, got {pairs!r}")
        return [number(v) for _, v in pairs]
    if isinstance(spec, dict):
        missing = [k for k in ("start", "end", "start_step", "end_step") if k not in spec]
        if missing:
            raise UserError(f"{where}: schedule dict {spec!r} misses {', '.join(missing)}")
        return [number(spec["start"]), number(spec["end"])]
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != 4:
            raise UserError(
                f"{where}: a ramp schedule is [start_step, start_value, end_value, end_step], got {list(spec)!r}"
            )
        return [number(spec[1]), number(spec[2])]
    return [number(spec)]


def _interp(step: int, s0: int, s1: int, v0: float, v1: float, kind: str) -> float:
    if step <= s0:
        return v0
    if step >= s1:
        return v1
    a = (step - s0) / max(s1 - s0, 1)
    if kind == "exponential":
        if v0 <= 0 or v1 <= 0:
            raise UserError(f"an exponential schedule needs start and end > 0, got {v0} and {v1}")
        return v0 * (v1 / v0) ** a
    if kind == "cosine":
        a = 0.5 - 0.5 * math.cos(math.pi * a)
    elif kind != "linear":
        raise UserError(f"schedule kind must be 'linear', 'cosine' or 'exponential', got '{kind}'")
    value = v0 + (v1 - v0) * a
    return type(v0)(round(value)) if isinstance(v0, int) and isinstance(v1, int) else value


class Updateable:
    """Receives ``update_step(epoch, global_step)`` and forwards it to child components."""

    def update_step(self, epoch: int, global_step: int) -> None:
        for child in self._updateable_children():
            child.update_step(epoch, global_step)
        self.on_update_step(epoch, global_step)

    def on_update_step(self, epoch: int, global_step: int) -> None:
        """Override to read this component's schedules at ``global_step``."""

    def _updateable_children(self) -> Iterator[Updateable]:
        """The nearest Updateable components below this one: attributes and submodules, looking
        through plain containers (``nn.ModuleDict``/``ModuleList``: a stage's loss terms)."""
        seen: set[int] = set()
        stack = list(getattr(self, "_modules", {}).values()) + list(vars(self).values())
        while stack:
            child = stack.pop(0)
            if child is self or id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, Updateable):
                yield child
            elif isinstance(child, nn.Module):  # a container (or a component with no schedule)
                stack.extend(child._modules.values())
