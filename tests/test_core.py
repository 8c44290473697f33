"""Config validation, schedules, slugs, atomic checkpoints."""

import math
import os
import random
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

import numpy as np
import pytest
import torch

from threestudio_like.core import checkpoint as ckpt
from threestudio_like.core.config import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    Schedule,
    merge_component,
    parse_structured,
)
from threestudio_like.core.errors import UserError
from threestudio_like.core.rundir import new_run_dir, slugify
from threestudio_like.core.schedule import Updateable, schedule_value


@dataclass
class _Cfg:
    n_levels: int = 16
    """levels"""
    scale: float = 1.5
    """scale"""


def test_unknown_key_names_key_and_valid_ones():
    with pytest.raises(UserError) as e:
        parse_structured(_Cfg, {"n_level": 3}, "geometry")
    msg = str(e.value)
    assert "geometry.n_level" in msg and "did you mean 'n_levels'" in msg and "n_levels, scale" in msg


def test_wrong_type_is_user_error_and_defaults_fill():
    with pytest.raises(UserError, match="geometry"):
        parse_structured(_Cfg, {"n_levels": "many"}, "geometry")
    cfg = parse_structured(_Cfg, {"_target_": "x.Y", "scale": 2}, "g")
    assert cfg.n_levels == 16 and cfg.scale == 2.0


@dataclass
class _Poses:
    views: list[list[float]] = field(default_factory=lambda: [[0.0, 45.0]])
    flags: list[bool] = field(default_factory=lambda: [True])


def test_ints_in_nested_float_lists_become_floats():
    # what the command line gives for views=[[20,0]]; OmegaConf alone refuses ints inside list[list[float]]
    cfg = parse_structured(_Poses, {"views": [[20, 0], [-10, 90.5]], "flags": [False]}, "elevation")
    assert cfg.views == [[20.0, 0.0], [-10.0, 90.5]] and all(type(v) is float for p in cfg.views for v in p)
    assert cfg.flags == [False]
    with pytest.raises(UserError, match=r"elevation.views\[0\]"):
        parse_structured(_Poses, {"views": [["up", 0]]}, "elevation")


@dataclass
class _HoldsPoses:
    poses: _Poses = field(default_factory=_Poses)


def test_ints_in_nested_float_lists_of_a_nested_config_become_floats():
    cfg = parse_structured(_HoldsPoses, {"poses": {"views": [[20, 0]]}}, "prepare")
    assert cfg.poses.views == [[20.0, 0.0]] and all(type(v) is float for v in cfg.poses.views[0])


@dataclass
class _Inner:
    mode: Literal["fast", "exact"] = "fast"
    lr: float = 0.1


@dataclass
class _Choices:
    kind: Literal["bce", "mse"] = "bce"
    axis: Optional[Literal["+Y", "+Z"]] = None
    inner: _Inner = field(default_factory=_Inner)
    maybe: Optional[_Inner] = None


def test_literal_fields_accept_only_their_choices():
    cfg = parse_structured(_Choices, {"kind": "mse", "axis": "+Y", "inner": {"mode": "exact"}, "maybe": {"lr": 2}}, "t")
    assert (cfg.kind, cfg.axis, cfg.inner, cfg.maybe) == ("mse", "+Y", _Inner("exact", 0.1), _Inner("fast", 2.0))
    assert isinstance(cfg.inner, _Inner) and isinstance(cfg, _Choices)
    assert parse_structured(_Choices, {}, "t") == _Choices()
    with pytest.raises(UserError) as e:
        parse_structured(_Choices, {"kind": "bc"}, "stage.ref")
    assert str(e.value) == "stage.ref.kind must be one of bce|mse, got 'bc' (did you mean 'bce'?)"
    with pytest.raises(UserError, match=r"t\.axis must be one of \+Y\|\+Z\|null, got 'Y'"):
        parse_structured(_Choices, {"axis": "Y"}, "t")
    with pytest.raises(UserError, match=r"t\.inner\.mode must be one of fast\|exact"):
        parse_structured(_Choices, {"inner": {"mode": "slow"}}, "t")
    with pytest.raises(UserError, match=r"t\.maybe\.mode must be one of"):
        parse_structured(_Choices, {"maybe": {"mode": "slow"}}, "t")
    with pytest.raises(UserError, match=r"unknown config key 't\.inner\.lrr' \(did you mean 'lr'\?\)"):
        parse_structured(_Choices, {"inner": {"lrr": 1}}, "t")
    with pytest.raises(UserError, match=r"t\.inner\.lr"):
        parse_structured(_Choices, {"inner": {"lr": "fast"}}, "t")


