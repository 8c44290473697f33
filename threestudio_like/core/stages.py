"""Stages as data: resolve each stage's full config from the experiment config.

An experiment config has experiment-wide component configs (``data``, ``geometry``,
``material``, ``background``, ``renderer``, ``guidance``, ``prompt_processor``, ``terms``,
``loss``, ``optimizer``...) and ``stage.<name>`` entries that override them; ``stages`` lists the
stage names to run, in order. For a component, a stage entry that names a ``_target_`` of
another class *replaces* the shared config, otherwise its keys override the shared fields
(``core.config.merge_component``). ``terms`` and ``loss`` are merged key by key (a ``null``
term removes it). ``limits`` (set by ``debug=smoke``) caps steps and resolutions and overlays
component fields where a component has them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig

from .config import Configurable, import_target, merge_component, to_container
from .errors import UserError

COMPONENTS = ("data", "geometry", "material", "background", "renderer", "guidance", "prompt_processor")
MERGED_DICTS = ("terms", "loss", "optimizer")


def stage_names(cfg: DictConfig) -> list[str]:
    """The stage names to run, validated against ``stage``."""
    names = list(to_container(cfg.get("stages")) or [])
    defined = list((to_container(cfg.get("stage")) or {}).keys())
    if not names:
        raise UserError(f"no stages to run: set stages=[...] (this experiment defines {defined})")
    for n in names:
        if n not in defined:
            raise UserError(f"unknown stage '{n}'; this experiment defines: {', '.join(defined)}")
    return names


def resolve_stage(cfg: DictConfig, name: str) -> dict[str, Any]:
    """The full config of stage ``name`` (plain dict) ready for the system class."""
    stage = dict(to_container(cfg.stage[name]) or {})
    out: dict[str, Any] = {}
    for comp in COMPONENTS:
        merged = merge_component(cfg.get(comp), stage.pop(comp, None))
        if merged is not None:
            out[comp] = merged
    for key in MERGED_DICTS:
        shared = dict(to_container(cfg.get(key)) or {})
        shared.update(stage.pop(key, None) or {})
        out[key] = {k: v for k, v in shared.items() if v is not None}
    out.update(stage)
    _apply_limits(out, to_container(cfg.get("limits")) or {})
    return out


def _apply_limits(stage: dict[str, Any], limits: dict[str, Any]) -> None:
    max_steps = limits.get("max_steps")
    if max_steps is not None:
        stage["steps"] = min(int(stage.get("steps", max_steps)), int(max_steps))
    max_res = limits.get("max_resolution")
    if max_res is not None and "data" in stage:
        data = stage["data"]
        for key in ("height", "width", "eval_height", "eval_width"):
            if key in data:
                data[key] = _cap(data[key], int(max_res))
            else:
                data[key] = int(max_res)
        if data.get("resolution_schedule"):
            data["resolution_schedule"] = [
                [s, min(int(h), int(max_res)), min(int(w), int(max_res)), b]
                for s, h, w, b in data["resolution_schedule"]
            ]
    for comp, overlay in (limits.get("overlay") or {}).items():
        if comp in stage and isinstance(stage[comp], dict) and overlay:
            overlay_fields(stage[comp], overlay)


def _cap(value: Any, cap: int) -> Any:
    if isinstance(value, (int, float)):
        return min(int(value), cap)
    if isinstance(value, list) and len(value) == 4:  # ramp
        return [value[0], min(int(value[1]), cap), min(int(value[2]), cap), value[3]]
    if isinstance(value, dict) and "milestones" in value:
        return {**value, "milestones": [[s, min(int(v), cap)] for s, v in value["milestones"]]}
    return cap


def overlay_fields(component: dict[str, Any], overlay: dict[str, Any]) -> None:
    """Set overlay fields that the component's Config declares (others are skipped); inside a
    dict-valued field, only keys that dict already has."""
    target = component.get("_target_")
    try:
        cls = import_target(target) if target else None
    except UserError:
        return
    configurable = isinstance(cls, type) and issubclass(cls, Configurable)
    valid = {f.name for f in dataclasses.fields(cls.Config)} if configurable else set()
    for key, value in overlay.items():
        if key in valid:
            if isinstance(value, dict) and isinstance(component.get(key), dict):
                # a nested dict (an encoding config) only gets the keys it already has
                component[key] = {**component[key], **{k: v for k, v in value.items() if k in component[key]}}
            else:
                component[key] = value
