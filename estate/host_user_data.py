"""The user-data a runner host boots with: unpack our stdlib host code and run it — the
one-job bootstrap on an ordinary host, the GPU slot manager on a capacity-block node.

It carries code and settings only — no credential of any kind. Runner configs arrive later
through SSM parameters only that instance may read (lambda_src/jit_parameters.py).
"""

from __future__ import annotations

import ast
import base64
import gzip
import io
import tarfile
from functools import cache
from pathlib import Path

from estate.pool import Pool
from lambda_src.planner import REUSE_WINDOW_S

LAMBDA_SRC = Path(__file__).resolve().parent.parent / "lambda_src"
HOST_MODULES = ("__init__.py", "aws_json.py", "host_bootstrap.py")
NODE_MODULES = (*HOST_MODULES, "slot_manager.py", "gpu_inventory.py", "gpu_slots.py", "node_slots.py", "instance_catalog.py")
INSTALL_DIR = "/opt/runner-estate"
LOG_FILE = "/var/log/runner-estate/runner.log"
USER_DATA_LIMIT = 16 * 1024  # EC2's limit on user-data before base64


def _without_docs(source: str) -> bytes:
    """The module's code without comments and docstrings: user-data is limited to 16 KiB."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree).encode()


@cache
def _bundle(modules: tuple[str, ...]) -> str:
    """The host modules as a gzipped tar, base64: small and free of quoting hazards."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in modules:
            data = _without_docs((LAMBDA_SRC / name).read_text(encoding="utf-8"))
            info = tarfile.TarInfo(f"lambda_src/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: same input, same user-data
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(gzip.compress(buffer.getvalue(), mtime=0)).decode()


def _script(pool: Pool, modules: tuple[str, ...], command: str, after: list[str]) -> str:
    run_as = pool.runner.runner_run_as
    script = "\n".join(
        [
            "#!/bin/bash",
            "set -uo pipefail",
            f"mkdir -p {INSTALL_DIR} $(dirname {LOG_FILE})",
            f"id -u {run_as} >/dev/null 2>&1 || useradd --create-home {run_as}",
            f"base64 -d <<'BUNDLE' | tar -xz -C {INSTALL_DIR}",
            _bundle(modules),
            "BUNDLE",
            f"cd {INSTALL_DIR} && {command} >>{LOG_FILE} 2>&1",
            *after,
            "",
        ]
    )
    if len(script) > USER_DATA_LIMIT:
        raise ValueError(f"user-data for pool {pool.name} is {len(script)} bytes; EC2 allows {USER_DATA_LIMIT}")
    return script


def _runner_args(pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None) -> list[str]:
    args = [
        f"--parameter-prefix {jit_prefix}",
        f"--runner-version {runner_version}",
        f"--runner-arch {pool.runner.runner_architecture}",
        f"--run-as {pool.runner.runner_run_as}",
    ]
    return [*args, f"--runner-sha256 {runner_sha256}"] if runner_sha256 else args


def user_data(pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None) -> str:
    """An ordinary host: one job (or, with `estate.reuse_hosts`, a few in turn), then the host
    powers off (and is terminated)."""
    args = [*_runner_args(pool, jit_prefix, runner_version, runner_sha256), f"--wait {60 * pool.runner.runner_boot_time_in_minutes}"]
    if (reuse := pool.spec.estate.reuse_hosts) is not None:
        # The host outwaits the scaler's window by half a minute: a config stored at its end still finds the host.
        args += [f"--max-jobs {reuse.max_jobs}", f"--reuse-wait {REUSE_WINDOW_S + 30:g}"]
    return _script(pool, HOST_MODULES, f"python3 -m lambda_src.host_bootstrap {' '.join(args)}", ["shutdown -h now"])


def node_user_data(pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None, events_queue_url: str) -> str:
    """A capacity-block node: the slot manager runs for the life of the block. If it stops
    (no driver, a bad layout) the node stays up for inspection; its log says why."""
    assert pool.slot_layout is not None
    args = [
        *_runner_args(pool, jit_prefix, runner_version, runner_sha256),
        f"--layout {pool.slot_layout.spec()}",
        f"--events-queue-url {events_queue_url}",
    ]
    return _script(pool, NODE_MODULES, f"python3 -m lambda_src.slot_manager {' '.join(args)}", [])