def test_optimizer_groups_and_lr_schedule_from_typed_configs():
    from threestudio_like.systems.optimization import (
        LRSchedulerConfig,
        OptimizerConfig,
        build_lr_scheduler,
        build_optimizer,
    )

    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    c.requires_grad_(False)
    cfg = parse_structured(OptimizerConfig, {"name": "AdamW", "lr": 0.1, "params": {"geometry.enc": {"lr": 0.5}}}, "o")
    opt = build_optimizer(cfg, [("geometry.enc.w", a), ("material.w", b), ("geometry.enc.frozen", c)], "o")
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 0.01  # torch's AdamW default
    assert [(g["name"], g["lr"], len(g["params"])) for g in opt.param_groups] == [
        ("geometry.enc", 0.5, 1),
        ("default", 0.1, 1),
    ]
    with pytest.raises(UserError, match="o.name must be one of Adam|AdamW"):
        parse_structured(OptimizerConfig, {"name": "SGD"}, "o")
    sched = build_lr_scheduler(LRSchedulerConfig(name="cosine", warmup_steps=2), opt, steps=10)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    expected = [min(1.0, (s + 1) / 2) * 0.5 * (1 + math.cos(math.pi * s / 10)) * 0.1 for s in range(4)]
    assert lrs == pytest.approx(expected)


def test_merge_component_replace_vs_override():
    shared = {"_target_": "a.Volume", "n_levels": 16, "radius": 1.0}
    assert merge_component(shared, {"radius": 2.0}) == {"_target_": "a.Volume", "n_levels": 16, "radius": 2.0}
    assert merge_component(shared, {"_target_": "a.Mesh", "res": 3}) == {"_target_": "a.Mesh", "res": 3}
    assert merge_component(None, None) is None


@pytest.mark.parametrize(
    "spec,step,expected",
    [
        (0.5, 1000, 0.5),
        ([100, 0.0, 10.0, 200], 50, 0.0),
        ([100, 0.0, 10.0, 200], 150, 5.0),
        ([100, 0.0, 10.0, 200], 250, 10.0),
        ([0, 64, 128, 100], 50, 96),
        ({"milestones": [[0, 64], [500, 128], [1000, 256]]}, 499, 64),
        ({"milestones": [[0, 64], [500, 128], [1000, 256]]}, 500, 128),
        ({"milestones": [[0, 64], [500, 128], [1000, 256]]}, 5000, 256),
        ({"start": 0.98, "end": 0.5, "start_step": 0, "end_step": 100, "kind": "cosine"}, 50, 0.74),
    ],
)
def test_schedule_values(spec, step, expected):
    assert schedule_value(spec, step) == pytest.approx(expected)


def test_schedule_errors():
    for bad in ([1, 2, 3], "x", True, {"start": 1}):
        with pytest.raises(UserError):
            schedule_value(bad, 0)


def test_update_step_reaches_nested_components():
    seen = []

    class Leaf(Updateable):
        def on_update_step(self, epoch, step):
            seen.append(step)

    class Parent(Updateable, torch.nn.Module):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.plain = Leaf()

    class Root(Updateable, torch.nn.Module):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.child = Parent()

    Root().update_step(0, 7)
    assert seen == [7]


@pytest.mark.parametrize(
    "text",
    [
        "a red cube",
        "../../etc/passwd",
        "a/b\\c",
        "..",
        ".",
        "",
        "\x00\x01 ctrl",
        "ünïcødé 立方体",
        "🚀" * 10,
        "x" * 500,
    ],
)
def test_slug_is_safe(text):
    s = slugify(text)
    assert s and s not in (".", "..") and len(s) <= 64
    assert "/" not in s and "\\" not in s and ".." not in s
    assert all(ch.isprintable() and not ch.isspace() for ch in s)


def test_slug_keeps_unicode_letters_and_run_dir_layout(tmp_path):
    assert slugify("ünïcødé 立方体") == "ünïcødé_立方体"
    assert slugify("a red cube") == "a_red_cube"
    a = new_run_dir(tmp_path, "dreamfusion", "a red cube")
    b = new_run_dir(tmp_path, "dreamfusion", "a red cube")
    assert a != b and a.parent == tmp_path / "dreamfusion" and a.name.startswith("a_red_cube@")
    for sub in ("ckpts", "save", "export", "video"):
        assert (a / sub).is_dir()


