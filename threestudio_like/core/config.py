"""Typed component configs and explicit ``_target_`` instantiation.

Every component declares ``@dataclass class Config`` with documented fields. YAML (or a dict)
is validated against it with :func:`parse_structured`: an unknown key is a :class:`UserError`
that names the key and lists the valid ones; a value of the wrong type names the field; a field
annotated ``Literal["a", "b"]`` (a fixed set of choices) accepts only those values, and a wrong one
is a :class:`UserError` listing them with a did-you-mean hint. Numeric ranges live with the field
too: ``Annotated[int, Range(ge=0)]`` (aliases :data:`NonNegativeInt`, :data:`PositiveInt`,
:data:`PositiveFloat`, :data:`Probability`), and ``Annotated[Any, Schedule(Range(...))]`` for a
field that holds a number or a schedule (every value the schedule takes is checked). Nested
dataclass fields are checked the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import types
import typing
from typing import Annotated, Any, Literal, Mapping, Optional, TypeVar, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from .errors import UserError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric config field: ``ge`` ≤ value, ``gt`` < value, value ≤ ``le``, value < ``lt``."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None

    def describe(self) -> str:
        parts = [
            f"{op} {v:g}"
            for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if v is not None
        ]
        return " and ".join(parts)

    def contains(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Marks a field that holds a number or a schedule (``core/schedule.py``); ``bounds`` apply to
    every value it takes."""

    bounds: Range = Range()


NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveInt = Annotated[int, Range(gt=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Probability = Annotated[float, Range(ge=0, le=1)]


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
    _check_keys(config_cls, data, where)
    data = _ints_as_floats(config_cls, data)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(_omegaconf_schema(config_cls)), data)
        plain = OmegaConf.to_object(merged)
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as e:
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)
        raise UserError(f"{_join(where, key) if key else where or config_cls.__qualname__}: {msg}") from None
    return _from_schema(config_cls, plain, where)


def _check_keys(config_cls: type, data: dict, where: str) -> None:
    """Every key of ``data`` (and of nested config dataclasses' mappings) is a field."""
    valid = [f.name for f in dataclasses.fields(config_cls)]
    types = _field_types(config_cls)
    for key, value in data.items():
        if key not in valid:
            raise UserError(
                f"unknown config key '{_join(where, key)}'{_did_you_mean(key, valid)}; "
                f"valid keys: {', '.join(sorted(valid))}"
            )
        nested = _nested_config(types.get(key))
        if nested is not None and isinstance(value, dict):
            _check_keys(nested, value, _join(where, key))


