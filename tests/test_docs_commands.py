"""Every shell command in the docs runs (issue 24, item 6).

Commands are read from the ```bash blocks of README.md, CONTRIBUTING.md, benchmarks/README.md and
docs/*.md (a line ending in ``\\`` continues; ``#`` starts a comment where bash says so). Rules:

* ``python launch.py …`` / ``threestudio-like …`` runs on CPU with ``debug=smoke`` and its own
  ``output_dir`` appended (``--help``/``--version``/``--cfg`` as written); input files the docs name
  by example (``image=cat.png``) are replaced by a shipped toy render, ``resume=`` points at a
  smoke run of the default experiment. Commands with the same overrides (prompt, seed and input
  files aside) run once; the others, and commands marked ``# needs: weights|gpu|network|plugin``,
  are checked with ``--cfg job`` and the run's validation (``cli.validate``) on the printed config.
* ``python script.py`` / ``python -m module``: the script or module exists, and every ``--flag``
  the docs give is in its ``--help``; ``make T``: T is a Makefile target; ``pip install``: the
  requirement files and extras exist; ``bash script``: it exists and parses; any other program is
  installed here or marked ``# needs:``. Every block parses (``bash -n``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "benchmarks" / "README.md"]
DOCS += sorted((ROOT / "docs").glob("*.md"))
NEEDS = {"weights", "gpu", "network", "plugin"}
"""What a command may need that this machine does not have (``# needs: a, b``)."""
LAUNCH = ("launch.py", "threestudio-like")
ANSWER_FLAGS = ("--help", "-h", "--version", "--cfg", "-c")
INPUT_KEYS = ("prompt", "negative_prompt", "seed", "image", "depth", "output_dir")
"""Keys whose value does not make a run different for this test."""
TOY_IMAGE = ROOT / "threestudio_like" / "assets" / "toy-images" / "red_cube.png"
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
OPERATORS = ("&&", "||", ";", "|")


@dataclass
class Command:
    """One command of a docs code block (continuation lines joined)."""

    path: Path
    line: int
    text: str
    comment: str
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def needs(self) -> set[str]:
        m = re.search(r"\bneeds:\s*([a-z]+(?:\s*,\s*[a-z]+)*)", self.comment)
        return {n.strip() for n in m.group(1).split(",")} if m else set()

    def simple_commands(self) -> list[list[str]]:
        r"""The words of each simple command (split at ``&&``, ``;``, ``|``), leading ``NAME=value``
        environment assignments dropped (a command of nothing else is ``[]``). ValueError if the
        text does not split into words (an unclosed quote, a trailing ``\``)."""
        lex = shlex.shlex(self.text, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = ""
        out, words = [], []
        for token in [*lex, ";"]:
            if token in OPERATORS:
                while words and ENV_ASSIGNMENT.match(words[0]):
                    words.pop(0)
                out.append(words)
                words = []
            else:
                words.append(token)
        return out


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment): the comment starts at a ``#`` that begins a word outside quotes, as in bash."""
    quote = None
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i], line[i:]
        i += 1
    return line, ""


def bash_blocks(path: Path) -> list[tuple[int, list[str]]]:
    """(line number of the first line, lines) of each ```bash block."""
    blocks, current, start = [], None, 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if current is None and line.strip() == "```bash":
            current, start = [], n + 1
        elif current is not None and line.strip().startswith("```"):
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def commands(path: Path) -> list[Command]:
    out = []
    for start, lines in bash_blocks(path):
        pending: Command | None = None
        for offset, raw in enumerate(lines):
            code, comment = split_comment(raw)
            if pending is None:
                if not code.strip():
                    continue  # blank or comment line
                pending = Command(path, start + offset, "", "")
            if re.search(r"\\[ \t]+$", code) or (comment and code.rstrip().endswith("\\")):
                pending.problems.append(
                    f"line {start + offset}: a '\\' followed by spaces or a comment does not continue the line"
                )
            continued = code.endswith("\\") and not comment
            pending.text += (code[:-1] if continued else code).strip() + " "
            pending.comment = comment
            if not continued:
                pending.text = pending.text.strip()
                out.append(pending)
                pending = None
        if pending is not None:
            pending.problems.append("the block ends inside a continued command")
            out.append(pending)
    return out


ALL = [c for path in DOCS if path.is_file() for c in commands(path)]


def is_python(program: str) -> bool:
    return Path(program).name.startswith("python")


def launch_args(words: list[str]) -> list[str] | None:
    """The arguments after ``launch.py`` / ``threestudio-like``; None for any other command."""
    if is_python(words[0]) and len(words) > 1 and words[1].endswith("launch.py"):
        return words[2:]
    if Path(words[0]).name == "threestudio-like":
        return words[1:]
    return None


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