def test_checkpoint_roundtrip_restores_every_rng(tmp_path):
    state = ckpt.get_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    path = ckpt.save_checkpoint(tmp_path / "c.ckpt", {"rng": state, "w": torch.arange(3)})
    payload = ckpt.load_checkpoint(path)  # weights_only=True inside
    ckpt.set_rng_state(payload["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint(tmp_path / "last.ckpt", {"step": 1})

    def dying_save(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temp file left behind


def test_corrupt_or_foreign_checkpoint_is_user_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        ckpt.load_checkpoint(bad)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not a threestudio_like checkpoint"):
        ckpt.load_checkpoint(foreign)
    with pytest.raises(UserError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.ckpt")


def test_instantiate_refuses_a_target_of_the_wrong_kind():
    from threestudio_like.core.config import instantiate
    from threestudio_like.geometry.base import Geometry
    from threestudio_like.materials.base import Material, NoMaterial

    assert isinstance(
        instantiate({"_target_": "threestudio_like.materials.base.NoMaterial"}, "m", expected=Material), NoMaterial
    )
    with pytest.raises(
        UserError,
        match=r"stage\.a\.geometry: _target_ 'threestudio_like\.materials\.base\.NoMaterial' "
        r"is not a Geometry",
    ):
        instantiate({"_target_": "threestudio_like.materials.base.NoMaterial"}, "stage.a.geometry", expected=Geometry)


@dataclass
class _Ranged:
    steps: NonNegativeInt = 10
    height: PositiveInt = 64
    prob: Probability = 0.5
    clip: Optional[PositiveFloat] = None
    scale: Annotated[Any, Schedule(Range(gt=0))] = 7.5


def test_ranges_and_schedules_are_checked_with_the_field():
    ok = parse_structured(_Ranged, {"steps": 0, "prob": 1.0, "clip": 0.5, "scale": [0, 1.0, 5.0, 100]}, "s")
    assert (ok.steps, ok.prob, ok.clip, ok.scale) == (0, 1.0, 0.5, [0, 1.0, 5.0, 100])
    cases = [
        ({"steps": -5}, "s.steps must be >= 0, got -5"),
        ({"height": 0}, "s.height must be > 0, got 0"),
        ({"prob": 1.5}, "s.prob must be >= 0 and <= 1, got 1.5"),
        ({"clip": -1.0}, "s.clip must be > 0, got -1.0"),
        ({"scale": "abc"}, "s.scale must be a number or a schedule, got 'abc'"),
        ({"scale": [0, 1.0, -2.0, 100]}, "s.scale must be > 0 (every value of its schedule), got -2.0"),
        (
            {"scale": {"milestones": [[0, 1.0], [10, 0.0]]}},
            "s.scale must be > 0 (every value of its schedule), got 0.0",
        ),
        ({"scale": [0, 1.0, 2.0]}, "s.scale: a ramp schedule is [start_step, start_value, end_value, end_step]"),
    ]
    for cfg, message in cases:
        with pytest.raises(UserError) as e:
            parse_structured(_Ranged, cfg, "s")
        assert str(e.value).startswith(message), (cfg, str(e.value))


def test_update_step_reaches_components_inside_module_containers():
    """A stage's loss terms live in an nn.ModuleDict: update_step reaches them (once each)."""

    class Term(Updateable, torch.nn.Module):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.steps = []

        def on_update_step(self, epoch, global_step):
            self.steps.append(global_step)

    class System(Updateable, torch.nn.Module):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.terms = torch.nn.ModuleDict({"a": Term(), "b": Term()})
            self.nested = torch.nn.Sequential(torch.nn.ModuleList([Term()]))

    system = System()
    system.update_step(0, 7)
    system.update_step(0, 8)
    assert [t.steps for t in (*system.terms.values(), system.nested[0][0])] == [[7, 8]] * 3


@dataclass
class _Leaf:
    mode: Literal["fast", "exact"] = "fast"


@dataclass
class _Middle:
    leaf: _Leaf = field(default_factory=_Leaf)
    scale: PositiveFloat = 1.0


@dataclass
class _Top:
    middle: _Middle = field(default_factory=_Middle)


def test_configs_nested_three_deep_take_their_defaults_and_overrides():
    assert parse_structured(_Top, {}, "prepare") == _Top()
    cfg = parse_structured(_Top, {"middle": {"leaf": {"mode": "exact"}}}, "prepare")
    assert cfg.middle.leaf.mode == "exact" and isinstance(cfg.middle.leaf, _Leaf)
    with pytest.raises(UserError, match=r"prepare.middle.leaf.mode must be one of fast\|exact"):
        parse_structured(_Top, {"middle": {"leaf": {"mode": "slow"}}}, "prepare")
