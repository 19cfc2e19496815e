"""Which estate `status` and `report` read: a deployed stack, or a running `estate serve`.

A stack (`--stack NAME`) is found from its own file, as `preview` and `doctor` read it:
Pulumi.<NAME>.yaml gives the environment, the region, the GitHub App and the pool files, and
every physical name the program gives is stable (estate/config/names.py), so the ledger is
`runner-estate-<env>-ledger` and a pool's dead-letter queue `runner-estate-<env>-<pool>-dlq` in
that region: no Pulumi state, no stack outputs and no Pulumi CLI needed. The settings are the
ones the deploy compiled for the Lambdas (estate/derive/control_config.py), so routing and the
planners answer as the control plane does. AWS credentials come from the usual places (profile,
environment, SSO); the App key from `--app-key-file` or the SecureString the deploy stored.

`serve` writes where it listens to a session file (estate/local/serve.py); `--serve [FILE]`
reads it and everything else is the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.config.names import dead_letter_queues, ledger_table
from estate.config.prices import PRICES_AS_OF
from estate.config.stack_config import parse_stack_config
from estate.derive.control_config import control_settings, pool_settings
from estate.preview import read_stack_file, stack_file, validate_stack_config
from lambda_src.core.settings import ControlPlaneSettings

SERVE_FORMAT = "runner-estate-serve/1"


@dataclass(frozen=True)
class Target:
    where: str
    settings: ControlPlaneSettings
    dlqs: dict[str, list[str]]  # pool -> names of its dead-letter queues
    aws_url: str | None = None  # an endpoint instead of AWS's (serve's moto_server)
    credentials: dict[str, str] | None = None  # fixed keys (moto's); None: boto3's usual chain
    app_key_file: Path | None = None
    prices: str = PRICES_AS_OF
    extra: dict[str, Any] = field(default_factory=dict)


def stack_target(project_dir: Path, stack_name: str, app_key_file: Path | None = None) -> Target:
    path = stack_file(project_dir, stack_name)
    config, secret_keys = read_stack_file(path)
    stack = validate_stack_config(config, path, secret_keys)
    estate = load_estate([str(project_dir / stack.runner_configs)])
    pools = {pool.name: pool_settings(pool) for pool in estate.pools}
    settings = control_settings(stack, estate, table_name=ledger_table(stack.environment), pools=pools)
    dlqs = {pool.name: dead_letter_queues(stack.environment, pool) for pool in estate.pools}
    return Target(f"stack {stack_name} ({stack.region})", settings, dlqs, app_key_file=app_key_file)


def serve_target(path: Path) -> Target:
    try:
        session = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            str(path), None, None, f"no running `estate serve` described here ({exc}); start one with `python -m estate serve`"
        ) from exc
    if not isinstance(session, dict) or session.get("format") != SERVE_FORMAT:
        raise ConfigError(str(path), None, None, f"not a session file `estate serve` wrote (format {SERVE_FORMAT})")
    stack = parse_stack_config(session["stack"], str(path))
    estate = load_estate(list(session["configs"]))
    pools = {pool.name: pool_settings(pool) for pool in estate.pools}
    settings = control_settings(stack, estate, table_name=str(session["table"]), pools=pools, api_url=str(session["api_url"]))
    return Target(
        f"serve at {session['aws_url']}",
        settings,
        {pool: list(names) for pool, names in session["dlqs"].items()},
        aws_url=str(session["aws_url"]),
        credentials=dict(session["credentials"]),
    )
