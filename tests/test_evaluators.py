"""Evaluators are configured, not guessed from the prompt: the ``evaluators`` list, its config
errors, the toy-shape evaluator's target, what ``finalize`` logs and prints, and which experiments
list it."""

import json
import typing
from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf
from test_experiments import EXPERIMENTS, TOY_EXPERIMENTS, run_cli
from torch import nn

from threestudio_like.cli import compose_config, main
from threestudio_like.core.errors import UserError
from threestudio_like.eval.evaluator import Evaluator, RunInputs, build_evaluators
from threestudio_like.eval.toy_shape import ToyShapeEvaluator, score_mesh
from threestudio_like.geometry.base import GeometryOutput
from threestudio_like.systems.finalize import evaluate_run
from threestudio_like.toyworld.shapes import COLORS, SHAPES, ColorName, ShapeName

TOY = "threestudio_like.eval.toy_shape.ToyShapeEvaluator"
RED = COLORS["red"]


class RecordingEvaluator(Evaluator):
    """Appends its label to ``CALLS`` and scores a constant."""

    CALLS: list = []

    @dataclass
    class Config:
        label: str = ""
        """Name recorded and returned."""

    def evaluate(self, system, inputs):
        RecordingEvaluator.CALLS.append((self.cfg.label, system.training, torch.is_grad_enabled()))
        return {"label": self.cfg.label}

    def summary(self, scores):
        return f"recorded {scores['label']}"


class ShapeGeometry(nn.Module):
    """A fixed surface with a constant albedo, as the last stage's geometry."""

    def __init__(self, mesh, color):
        super().__init__()
        self.surface = mesh
        self.register_buffer("color", torch.tensor(color))

    def isosurface(self):
        return self.surface

    def forward(self, points):
        return GeometryOutput(features=self.color.expand(points.shape[0], 3))


class AlbedoMaterial(nn.Module):
    def appearance(self, features):
        return {"albedo": features}


class FakeSystem(nn.Module):
    def __init__(self, mesh, color=RED):
        super().__init__()
        self.geometry, self.material = ShapeGeometry(mesh, color), AlbedoMaterial()

    @property
    def device(self):
        return torch.device("cpu")