# ---- static checks: every command is well formed and names things that exist --------------
def static_problems(cmd: Command) -> list[str]:
    problems = list(cmd.problems)
    if cmd.needs - NEEDS:
        problems.append(f"unknown needs: {', '.join(sorted(cmd.needs - NEEDS))} (use {', '.join(sorted(NEEDS))})")
    try:
        simple = cmd.simple_commands()
    except ValueError as e:
        return [*problems, f"does not split into words: {e}"]
    for words in simple:
        program = words[0] if words else ""
        if not words:
            problems.append("assignments without a command (an override on a line of its own?)")
        elif "=" in program:
            problems.append(f"'{program}' is an override on a line of its own (a missing '\\'?)")
        elif launch_args(words) is not None:
            continue  # run by test_documented_launch_commands_run
        elif is_python(program):
            problems += python_problems(words)
        elif Path(program).name == "make":
            missing = [w for w in words[1:] if not w.startswith("-") and "=" not in w and w not in makefile_targets()]
            problems += [f"make: no target '{t}' in the Makefile" for t in missing]
        elif Path(program).name in ("pip", "pip3"):
            problems += pip_problems(words)
        elif program == "bash":
            script = ROOT / words[1]
            if not script.is_file():
                problems.append(f"bash: {words[1]} does not exist")
            elif subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode:
                problems.append(f"bash -n {words[1]} fails")
        elif not (cmd.needs or shutil.which(program) or (ROOT / program).is_file()):
            problems.append(f"'{program}' is not installed here: mark the command '# needs: …'")
    return problems


def python_problems(words: list[str]) -> list[str]:
    if words[1] == "-m":
        if importlib.util.find_spec(words[2]) is None:
            return [f"python -m {words[2]}: no such module"]
    elif not (ROOT / words[1]).is_file():
        return [f"python {words[1]}: no such file"]
    return []


def pip_problems(words: list[str]) -> list[str]:
    from packaging.requirements import InvalidRequirement, Requirement

    extras = set(importlib.metadata.metadata("threestudio_like").get_all("Provides-Extra") or [])
    problems, args = [], words[2:] if len(words) > 1 and words[1] == "install" else []
    if not args:
        return [f"pip: expected 'pip install …', got {' '.join(words)}"]
    for i, arg in enumerate(args):
        if i and args[i - 1] == "-r":
            if not (ROOT / arg).is_file():
                problems.append(f"pip: {arg} does not exist")
        elif arg.startswith("."):
            asked = set(re.findall(r"\[([^\]]*)\]", arg)[0].split(",")) if "[" in arg else set()
            problems += [f"pip: the package has no extra '{e}'" for e in sorted(asked - extras)]
        elif not arg.startswith("-"):
            try:
                Requirement(arg)
            except InvalidRequirement:
                problems.append(f"pip: '{arg}' is not a requirement")
    return problems


@pytest.mark.parametrize("cmd", ALL, ids=[c.where for c in ALL])
def test_documented_command_is_well_formed(cmd):
    assert not static_problems(cmd), f"{cmd.where}: {cmd.text}\n" + "\n".join(static_problems(cmd))


