"""What the command line answers without training: --help, --version, --cfg, subcommands, and
the error for a word it does not accept (issue 24, item 7)."""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from threestudio_like import usage
from threestudio_like.cli import compose_config, main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
GROUPS = sorted(d.name for d in CONFIGS.iterdir() if d.is_dir() and d.name != "experiment")


def cli(*args, cwd=None, program=None):
    program = program or [sys.executable, str(ROOT / "launch.py")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*program, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def leading_comment(name: str) -> str:
    """The experiment file's comment block after '# @package', joined with spaces."""
    text = []
    for line in (CONFIGS / "experiment" / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            text.append(line[1:].strip())
    return " ".join(text)


def section(help_text: str, title: str) -> list[str]:
    """The indented lines under the help's heading that starts with ``title``."""
    lines = help_text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(title))
    out = []
    for ln in lines[start + 1 :]:
        if not ln.startswith("  "):
            break
        out.append(ln)
    return out


@pytest.fixture(scope="module")
def help_text():
    p = cli("--help")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return p.stdout


def test_help_has_usage_and_every_experiment_with_its_comment(help_text):
    assert help_text.startswith("usage: python launch.py")
    rows = dict(re.match(r"  (\S+)\s+(.*)", ln).groups() for ln in section(help_text, "experiments"))
    assert sorted(rows) == EXPERIMENTS
    for name, summary in rows.items():
        comment = leading_comment(name)
        # the line is the comment's opening words, long enough to say something, short enough for a line
        assert comment.startswith(summary), (name, summary)
        assert 15 <= len(summary) <= usage.SUMMARY_WIDTH, (name, summary)
        assert summary.count("(") == summary.count(")"), summary


@pytest.mark.parametrize(
    "comment, summary",
    [
        ("# Short one. Then more.\n# And more.", "Short one"),
        ("# Ends at the line (et al. 2023).\n# Next line.", "Ends at the line (et al. 2023)"),
        ("# X (Y et al. 2023): one image, with the\n# " + "words " * 20 + ".", "X (Y et al. 2023): one image"),
        ("# A: B (c, d" + ", e" * 40 + ")\n# rest.", "A: B"),
        ("# Whole first line of a long one:\n# " + "words " * 20 + ".", "Whole first line of a long one"),
        ("defaults: []", ""),
    ],
)
def test_experiment_summary_is_the_first_sentence_or_clause(tmp_path, comment, summary):
    path = tmp_path / "x.yaml"
    path.write_text(f"# @package _global_\n{comment}\nkey: 1\n")
    assert usage.experiment_summary(path) == summary


def test_help_lists_every_group_with_its_options(help_text):
    rows = dict(re.match(r"  (\S+)\s+(.*)", ln).groups() for ln in section(help_text, "config groups"))
    assert sorted(rows) == GROUPS
    for group, options in rows.items():
        assert options.split(" | ") == sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_help_common_keys_exist(help_text):
    """Every key the help calls common is a key of the composed config or a config group."""
    listed = " ".join(section(help_text, "common keys"))
    keys = set(re.findall(r"(?:^|\s)([a-z_][\w.]*)=", listed))
    assert {"prompt", "image", "seed", "resume", "debug", "stage.NAME.loss.guidance", "models.sd"} <= keys
    cfg = compose_config(["experiment=default"])
    for key in keys:
        if (CONFIGS / key).is_dir():  # a config group (debug=smoke)
            continue
        node = cfg
        for part in key.replace("NAME", cfg.stages[0]).split("."):
            assert part in node, f"--help names '{key}', which the config does not have"
            node = node[part]


def test_console_script_prints_the_same_help(help_text):
    script = Path(sys.executable).parent / "threestudio-like"
    if not script.exists():
        pytest.skip("the console script is not installed in this environment")
    p = cli("--help", program=[str(script)])
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: threestudio-like [key=value")
    for title in ("experiments", "config groups", "common keys"):
        assert section(p.stdout, title) == section(help_text, title)


def test_version_is_the_installed_distribution(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"threestudio-like {importlib.metadata.version('threestudio_like')}"


def test_cfg_job_prints_the_resolved_config_and_runs_nothing(tmp_path):
    p = cli("--cfg", "job", "experiment=dreamfusion", "prompt=a hamburger", "guidance=vsd", "debug=smoke", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert "hydra" not in cfg
    vsd = yaml.safe_load((CONFIGS / "guidance" / "vsd.yaml").read_text())
    assert cfg["guidance"]["_target_"] == vsd["_target_"]
    # interpolations are resolved: ${prompt}, ${models.sd} → debug=smoke's ${asset:tiny-sd}
    assert cfg["prompt_processor"]["prompt"] == "a hamburger"
    assert cfg["guidance"]["pretrained_model_name_or_path"] == str(ROOT / "threestudio_like" / "assets" / "tiny-sd")
    assert cfg["limits"]["max_steps"] == 3
    assert list(tmp_path.iterdir()) == []  # no run directory, no outputs/


def test_cfg_all_adds_hydras_node_with_the_chosen_groups(capsys):
    assert main(["--cfg=all", "experiment=magic3d", "prompt=x", "guidance=ism"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["hydra"]["runtime"]["choices"]["experiment"] == "magic3d"
    assert cfg["hydra"]["runtime"]["choices"]["guidance"] == "ism"
    assert cfg["stages"] == ["coarse", "refine"] and cfg["prompt"] == "x"


def test_fields_of_nested_configs_missing_from_the_yaml_can_be_overridden(capsys):
    # prepare.elevation / prepare.preprocess(.segmenter) are typed configs inside the prepare component
    args = ["prepare.elevation.samples=4", "prepare.preprocess.fill=0.5", "prepare.preprocess.segmenter.edge_radius=2"]
    assert main(["--cfg", "job", "experiment=toy_anything3d", *args]) == 0
    prepare = yaml.safe_load(capsys.readouterr().out)["prepare"]
    assert prepare["elevation"]["samples"] == 4 and prepare["preprocess"]["fill"] == 0.5
    assert prepare["preprocess"]["segmenter"]["edge_radius"] == 2


def test_cfg_hydra_is_hydras_node_only(capsys):
    assert main(["-c", "hydra"]) == 0
    assert list(yaml.safe_load(capsys.readouterr().out)) == ["hydra"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--cfg", "jobs"], ["--cfg takes one of job, hydra, all", "'jobs'"]),
        (["--cfg"], ["--cfg takes one of job, hydra, all"]),
        (["dreamfusion", "prompt=x"], ["'dreamfusion'", "did you mean experiment=dreamfusion?", "--help"]),
        (["experiment=default", "vsd"], ["did you mean guidance=vsd?"]),
        (["--resolve"], ["'--resolve' is not a key=value override", "--cfg job|hydra|all", "--version"]),
        (["--cfg", "job", "experiment=nosuch"], ["nosuch", "dreamfusion"]),
        (["--cfg", "job", "experiment=dreamfusion", "stage.nerf.stepz=3"], ["stage.nerf.stepz"]),
        (["--cfg", "job", "experiment=dreamfusion", "~negative_prompt"], ["cannot resolve", "negative_prompt"]),
        (
            ["--cfg", "job", "experiment=toy_anything3d", "prepare.preprocess.fil=0.5"],
            ["unknown config key 'prepare.preprocess.fil'", "did you mean 'fill'?"],
        ),
    ],
)
def test_words_it_does_not_accept_are_one_error_line(args, fragments, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    for f in fragments:
        assert f in lines[0], lines[0]


def test_overrides_of_every_hydra_form_are_accepted(capsys):
    args = ["--cfg", "job", "experiment=dreamfusion", "prompt=a b", "+extra.key=1", "++seed=3", "~trainer.tensorboard"]
    assert main(args) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["extra"] == {"key": 1} and cfg["seed"] == 3 and "tensorboard" not in cfg["trainer"]


def test_subcommands_dispatch_before_overrides(monkeypatch, capsys):
    calls = []
    module = type(sys)("fake_subcommand")
    module.run = lambda words: calls.append(words) or 7
    monkeypatch.setitem(sys.modules, "fake_subcommand", module)
    monkeypatch.setitem(usage.SUBCOMMANDS, "inspect", usage.Subcommand("fake_subcommand:run", "look at a run"))
    assert main(["inspect", "outputs/x", "--flag"]) == 7
    assert calls == [["outputs/x", "--flag"]]
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "COMMAND [args …]" in out
    assert re.search(r"^  inspect\s+look at a run$", out, re.M)
    assert main(["nosuch"]) == 2
    assert re.search(r"subcommands: .*\binspect\b", capsys.readouterr().err)
