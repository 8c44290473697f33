"""Trainer: bit-exact resume on CPU, Ctrl-C checkpoints, NaN guard, logs, stage handoff."""

import os
import signal

import pytest
import torch
from fake_components import NoisyTargetGuidance, fake_experiment
from omegaconf import OmegaConf

from threestudio_like.cli import seed_everything
from threestudio_like.core.checkpoint import load_checkpoint
from threestudio_like.core.errors import UserError
from threestudio_like.core.metrics_log import read_metrics
from threestudio_like.core.rundir import make_run_dir
from threestudio_like.core.trainer import Trainer, TrainingInterrupted


def _train(tmp_path, name, cfg_dict, interrupt_at=None):
    cfg = OmegaConf.create(cfg_dict)
    run_dir = make_run_dir(tmp_path / name)
    seed_everything(0)
    trainer = Trainer(cfg, run_dir)
    if interrupt_at is None:
        return trainer.fit(), run_dir
    stage, step = interrupt_at
    original = type(trainer)._step

    def step_with_sigint(self, run, bar):
        if run.name == stage and run.step == step:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step, as a real Ctrl-C
        return original(self, run, bar)

    trainer._step = step_with_sigint.__get__(trainer)
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    return None, run_dir


def _params(system):
    return {k: v.clone() for k, v in system.state_dict().items()}


@pytest.mark.parametrize("interrupt_at", [("a", 2), ("b", 1)])
def test_resume_is_bit_exact(tmp_path, interrupt_at):
    reference, _ = _train(tmp_path, "ref", fake_experiment())
    _, run_dir = _train(tmp_path, "int", fake_experiment(), interrupt_at=interrupt_at)
    payload = load_checkpoint(run_dir / "ckpts" / "last.ckpt")
    # the stop request is honoured at the end of the step during which Ctrl-C arrived
    assert payload["stage"] == interrupt_at[0] and payload["global_step"] == interrupt_at[1] + 1
    seed_everything(123)  # a different RNG state must not matter: the checkpoint restores it
    resumed = Trainer(OmegaConf.create(fake_experiment()), run_dir).fit(resume=True)
    ref, res = _params(reference), _params(resumed)
    assert ref.keys() == res.keys()
    for k in ref:
        assert torch.equal(ref[k], res[k]), k


def test_training_reduces_loss_and_logs(tmp_path):
    system, run_dir = _train(tmp_path, "log", fake_experiment(steps_a=30, steps_b=2))
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["stage"] == "a"]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert records[-1]["loss_guidance"] < 0.5 * records[0]["loss_guidance"]
    assert (run_dir / "ckpts" / "a.ckpt").exists() and (run_dir / "ckpts" / "b.ckpt").exists()
    assert (run_dir / "save" / "a-000030.png").exists()


def test_stage_handoff_copies_geometry(tmp_path):
    cfg = fake_experiment(steps_a=5, steps_b=0)
    system, run_dir = _train(tmp_path, "handoff", cfg)
    trainer = Trainer(OmegaConf.create(cfg), run_dir)
    first = trainer.load_finished(0)
    second = trainer.build_stage(1, previous=first)
    for k, v in first.geometry.state_dict().items():
        assert torch.equal(v, second.geometry.state_dict()[k])


def test_a_finished_stage_is_freed_before_the_next_loads_its_guidance(tmp_path, monkeypatch):
    """Two stages' priors never share the memory: once stage b is built from stage a, nothing
    holds stage a (its guidance included) while b loads its own and trains."""
    import gc
    import weakref

    built, alive_at_setup = [], []
    original_build = Trainer.build_stage

    def build_stage(self, index, previous=None):
        system = original_build(self, index, previous=previous)
        built.append(weakref.ref(system))
        return system

    original_setup = NoisyTargetGuidance.__init__

    def guidance_init(self, *args, **kwargs):
        gc.collect()
        alive_at_setup.append([ref() is not None for ref in built])
        original_setup(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "build_stage", build_stage)
    monkeypatch.setattr(NoisyTargetGuidance, "__init__", guidance_init)
    _train(tmp_path, "free", fake_experiment(steps_a=2, steps_b=2))
    assert alive_at_setup == [[True], [False, True]]  # b's guidance loads with a already gone


def test_nonfinite_steps_are_skipped_then_abort(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = NoisyTargetGuidance.forward

    def nan_sometimes(self, rgb, cameras=None, prompt=None):
        out = original(self, rgb, cameras, prompt)
        calls["n"] += 1
        if calls["n"] == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(NoisyTargetGuidance, "forward", nan_sometimes)
    with pytest.warns(UserWarning, match="non-finite"):
        _train(tmp_path, "skip", fake_experiment(steps_a=4, steps_b=0))

    monkeypatch.setattr(
        NoisyTargetGuidance,
        "forward",
        lambda self, rgb, cameras=None, prompt=None: original(self, rgb * float("nan"), cameras, prompt),
    )
    with pytest.warns(UserWarning), pytest.raises(UserError, match="diverged: 3 steps"):
        _train(tmp_path, "abort", fake_experiment(steps_a=10, max_nonfinite_steps=3))


def test_unknown_loss_weight_is_an_error(tmp_path):
    cfg = fake_experiment()
    cfg["loss"] = {}
    with pytest.raises(UserError, match="no weight for the loss term 'guidance'"):
        _train(tmp_path, "noweight", cfg)


def test_guidance_is_not_a_submodule_and_stays_out_of_checkpoints(tmp_path):
    system, run_dir = _train(tmp_path, "g", fake_experiment(steps_a=1, steps_b=0))
    assert system.guidance is not None
    assert all(not k.startswith("guidance") for k in system.state_dict())
    assert system.guidance not in list(system.modules())


def test_tensorboard_mirrors_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = _train(tmp_path, "tb", fake_experiment(steps_a=3, steps_b=0, tensorboard=True))
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["stage"] == "a"]
    events = acc.Scalars("a/loss_guidance")
    assert [e.step for e in events] == [1, 2, 3]
    assert [e.value for e in events] == pytest.approx([r["loss_guidance"] for r in records])
    assert acc.Tags()["images"]  # validation renders
