"""The project as a package a newcomer installs (issue 19.1, 19.9): pinned dependencies that agree
everywhere they are written, the `estate` command, its version and changelog, a README whose CLI
table is the parser's, the runtime set enough for the main job, and the CLI from any directory."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from estate import __version__
from estate.cli import build_parser, main
from tests.conftest import PROJECT_DIR

PYPROJECT = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text(encoding="utf-8"))
README = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)$")


def _name(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """name -> version of `name==version` lines; anything else pinned loosely fails here."""
    found = {}
    for line in lines:
        match = PIN.match(line)
        assert match, f"not pinned: {line!r}"
        found[_name(match[1])] = match[2]
    return found


def requirements(path: Path) -> list[str]:
    """A requirements file's lines, `-r` followed, comments dropped."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            lines += requirements(path.parent / line[3:].strip())
        elif line:
            lines.append(line)
    return lines


def lock(path: Path) -> dict[str, str]:
    return {_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", path.read_text(encoding="utf-8"), re.M)}


# ---- dependencies, pinned and in step ---------------------------------------------------


def test_the_package_declares_the_runtime_set_pinned_as_requirements_txt() -> None:
    project = PYPROJECT["project"]
    runtime = pins(project["dependencies"])
    assert runtime == pins(requirements(PROJECT_DIR / "requirements.txt"))
    assert {"pulumi", "pulumi-aws", "pydantic", "pyyaml", "boto3"} <= set(runtime)
    extras = {name: pins(lines) for name, lines in project["optional-dependencies"].items()}
    assert set(extras) == {"dev", "plot", "serve"}
    dev_set = pins(requirements(PROJECT_DIR / "requirements-dev.txt"))
    assert {**runtime, **extras["dev"]} == dev_set
    assert extras["plot"].items() <= extras["dev"].items()
    assert extras["serve"].items() <= extras["dev"].items()
    assert "matplotlib" in extras["plot"]
    assert {"moto", "flask"} <= set(extras["serve"])
    # The main job needs none of what only tests, plots or serve use.
    assert not set(runtime) & {"pytest", "moto", "flask", "matplotlib", "hypothesis", "mypy", "ruff"}


@pytest.mark.parametrize(("lock_file", "extras"), [("requirements.lock", []), ("requirements-dev.lock", ["dev"])])
def test_the_committed_locks_pin_what_the_package_pins(lock_file: str, extras: list[str]) -> None:
    project = PYPROJECT["project"]
    wanted = pins(project["dependencies"])
    for extra in extras:
        wanted |= pins(project["optional-dependencies"][extra])
    locked = lock(PROJECT_DIR / lock_file)
    assert {name: locked.get(name) for name in wanted} == wanted
    if not extras:
        assert not set(locked) & {"pytest", "moto", "matplotlib"}


def test_the_estate_command_and_its_version() -> None:
    assert PYPROJECT["project"]["scripts"] == {"estate": "estate.cli:main"}
    assert PYPROJECT["project"]["version"] == __version__
    changelog = (PROJECT_DIR / "CHANGELOG.md").read_text(encoding="utf-8")
    newest = re.search(r"^## \[?(\d+\.\d+\.\d+)", changelog, re.M)
    assert newest is not None
    assert newest[1] == __version__


def test_estate_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"estate {__version__}"


# ---- the README's two commands and its CLI table -----------------------------------------


def test_the_readme_opens_with_the_two_commands_ci_runs() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    assert README.index(first_block[0]) < README.index("\n## ")
    commands = [line.split("#", 1)[0].strip() for line in first_block[1].splitlines() if line.strip()]
    assert commands == ["bash scripts/preview.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (PROJECT_DIR / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/setup.sh dev" in (PROJECT_DIR / "scripts" / "test.sh").read_text(encoding="utf-8")
    preview = (PROJECT_DIR / "scripts" / "preview.sh").read_text(encoding="utf-8")
    assert "bash scripts/setup.sh\n" in preview  # the runtime set only


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}


def readme_cli_rows() -> dict[str, str]:
    """command -> its row of the README's command table (both columns)."""
    section = README[README.index("## The CLI") : README.index("\n## ", README.index("## The CLI") + 1)]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([a-z][a-z-]*)(?:[ `])", line)
        if match:
            rows[match[1]] = re.sub(r"`pulumi [^`]*`", "", line)  # other tools' options, e.g. `pulumi preview --json`
    return rows


def test_the_readme_cli_table_is_the_parser() -> None:
    """Every command and every option documented; nothing documented that does not exist."""
    parser = build_parser()
    commands = _subcommands(parser)
    rows = readme_cli_rows()
    assert set(rows) == set(commands)
    global_options = _options(parser)
    section = README[README.index("## The CLI") : README.index("### Exit codes")]
    assert {o for o in global_options if o not in section} == set()
    for name, sub in commands.items():
        documented = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rows[name]))
        assert _options(sub) - documented == set(), f"{name}: options the README does not name"
        assert documented - _options(sub) - global_options == set(), f"{name}: the README names options that do not exist"


# ---- the runtime set is enough; the CLI from any directory ------------------------------

# Imports a fresh process refuses: what only the dev, plot and serve extras install.
BLOCK_EXTRAS = """
import sys
from importlib.abc import MetaPathFinder
EXTRAS = {"moto", "flask", "flask_cors", "pytest", "hypothesis", "matplotlib", "pulumi_policy", "mypy"}
class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Refuse())
from estate.cli import main
sys.exit(main(sys.argv[1:]))
"""


def estate(*args: str, cwd: Path = PROJECT_DIR, runtime_only: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process started in `cwd`, the package importable as an install makes it."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    command = [sys.executable, "-c", BLOCK_EXTRAS, *args] if runtime_only else [sys.executable, "-m", "estate", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_main_job_needs_only_the_runtime_set(tmp_path: Path) -> None:
    done = estate("preview", "--json", runtime_only=True)
    assert done.returncode == 0, done.stderr
    assert any(r["type"] == "runner-estate:index:Network" for r in json.loads(done.stdout))
    for args in (["validate", "runner_configs"], ["route", "self-hosted,linux,x64,cpu"], ["schema"]):
        done = estate(*args, runtime_only=True)
        assert done.returncode == 0, (args, done.stderr)
    done = estate("simulate", "--days", "0.05", "--policy", "ideal", "--json", runtime_only=True)
    assert done.returncode == 0, done.stderr
    # What needs an extra says which, in one line.
    done = estate("serve", runtime_only=True)
    assert (done.returncode, done.stderr) == (1, "error: serve needs flask: pip install 'runner-estate[serve]'\n")
    done = estate("simulate", "--days", "0.05", "--plot", str(tmp_path / "sim.png"), runtime_only=True)
    assert (done.returncode, done.stderr) == (1, "error: --plot needs matplotlib: pip install 'runner-estate[plot]'\n")


def test_the_cli_works_from_any_directory(tmp_path: Path) -> None:
    """Issue 19.1: from outside the checkout, the project's stack files and runner_configs are found."""
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    done = estate("validate", "--stack", "prod", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok: 10 pools, 3 buildkite queues, stack prod, 0 warnings"
    done = estate("route", "self-hosted,linux,x64,gpu,h100", cwd=elsewhere)
    assert (done.returncode, done.stdout) == (0, "gpu-h100-cb\n")
    done = estate("preview", "--json", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert any(r["name"] == "gpu-h100-cb-lt" for r in json.loads(done.stdout))


def copy_project(tmp_path: Path) -> Path:
    """A project folder of its own: Pulumi.yaml, the program, the prod stack and runner_configs/."""
    project = tmp_path / "my-estate"
    project.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.prod.yaml", "__main__.py"):
        shutil.copy(PROJECT_DIR / name, project / name)
    shutil.copytree(PROJECT_DIR / "runner_configs", project / "runner_configs")
    return project


def test_the_project_is_the_one_named_or_the_one_the_cli_stands_in(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    (project / "runner_configs" / "cpu-x64-spot.yaml").unlink()
    inside = project / "runner_configs"
    done = estate("route", "self-hosted,linux,x64,cpu", cwd=inside)  # found above the current directory
    assert (done.returncode, done.stdout) == (0, "cpu-x64-ondemand\n")
    done = estate("--project", str(project), "route", "self-hosted,linux,x64,cpu", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "cpu-x64-ondemand\n")
    done = estate("--project", str(tmp_path), "route", "self-hosted", cwd=tmp_path)
    assert done.returncode == 64
    assert done.stderr.startswith(f"error: estate route: --project {tmp_path}: no Pulumi.yaml of project runner-estate there")
