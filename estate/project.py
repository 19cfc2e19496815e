"""Where the CLI finds the project: the directory of `Pulumi.yaml` (name `runner-estate`), which
holds the program (`__main__.py`), the stack files and `runner_configs/`.

`--project DIR` names it; otherwise the current directory or the nearest one above it that is
such a project (as the Pulumi CLI looks for `Pulumi.yaml`); otherwise the checkout this package
was installed from (an editable install, or running from the source tree). So the CLI works
from any directory, not only the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

PROJECT_NAME = "runner-estate"
# The checkout this package lives in (estate/ sits at its top level).
PACKAGE_PROJECT = Path(__file__).resolve().parent.parent


class ProjectNotFoundError(Exception):
    """No project where the CLI looked: a usage error (`--project DIR` fixes it)."""


def is_project(path: Path) -> bool:
    """`path` holds the Pulumi.yaml of this program."""
    try:
        data = yaml.safe_load((path / "Pulumi.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("name") == PROJECT_NAME


def find_project(explicit: str | None = None, cwd: Path | None = None) -> Path:
    """The project directory, absolute."""
    if explicit is not None:
        path = Path(explicit).expanduser().resolve()
        if not is_project(path):
            raise ProjectNotFoundError(f"--project {explicit}: no Pulumi.yaml of project {PROJECT_NAME} there")
        return path
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if is_project(folder):
            return folder
    if is_project(PACKAGE_PROJECT):
        return PACKAGE_PROJECT
    raise ProjectNotFoundError(
        f"no {PROJECT_NAME} project (Pulumi.yaml) in {start} or above, and the package is not a checkout: pass --project DIR"
    )


def shown(path: Path) -> str:
    """A path as messages name it: relative to the current directory when inside it
    (`runner_configs/cpu.yaml`), else absolute."""
    absolute = path if path.is_absolute() else Path.cwd() / path
    try:
        return str(absolute.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return os.path.normpath(absolute)


def stack_configs(project_dir: Path, runner_configs: str) -> str:
    """The stack's `runner_configs` folder (relative to the project), as messages name it."""
    return shown(project_dir / runner_configs)
