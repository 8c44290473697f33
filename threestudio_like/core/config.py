"""Typed component configs and explicit ``_target_`` instantiation.

Every component declares ``@dataclass class Config`` with documented fields. YAML (or a dict)
is validated against it with :func:`parse_structured`: an unknown key is a :class:`UserError`
that names the key and lists the valid ones; a value of the wrong type names the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, Mapping, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from .errors import UserError

T = TypeVar("T")


def to_container(cfg: Any) -> Any:
    """Plain python containers (dict/list) from an OmegaConf node or pass-through."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def parse_structured(config_cls: type[T], cfg: Mapping | DictConfig | T | None, where: str = "") -> T:
    """Validate ``cfg`` against the dataclass ``config_cls`` and return a typed instance.

    ``where`` names the config path in error messages (e.g. ``stage.coarse.geometry``).
    Keys starting with ``_`` (``_target_``) are ignored.
    """
    if isinstance(cfg, config_cls):
        return cfg
    data = to_container(cfg) or {}
    if not isinstance(data, dict):
        raise UserError(f"{where or config_cls.__qualname__}: expected a mapping, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if not str(k).startswith("_")}
    valid = [f.name for f in dataclasses.fields(config_cls)]
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            prefix = f"{where}." if where else ""
            raise UserError(
                f"unknown config key '{prefix}{key}'{hint}; valid keys: {', '.join(sorted(valid))}"
            )
    try:
        schema = OmegaConf.structured(config_cls)
        merged = OmegaConf.merge(schema, data)
        return OmegaConf.to_object(merged)
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as e:
        msg = str(e).splitlines()[0]
        raise UserError(f"{where or config_cls.__qualname__}: {msg}") from None


def import_target(path: str) -> Any:
    """Import ``package.module.Name`` and return ``Name``; a bad path is a UserError."""
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"cannot import _target_ '{path}': {e}") from None


def instantiate(cfg: Mapping | DictConfig, where: str = "", **kwargs: Any) -> Any:
    """Build the object named by ``cfg['_target_']`` as ``Target(cfg_without_target, **kwargs)``.

    Components take their (unvalidated) config mapping as first argument and validate it
    themselves with :func:`parse_structured`.
    """
    data = to_container(cfg)
    if not isinstance(data, dict) or "_target_" not in data:
        raise UserError(f"{where or 'component'}: config has no _target_ naming the class to build")
    target = import_target(data.pop("_target_"))
    return target(data, where=where, **kwargs) if _accepts_where(target) else target(data, **kwargs)


def _accepts_where(target: Any) -> bool:
    import inspect

    try:
        return "where" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def merge_component(shared: Any, override: Any) -> dict | None:
    """A stage's component config from the experiment-wide one and the stage's entry.

    The stage entry *replaces* the shared one when it names a ``_target_`` of its own (another
    class), otherwise its keys override the shared fields.
    """
    shared_d = to_container(shared)
    over_d = to_container(override)
    if over_d is None:
        return None if shared_d is None else dict(shared_d)
    if shared_d is None or ("_target_" in over_d and over_d["_target_"] != shared_d.get("_target_")):
        return dict(over_d)
    return to_container(OmegaConf.merge(OmegaConf.create(shared_d), OmegaConf.create(over_d)))


class Configurable:
    """Mixin: ``self.cfg`` is the validated ``Config`` of the class.

    Subclasses call ``self.cfg = self.parse_config(cfg, where)`` (or rely on
    :meth:`__init_config__`) at the top of ``__init__``.
    """

    @dataclasses.dataclass
    class Config:
        pass

    cfg: Any

    def parse_config(self, cfg: Any, where: str = "") -> Any:
        self.cfg = parse_structured(self.Config, cfg, where or type(self).__name__)
        return self.cfg