@pytest.mark.parametrize("path", [p for p in DOCS if p.is_file()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_bash_block_parses(path):
    for start, lines in bash_blocks(path):
        p = subprocess.run(["bash", "-n"], input="\n".join(lines), capture_output=True, text=True)
        assert p.returncode == 0, f"{path.relative_to(ROOT)}:{start}: {p.stderr}"


def test_the_parser_finds_what_bash_would_run():
    """The README's broken example of issue 24: comments after '\\' end the command."""
    path = ROOT / "example.md"
    text = "```bash\npython launch.py a=1 \\\n    b=2 \\   # swap\n    c.d=3 \\\n    e=4\nmake demo  # x#y\n```\n"
    (cmd1, cmd2, cmd3) = [c for c in _commands_of(text, path)]
    assert cmd1.text == "python launch.py a=1 b=2 \\" and cmd1.problems
    assert static_problems(cmd2) == ["'c.d=3' is an override on a line of its own (a missing '\\'?)"]
    assert cmd3.simple_commands() == [["make", "demo"]] and cmd3.comment == "# x#y"
    assert split_comment("a 'b # c' d#e # f") == ("a 'b # c' d#e ", "# f")


def _commands_of(text: str, path: Path) -> list[Command]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / path.name
        p.write_text(text)
        found = commands(p)
    for c in found:
        c.path = ROOT / path.name
    return found


# ---- running: launch commands, scripts' flags -------------------------------------------
@dataclass
class Job:
    """One subprocess of the run test and what it checks."""

    argv: list[str]
    commands: list[Command]
    check: Literal["runs", "config", "flags"]
    """``runs``: exit status 0; ``config``: exit 0 and the printed config validates; ``flags``:
    the ``--help`` it prints names every flag in ``flags``."""
    flags: list[str] = field(default_factory=list)
    resume_copy: Optional[Path] = None
    """``resume=`` commands: where this job's copy of a smoke run of the default experiment goes —
    the finished run for ``mode=export|test``, else one stopped after its first stage."""
    result: Optional[subprocess.CompletedProcess] = None


def substitute_inputs(args: list[str], tmp: Path) -> list[str]:
    """Input files the docs name: absolute paths when they exist in the checkout, else (an example
    like cat.png) a shipped toy render, a depth map or a six-view grid made here."""
    import imageio.v3 as iio
    import numpy as np

    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        bare = key.lstrip("+~")
        if value and (bare in ("image", "depth") or bare.endswith(".grid")):
            if (ROOT / value).is_file():
                value = str(ROOT / value)
            elif bare == "image":
                value = str(TOY_IMAGE)
            elif bare == "depth":
                value = str(tmp / "depth.npy")
                yy, xx = np.mgrid[0:32, 0:32]
                np.save(value, (1.0 / (1.0 + np.hypot(xx - 16, yy - 16) / 16)).astype(np.float32))
            else:
                value = str(tmp / "grid.png")
                tile = iio.imread(TOY_IMAGE)
                iio.imwrite(value, np.concatenate([np.concatenate([tile, tile], axis=1)] * 3, axis=0))
            arg = f"{key}={value}"
        out.append(arg)
    return out


def first_sweep_point(args: list[str]) -> list[str]:
    """A multirun's first job: no -m, no hydra/… or hydra.… keys, each sweep's first value."""
    out = []
    for arg in args:
        if arg in ("-m", "--multirun") or arg.startswith(("hydra/", "hydra.")):
            continue
        key, _, value = arg.partition("=")
        if value and value[0] not in "[{" and "," in value:
            arg = f"{key}={value.split(',')[0]}"
        out.append(arg)
    return out


def signature(args: list[str]) -> tuple[str, ...]:
    """What makes two runs different for this test (prompt, seed and input files aside)."""
    return tuple(sorted(a for a in args if a.partition("=")[0].lstrip("+") not in INPUT_KEYS))


def plan(tmp: Path) -> tuple[list[Job], list[Job]]:
    """(jobs that run first, jobs that resume the default experiment's smoke run)."""
    launch = [sys.executable, str(ROOT / "launch.py")]
    first: dict[tuple[str, ...], Job] = {}
    resumes: list[Job] = []
    flag_jobs: dict[tuple[str, ...], Job] = {}
    default_run, unfinished_run = tmp / "runs" / "default", tmp / "runs" / "unfinished"
    for cmd in ALL:
        try:
            simple = [words for words in cmd.simple_commands() if words]
        except ValueError:
            continue  # test_documented_command_is_well_formed says why
        for words in simple:
            args = launch_args(words)
            if args is None:
                flags = [w.split("=")[0] for w in words[2:] if w.startswith("--") and w != "--"]
                if is_python(words[0]) and flags:
                    target = tuple(words[1:3]) if words[1] == "-m" else (str(ROOT / words[1]),)
                    job = flag_jobs.setdefault(target, Job([sys.executable, *target, "--help"], [], "flags"))
                    job.commands.append(cmd)
                    job.flags += flags
                continue
            args = substitute_inputs(args, tmp)
            if any(a in ANSWER_FLAGS or a.startswith("--cfg=") for a in args):
                first.setdefault(("as-is", *args), Job([*launch, *args], [], "runs")).commands.append(cmd)
                continue
            point = [a for a in first_sweep_point(args) if not a.startswith("output_dir=")]  # the test's own
            smoke = [] if cmd.needs or "debug=smoke" in point else ["debug=smoke"]
            if any(a.startswith("resume=") for a in point):
                copy = tmp / "runs" / f"resume{len(resumes)}"
                argv = [*launch, *[f"resume={copy}" if a.startswith("resume=") else a for a in point]]
                resumes.append(Job(argv, [cmd], "runs", resume_copy=copy))
                continue
            key = signature(point)
            multirun = any(a in ("-m", "--multirun") or a.startswith(("hydra/", "hydra.")) for a in args)
            if cmd.needs or key in first or multirun:
                out = tmp / "runs" / f"config{len(first)}"
                job = Job([*launch, "--cfg", "job", *point, *smoke, f"output_dir={out}"], [], "config")
                first.setdefault(("config", *point), job).commands.append(cmd)
                continue
            out = default_run if key == () else tmp / "runs" / f"run{len(first)}"
            first[key] = Job([*launch, *point, *smoke, f"output_dir={out}"], [cmd], "runs")
    if resumes and () not in first:
        first[()] = Job([*launch, "debug=smoke", f"output_dir={default_run}"], [], "runs")
    if resumes:  # continuing needs a run that has not finished: one stopped after its first stage
        from threestudio_like.cli import compose_config

        stage = compose_config(["experiment=default"]).stages[0]
        first[("unfinished",)] = Job(
            [*launch, "debug=smoke", f"stages=[{stage}]", f"output_dir={unfinished_run}"], [], "runs"
        )
    return [*first.values(), *flag_jobs.values()], resumes


def prepare_resume(job: Job, runs: Path) -> None:
    """Copy the run a ``resume=`` job continues: the finished default run for ``mode=export|test``;
    else the run stopped after its first stage, its config asking for all the experiment's stages."""
    from omegaconf import OmegaConf

    from threestudio_like.cli import compose_config

    if any(a in ("mode=export", "mode=test") for a in job.argv):
        shutil.copytree(runs / "default", job.resume_copy)
        return
    shutil.copytree(runs / "unfinished", job.resume_copy)
    cfg = OmegaConf.load(job.resume_copy / "config.yaml")
    cfg.stages = list(compose_config([f"experiment={cfg.experiment_name}"]).stages)
    OmegaConf.save(cfg, job.resume_copy / "config.yaml")


def run_job(job: Job) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    job.result = subprocess.run(job.argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def job_problems(job: Job, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from omegaconf import OmegaConf

    from threestudio_like.cli import validate
    from threestudio_like.core import preflight
    from threestudio_like.core.errors import UserError
    from threestudio_like.guidance import pretrained

    p = job.result
    shown = " ".join(job.argv[1:])
    if p.returncode != 0:
        return [f"`{shown}` exited {p.returncode}: {(p.stderr or p.stdout).strip()[-1500:]}"]
    if job.check == "flags":
        return [f"`{shown}` does not list {flag}" for flag in sorted(set(job.flags)) if flag not in p.stdout]
    if job.check == "config":
        with monkeypatch.context() as m:
            if any("weights" in c.needs for c in job.commands):  # the weights are what this machine lacks
                m.setattr(pretrained, "check_pretrained", lambda *args, **kwargs: None)
                m.setattr(preflight, "check_other_weights", lambda *args, **kwargs: None)
            cfg = OmegaConf.create(p.stdout)
            if cfg.get("prepare") is not None:  # its inputs (prompt, elevation) are made when it runs
                return []
            try:
                validate(cfg)
            except UserError as e:
                return [f"`{shown}`: the printed config does not validate: {e}"]
    return []


@pytest.mark.slow
def test_documented_launch_commands_run(tmp_path, monkeypatch):
    """Two jobs at a time, one thread each; the resumes after the run they continue."""
    first, resumes = plan(tmp_path)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run_job, first))
        for job in resumes:
            prepare_resume(job, tmp_path / "runs")
        list(pool.map(run_job, resumes))
    failures = [
        f"{cmd.where}: {problem}"
        for job in [*first, *resumes]
        for problem in job_problems(job, monkeypatch)
        for cmd in job.commands
    ]
    assert not failures, "\n".join(failures)


# ---- what the docs say about the code ---------------------------------------------------
def test_readme_is_a_manual_of_at_most_200_lines():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("path", [p for p in DOCS if p.is_file()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"


def test_readme_experiment_table_has_the_configs_steps():
    """The steps the README gives each stage ("(10k)", "(800)") are the experiment's."""
    from threestudio_like.cli import compose_config

    rows = [ln for ln in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if ln.startswith("| `")]
    listed = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = cells[0].strip("`")
        if (ROOT / "configs" / "experiment" / f"{name}.yaml").is_file():
            listed[name] = [
                int(float(n) * (1000 if k else 1)) for n, k in re.findall(r"\((\d+(?:\.\d+)?)(k?)\)", cells[2])
            ]
    assert sorted(listed) == sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
    for name, steps in listed.items():
        cfg = compose_config([f"experiment={name}"])
        assert steps == [cfg.stage[s].steps for s in cfg.stages], name


def test_configuration_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location(
        "write_config_reference", ROOT / "tools" / "write_config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = module.DOC.read_text(encoding="utf-8")
    assert current == module.page(current), "docs/configuration.md is stale: run python tools/write_config_reference.py"
