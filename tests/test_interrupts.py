"""SIGINT and SIGTERM at any moment of a run (start-up, model loading, training, finishing): one
line on stderr, exit 128 + signal, no traceback, and the run can be resumed to the end; kill -9
never leaves an unreadable checkpoint. Stand-in components (tests/fake_components.py) make the
moments reachable: a guidance whose model loading and an evaluator whose scoring take long and
announce themselves with a marker file."""

import signal
import time
from pathlib import Path

import pytest
import torch
from test_cli import config_dir, launch  # noqa: F401  (fixture)

from threestudio_like.core.interrupts import Interrupted, run_started, signals_handled

SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}


def _wait_for(path, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


def _interrupt(proc, sig):
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    return proc.returncode, lines[-1]


@pytest.mark.parametrize("name", SIGNALS)
def test_interrupt_during_start_up_writes_nothing(config_dir, tmp_path, name):  # noqa: F811
    sig, code = SIGNALS[name]
    proc = launch(config_dir, "experiment=fake", "prompt=x", "output_dir=run", cwd=tmp_path, background=True)
    time.sleep(0.5)  # python is importing torch / composing the config
    returncode, line = _interrupt(proc, sig)
    assert returncode == code
    assert line == "interrupted during start-up; nothing was written"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", SIGNALS)
def test_interrupt_while_loading_models_then_resume(config_dir, tmp_path, name):  # noqa: F811
    sig, code = SIGNALS[name]
    marker = tmp_path / "loading"
    proc = launch(
        config_dir,
        "experiment=fake",
        "prompt=x",
        "output_dir=run",
        f"guidance.loading_marker={marker}",
        cwd=tmp_path,
        background=True,
    )
    _wait_for(marker, proc)
    returncode, line = _interrupt(proc, sig)
    assert returncode == code
    assert line == "interrupted during training (nothing trained yet); continue with resume=run"
    p = launch(config_dir, "resume=run", "guidance.loading_marker=", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "run" / "ckpts" / "b.ckpt").is_file()


@pytest.mark.parametrize("name", SIGNALS)
def test_interrupt_during_training_saves_and_resumes(config_dir, tmp_path, name):  # noqa: F811
    sig, code = SIGNALS[name]
    proc = launch(
        config_dir,
        "experiment=fake",
        "prompt=x",
        "output_dir=run",
        "stage.a.steps=100000",
        cwd=tmp_path,
        background=True,
    )
    _wait_for(tmp_path / "run" / "metrics.jsonl", proc)
    returncode, line = _interrupt(proc, sig)
    assert returncode == code
    assert line == "interrupted: checkpoint saved to run/ckpts/last.ckpt; continue with resume=run"
    payload = torch.load(tmp_path / "run" / "ckpts" / "last.ckpt", weights_only=True)
    assert payload["stage"] == "a" and payload["global_step"] > 0 and not payload["stage_done"]
    p = launch(config_dir, "resume=run", f"stage.a.steps={payload['global_step'] + 2}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "run" / "ckpts" / "b.ckpt").is_file()


def test_interrupt_while_finishing_points_to_export(config_dir, tmp_path):  # noqa: F811
    marker = tmp_path / "scoring"
    proc = launch(
        config_dir,
        "experiment=fake",
        "prompt=x",
        "output_dir=run",
        f"evaluators=[{{_target_: fake_components.SlowEvaluator, marker: '{marker}'}}]",
        cwd=tmp_path,
        background=True,
    )
    _wait_for(marker, proc)
    returncode, line = _interrupt(proc, signal.SIGTERM)
    assert returncode == 143
    assert line == (
        "interrupted while exporting; the trained model is saved in run/ckpts: "
        "export it with `python launch.py resume=run mode=export`"
    )
    assert (tmp_path / "run" / "ckpts" / "b.ckpt").is_file()
    p = launch(config_dir, "resume=run", "mode=export", "evaluators=[]", cwd=tmp_path)
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
def test_kill_9_never_leaves_an_unreadable_checkpoint(config_dir, tmp_path):  # noqa: F811
    """SIGKILL at many moments of a run that checkpoints every step: last.ckpt, when it exists,
    always loads, and a resume from it finishes."""
    for i, delay in enumerate((1.0, 1.3, 1.6, 1.9, 2.2)):
        run = f"run{i}"
        proc = launch(
            config_dir,
            "experiment=fake",
            "prompt=x",
            f"output_dir={run}",
            "stage.a.steps=100000",
            "trainer.ckpt_every=1",
            cwd=tmp_path,
            background=True,
        )
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=60)
        last = tmp_path / run / "ckpts" / "last.ckpt"
        if last.exists():
            assert torch.load(last, weights_only=True)["stage"] == "a"
        if (tmp_path / run / "config.yaml").exists():  # killed after the run started: it resumes
            p = launch(config_dir, f"resume={run}", "stage.a.steps=3", cwd=tmp_path)
            assert p.returncode == 0, p.stderr


def test_interrupt_between_stages_resumes_like_the_uninterrupted_run(config_dir, tmp_path):  # noqa: F811
    """Stopped while the second stage loads its models (the first stage finished and saved): the
    resumed run enters stage b from the random state stage a ended in, as an uninterrupted one."""
    assert launch(config_dir, "experiment=fake", "prompt=x", "output_dir=twin", cwd=tmp_path).returncode == 0
    marker = tmp_path / "loading_b"
    proc = launch(
        config_dir,
        "experiment=fake",
        "prompt=x",
        "output_dir=run",
        f"+stage.b.guidance={{loading_marker: '{marker}'}}",
        cwd=tmp_path,
        background=True,
    )
    _wait_for(marker, proc)
    returncode, line = _interrupt(proc, signal.SIGTERM)
    assert returncode == 143 and line.endswith("continue with resume=run"), line
    assert torch.load(tmp_path / "run" / "ckpts" / "last.ckpt", weights_only=True)["stage"] == "a"
    p = launch(config_dir, "resume=run", "stage.b.guidance.loading_marker=", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    twin, resumed = (torch.load(tmp_path / r / "ckpts" / "b.ckpt", weights_only=True) for r in ("twin", "run"))
    for key, value in twin["state"]["system"].items():
        assert torch.equal(value, resumed["state"]["system"][key]), key


class _SignalsInFinalizer:
    def __del__(self):
        signal.raise_signal(signal.SIGTERM)  # handled inside __del__, where Python swallows exceptions
        for _ in range(1000):  # the handler runs between bytecodes
            pass


def test_signal_swallowed_by_a_finalizer_is_delivered_after_it(capfd):
    # e.g. the logging at-fork handler that runs when imageio starts ffmpeg for the turntable
    with signals_handled():
        run_started()
        with pytest.raises(Interrupted) as caught:
            finalized = _SignalsInFinalizer()
            del finalized  # the last reference: finalized right here
            time.sleep(2)
    assert caught.value.signum == signal.SIGTERM
    assert "Traceback" not in capfd.readouterr().err


class _SignalsInSetName:
    def __set_name__(self, owner, name):
        signal.raise_signal(signal.SIGTERM)  # Python wraps what __set_name__ raises in a RuntimeError
        for _ in range(1000):
            pass


def _run_meeting_a_signal_in_an_import(cfg, progress):
    # torch imports parts of itself lazily mid-run (torch._inductor from use_deterministic_algorithms):
    # a signal landing in a class body there surfaces as RuntimeError("Error calling __set_name__ …")
    run_started()
    progress.run_dir, progress.phase = Path("run"), "training"
    type("Lazy", (), {"attr": _SignalsInSetName()})


def test_signal_wrapped_by_python_ends_as_interrupted(monkeypatch, capfd):
    from threestudio_like import cli

    monkeypatch.setattr(cli, "compose_config", lambda argv: None)
    monkeypatch.setattr(cli, "run", _run_meeting_a_signal_in_an_import)
    assert cli.main(["prompt=x"]) == 143
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == ["interrupted during training (nothing trained yet); continue with resume=run"]