class ListLogger:
    def __init__(self):
        self.records = []

    def log(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def cube():
    return SHAPES["cube"].mesh(resolution=40)


def test_toy_name_choices_are_the_shapes_and_colours():
    assert typing.get_args(ShapeName) == tuple(SHAPES)
    assert typing.get_args(ColorName) == tuple(COLORS)


@pytest.mark.parametrize(
    "cfg,message",
    [
        (
            {"shape": "cub"},
            "evaluators[0].shape must be one of sphere|cube|cylinder|cone|torus|mug|null, got 'cub' "
            "(did you mean 'cube'?)",
        ),
        ({"color": "purple"}, "evaluators[0].color must be one of red|green|blue|yellow|null, got 'purple'"),
        ({"shap": "cube"}, "unknown config key 'evaluators[0].shap' (did you mean 'shape'?)"),
    ],
)
def test_toy_shape_evaluator_config_errors(cfg, message):
    with pytest.raises(UserError) as e:
        build_evaluators([{"_target_": TOY, **cfg}])
    assert message in str(e.value)


@pytest.mark.parametrize(
    "entries,message",
    [
        ({"_target_": TOY}, "evaluators must be a list"),
        ([{"shape": "cube"}], "evaluators[0]: an evaluator needs a _target_"),
        (
            [{"_target_": TOY}, {"_target_": "threestudio_like.systems.regularizers.SparsityLoss"}],
            "evaluators[1]: threestudio_like.systems.regularizers.SparsityLoss is not an evaluator",
        ),
        ([{"_target_": "threestudio_like.eval.toy_shape.NoSuchEvaluator"}], "cannot import _target_"),
    ],
)
def test_evaluator_list_errors(entries, message):
    with pytest.raises(UserError) as e:
        build_evaluators(entries)
    assert message in str(e.value)


def test_build_evaluators_in_order():
    assert build_evaluators(None) == [] and build_evaluators([]) == []
    built = build_evaluators(OmegaConf.create([{"_target_": TOY, "shape": "cone"}, {"_target_": TOY}]))
    assert [type(e) for e in built] == [ToyShapeEvaluator, ToyShapeEvaluator]
    assert built[0].cfg.shape == "cone" and built[1].cfg.shape is None


def test_toy_target_from_prompt_image_name_or_config():
    default = ToyShapeEvaluator()
    shape, color = default.target(RunInputs(prompt="A Blue Mug, side view"))
    assert shape is SHAPES["mug"] and color == "blue"
    shape, color = default.target(RunInputs(image="/data/yellow_cone.png"))
    assert shape is SHAPES["cone"] and color == "yellow"
    shape, color = default.target(RunInputs(prompt="a green torus", image="/data/yellow_cone_rgba.png"))
    assert shape is SHAPES["cone"] and color == "yellow"  # the picture first (a photo's prompt is a caption)
    shape, color = default.target(RunInputs(prompt="a green torus", image="/data/photo.png"))
    assert shape is SHAPES["torus"] and color == "green"  # then the prompt
    assert default.target(RunInputs(prompt="a hamburger")) is None
    assert default.target(RunInputs()) is None
    shape, color = ToyShapeEvaluator({"shape": "cone"}).target(RunInputs(prompt="a red cube"))
    assert shape is SHAPES["cone"] and color == "red"
    shape, color = ToyShapeEvaluator({"shape": "torus", "color": "green"}).target(RunInputs(prompt="a hamburger"))
    assert shape is SHAPES["torus"] and color == "green"
    shape, color = ToyShapeEvaluator({"shape": "sphere"}).target(RunInputs(prompt="a hamburger"))
    assert shape is SHAPES["sphere"] and color is None


def test_toy_shape_evaluator_scores_the_final_surface(cube):
    system = FakeSystem(cube).eval()
    scores = ToyShapeEvaluator().evaluate(system, RunInputs(prompt="a red cube"))
    expected = score_mesh(cube, SHAPES["cube"], "red", lambda p: torch.tensor(RED).expand(len(p), 3))
    assert scores == expected
    assert scores["toy_shape"] == "cube" and scores["iou"] > 0.9 and scores["color_error"] == pytest.approx(0, abs=1e-6)
    line = ToyShapeEvaluator().summary(scores)
    assert line.startswith(f"toy-world score: IoU {scores['iou']:.3f} vs cube (best other ")
    assert "colour error 0.000 (nearest toy colour: red)" in line and "\n" not in line
    no_colour = ToyShapeEvaluator({"shape": "cube"}).evaluate(system, RunInputs(prompt="a hamburger"))
    assert no_colour["iou"] == scores["iou"] and "color_error" not in no_colour
    assert "colour" not in ToyShapeEvaluator().summary(no_colour)


def test_evaluate_run_logs_and_prints_each_evaluator_in_order(cube, capsys):
    RecordingEvaluator.CALLS.clear()
    system, trainer = FakeSystem(cube), type("T", (), {"logger": ListLogger()})()
    cfg = OmegaConf.create(
        {
            "prompt": "a red cube",
            "image": None,
            "evaluators": [
                {"_target_": "test_evaluators.RecordingEvaluator", "label": "first"},
                {"_target_": TOY},
                {"_target_": "test_evaluators.RecordingEvaluator", "label": "last"},
            ],
        }
    )
    evaluate_run(system, trainer, cfg)
    assert RecordingEvaluator.CALLS == [("first", False, False), ("last", False, False)]  # eval mode, no grad
    assert system.training  # restored
    records = trainer.logger.records
    assert [r["stage"] for r in records] == ["eval"] * 3
    assert records[0] == {"stage": "eval", "label": "first"} and records[2] == {"stage": "eval", "label": "last"}
    assert records[1]["toy_shape"] == "cube" and records[1]["color"] == "red"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "recorded first" and lines[1].startswith("toy-world score: IoU") and lines[2] == "recorded last"


def test_evaluate_run_without_a_target_or_evaluators_writes_nothing(cube, capsys):
    trainer = type("T", (), {"logger": ListLogger()})()
    evaluate_run(
        FakeSystem(cube),
        trainer,
        OmegaConf.create({"prompt": "a DSLR photo of a hamburger", "evaluators": [{"_target_": TOY}]}),
    )
    evaluate_run(FakeSystem(cube), trainer, OmegaConf.create({"prompt": "a red cube", "evaluators": []}))
    assert trainer.logger.records == [] and capsys.readouterr().err == ""


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_only_the_toy_experiments_list_the_toy_shape_evaluator(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    targets = [e["_target_"] for e in OmegaConf.to_container(cfg.evaluators)]
    assert targets == ([TOY] if experiment in TOY_EXPERIMENTS else [])


def test_bad_evaluator_config_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["prompt=a red cube", f"evaluators=[{{_target_: {TOY}, shape: cub}}]", f"output_dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: evaluators[0].shape must be one of"), err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,scored",
    [
        (["experiment=dreamfusion", "prompt=a DSLR photo of a coffee mug"], False),
        (["prompt=a blue mug"], True),  # the toy default
    ],
)
def test_cli_scores_only_runs_whose_experiment_lists_the_evaluator(tmp_path, args, scored):
    p = run_cli(*args, "debug=smoke", "video.enabled=false", "output_dir=run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["stage"] == "eval"]
    assert ("toy-world score" in p.stderr) == scored, p.stderr[-3000:]
    if scored:
        assert len(evals) == 1 and evals[0]["toy_shape"] == "mug" and evals[0]["color"] == "blue"
        assert 0.0 <= evals[0]["iou"] <= 1.0
    else:
        assert evals == []
