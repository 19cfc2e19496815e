"""`python -m estate doctor`: load the stack as `preview` does, read the account and the App,
judge, print one line per check (or one JSON array). Exit 1 on any `fail`, 0 otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from estate.config.loader import load_estate
from estate.derive.runner_groups import plan_runner_groups
from estate.derive.spot_role import plan_spot_role
from estate.doctor.checks import Finding, render, run_checks
from estate.doctor.gather import AwsClients, gather_aws, gather_github, read_app_key, read_extra_app_keys
from estate.preview import read_stack_file, stack_file, validate_stack_config


def doctor(
    project_dir: Path,
    stack_name: str,
    app_key_file: Path | None = None,
    *,
    clients: AwsClients | None = None,
    github_url: str | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Finding]:
    """Every check's finding for the stack. `clients` and `github_url` point the reads
    elsewhere (tests: moto, stubs and the fake GitHub); by default the stack's region and API."""
    path = stack_file(project_dir, stack_name)
    config, secret_keys = read_stack_file(path)
    stack = validate_stack_config(config, path, secret_keys)
    estate = load_estate([project_dir / stack.runner_configs])
    groups, _ = plan_runner_groups(stack, estate, path.name)
    spot, _ = plan_spot_role(stack, estate, path.name)
    clients = clients or AwsClients.for_region(stack.region)
    now = datetime.fromtimestamp(clock(), UTC)
    aws = gather_aws(clients, stack, estate)
    key = read_app_key(clients, aws, stack, app_key_file)
    extra_keys = read_extra_app_keys(clients, aws, stack)
    gh = gather_github(stack, key, github_url or stack.github.api_url, aws.webhook_url, groups, now, clock, extra_keys=extra_keys)
    return run_checks(stack, estate, groups, spot, aws, gh, now)


def run(project_dir: Path, stack_name: str, as_json: bool, app_key_file: str | None, out: TextIO | None = None) -> int:
    findings = doctor(project_dir, stack_name, Path(app_key_file) if app_key_file else None)
    print(render(findings, as_json), file=out or sys.stdout)
    return 1 if any(f.status == "fail" for f in findings) else 0