def _ints_as_floats(tp: Any, value: Any) -> Any:
    """``value`` with the ints that ``tp`` types as float made floats, inside lists and nested
    configs as well (OmegaConf converts an int for a ``float`` or ``list[float]`` field, not one
    inside ``list[list[float]]``: ``prepare.elevation.views=[[20,0]]``)."""
    tp = _split_annotated(tp)[0]
    nested = _nested_config(tp)
    if nested is not None and isinstance(value, dict):
        types = _field_types(nested)
        return {k: _ints_as_floats(types[k], v) if k in types else v for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(tp) is list and isinstance(value, list):
        (item,) = typing.get_args(tp) or (Any,)
        return [_ints_as_floats(item, v) for v in value]
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _did_you_mean(value: Any, choices: typing.Sequence[Any]) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def literal_choices(annotation: Any) -> Optional[tuple[Any, ...]]:
    """The allowed values of ``Literal[...]`` or ``Optional[Literal[...]]`` (None included), else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if _is_union(annotation):
        args = typing.get_args(annotation)
        literals = [a for a in args if typing.get_origin(a) is Literal]
        if len(literals) == 1 and all(a is type(None) or a is literals[0] for a in args):
            return (*typing.get_args(literals[0]), None)
    return None


def _is_union(annotation: Any) -> bool:
    """``Optional[X]``/``Union[X, Y]`` or ``X | Y``."""
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _field_types(config_cls: type) -> dict[str, Any]:
    """Resolved annotations of a config dataclass (``from __future__ import annotations`` safe),
    ``Annotated`` metadata kept."""
    try:
        return typing.get_type_hints(config_cls, include_extras=True)
    except Exception:  # an annotation that cannot be resolved: such fields are left to OmegaConf
        return {f.name: f.type for f in dataclasses.fields(config_cls)}


def _split_annotated(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """(the type, its ``Annotated`` metadata); ``Optional[Annotated[...]]`` keeps the Optional."""
    if typing.get_origin(tp) is Annotated:
        return typing.get_args(tp)[0], tp.__metadata__
    if _is_union(tp):
        args = typing.get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and typing.get_origin(inner[0]) is Annotated:
            return Optional[typing.get_args(inner[0])[0]], inner[0].__metadata__
    return tp, ()


def _check_range(value: Any, metadata: tuple[Any, ...], where: str) -> None:
    from .schedule import schedule_values

    for meta in metadata:
        if isinstance(meta, Range) and value is not None and not meta.contains(value):
            raise UserError(f"{where} must be {meta.describe()}, got {value!r}")
        if isinstance(meta, Schedule) and value is not None:
            for v in schedule_values(value, where):
                if not meta.bounds.contains(v):
                    raise UserError(
                        f"{where} must be {meta.bounds.describe()} (every value of its schedule), got {v!r}"
                    )


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _nested_config(tp: Any) -> Optional[type]:
    """The config dataclass of a ``Config`` or ``Optional[Config]`` field, else None."""
    if _is_dataclass_type(tp):
        return tp
    if _is_union(tp):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and _is_dataclass_type(inner[0]):
            return inner[0]
    return None


def nested_config_field(config_cls: type, name: str) -> Optional[type]:
    """The config dataclass of field ``name`` of ``config_cls`` (a ``Config`` or ``Optional[Config]``
    field), else None."""
    tp = _field_types(config_cls).get(name)
    return None if tp is None else _nested_config(_split_annotated(tp)[0])


@functools.cache
def _omegaconf_schema(config_cls: type) -> type:
    """``config_cls`` as OmegaConf can read it: ``Literal`` fields become plain ``Any`` (checked
    afterwards by :func:`_from_schema`), nested config dataclasses are converted the same way."""
    types = {name: _split_annotated(tp)[0] for name, tp in _field_types(config_cls).items()}
    annotated = any(_split_annotated(tp)[1] for tp in _field_types(config_cls).values())
    if not annotated and not any(
        literal_choices(t) is not None or _nested_config(t) is not None for t in types.values()
    ):
        return config_cls
    fields = []
    for f in dataclasses.fields(config_cls):
        tp = types.get(f.name, f.type)
        nested = _nested_config(tp)
        if literal_choices(tp) is not None:
            tp = Any
        elif nested is not None:
            tp = _omegaconf_schema(nested) if nested is tp else Optional[_omegaconf_schema(nested)]
        spec = (
            dataclasses.field(default=f.default)
            if f.default is not dataclasses.MISSING
            else (
                dataclasses.field(default_factory=_schema_factory(f.default_factory, tp))
                if f.default_factory is not dataclasses.MISSING
                else dataclasses.field()
            )
        )
        fields.append((f.name, tp, spec))
    return dataclasses.make_dataclass(f"{config_cls.__name__}Schema", fields)


def _schema_factory(factory: Any, schema_type: Any) -> Any:
    """A nested config's default factory producing the schema class's instance."""
    if not _is_dataclass_type(schema_type) or schema_type is factory:
        return factory

    def make() -> Any:
        return _as_schema(factory(), schema_type)

    return make


def _as_schema(value: Any, schema_type: Any) -> Any:
    """A config dataclass instance as an instance of its schema class, its nested configs too."""
    if not _is_dataclass_type(schema_type) or not dataclasses.is_dataclass(value) or isinstance(value, schema_type):
        return value
    types = {f.name: _nested_config(f.type) for f in dataclasses.fields(schema_type)}
    return schema_type(**{f.name: _as_schema(getattr(value, f.name), types[f.name]) for f in dataclasses.fields(value)})


def _from_schema(config_cls: type[T], plain: Any, where: str) -> T:
    """The typed ``config_cls`` instance of an OmegaConf-validated schema object, ``Literal``
    choices and ranges checked."""
    types = _field_types(config_cls)
    values = {}
    for f in dataclasses.fields(config_cls):
        value = getattr(plain, f.name)
        tp, metadata = _split_annotated(types.get(f.name, f.type))
        _check_range(value, metadata, _join(where, f.name))
        choices = literal_choices(tp)
        if choices is not None and value not in choices:
            shown = "|".join("null" if c is None else str(c) for c in choices)
            raise UserError(
                f"{_join(where, f.name)} must be one of {shown}, got '{value}'"
                f"{_did_you_mean(value, [c for c in choices if c is not None])}"
            )
        nested = _nested_config(tp)
        if nested is not None and value is not None:
            value = _from_schema(nested, value, _join(where, f.name))
        values[f.name] = value
    return config_cls(**values)


def import_target(path: str) -> Any:
    """Import ``package.module.Name`` and return ``Name``; a bad path is a UserError."""
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"cannot import _target_ '{path}': {e}") from None


def instantiate(cfg: Mapping | DictConfig, where: str = "", expected: Optional[type] = None, **kwargs: Any) -> Any:
    """Build the object named by ``cfg['_target_']`` as ``Target(cfg_without_target, **kwargs)``.

    Components take their (unvalidated) config mapping as first argument and validate it
    themselves with :func:`parse_structured`. With ``expected``, a target that is not a subclass
    of it (the interface the caller uses) is a :class:`UserError`.
    """
    data = to_container(cfg)
    if not isinstance(data, dict) or "_target_" not in data:
        raise UserError(f"{where or 'component'}: config has no _target_ naming the class to build")
    path = data.pop("_target_")
    target = import_target(path)
    if expected is not None and not (isinstance(target, type) and issubclass(target, expected)):
        raise UserError(
            f"{where or 'component'}: _target_ '{path}' is not a {expected.__name__} "
            f"({expected.__module__}.{expected.__qualname__})"
        )
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
