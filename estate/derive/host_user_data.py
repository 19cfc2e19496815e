"""The user-data a runner host boots with: unpack our stdlib host code and run it — the
one-job bootstrap on an ordinary host, the GPU slot manager on a capacity-block node.

It carries code and settings only — no credential of any kind. Runner configs arrive later
through SSM parameters only that instance may read (lambda_src/aws/jit_parameters.py).
"""

from __future__ import annotations

import ast
import base64
import gzip
import io
import shlex
import tarfile
from functools import cache
from pathlib import Path

from estate.config.pool import Pool
from lambda_src.core.planner import REUSE_WINDOW_S

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST_ENTRY = "lambda_src.host.bootstrap"
NODE_ENTRY = "lambda_src.host.slot_manager"
INSTALL_DIR = "/opt/runner-estate"
LOG_FILE = "/var/log/runner-estate/runner.log"
USER_DATA_LIMIT = 16 * 1024  # EC2's limit on user-data before base64


def _without_docs(source: str) -> bytes:
    """The module's code without comments, docstrings and function annotations (with
    `from __future__ import annotations` nothing reads them at run time): user-data is
    limited to 16 KiB."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.returns = None
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg]:
                if arg is not None:
                    arg.annotation = None
    return ast.unparse(tree).encode()


def _module_file(module: str) -> str:
    """`lambda_src.host.bootstrap` -> `lambda_src/host/bootstrap.py` (or the package's __init__)."""
    base = module.replace(".", "/")
    return f"{base}/__init__.py" if (REPO_ROOT / base).is_dir() else f"{base}.py"


@cache
def bundled_files(entry: str) -> tuple[str, ...]:
    """The files a host program needs: the entry module, every lambda_src module it imports
    (transitively) and their packages' __init__ files — read from the imports, so a new
    import can never be left out of user-data."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # the module and every package above it
            name = ".".join(parts[:depth])
            if name in seen:
                continue
            seen.add(name)
            tree = ast.parse((REPO_ROOT / _module_file(name)).read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lambda_src"):
                    todo.append(node.module)
                elif isinstance(node, ast.Import):
                    todo += [alias.name for alias in node.names if alias.name.startswith("lambda_src")]
    return tuple(sorted(_module_file(name) for name in seen))


@cache
def _bundle(entry: str) -> str:
    """The host modules as a gzipped tar, base64: small and free of quoting hazards."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in bundled_files(entry):
            data = _without_docs((REPO_ROOT / name).read_text(encoding="utf-8"))
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: same input, same user-data
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(gzip.compress(buffer.getvalue(), mtime=0)).decode()


def _script(pool: Pool, entry: str, arguments: list[str], after: list[str]) -> str:
    # Every value is quoted where it meets the shell, whatever the loader let through.
    command = shlex.join(["python3", "-m", entry, *arguments])
    run_as = shlex.quote(pool.runner.runner_run_as)
    script = "\n".join(
        [
            "#!/bin/bash",
            "set -uo pipefail",
            f"mkdir -p {INSTALL_DIR} $(dirname {LOG_FILE})",
            f"id -u {run_as} >/dev/null 2>&1 || useradd --create-home {run_as}",
            f"base64 -d <<'BUNDLE' | tar -xz -C {INSTALL_DIR}",
            _bundle(entry),
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
    """The host program's arguments, one item per word (`_script` quotes them)."""
    args = [
        *("--parameter-prefix", jit_prefix),
        *("--runner-version", runner_version),
        *("--runner-arch", pool.runner.runner_architecture),
        *("--run-as", pool.runner.runner_run_as),
    ]
    return [*args, "--runner-sha256", runner_sha256] if runner_sha256 else args


def user_data(pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None) -> str:
    """An ordinary host: one job (or, with `estate.reuse_hosts`, a few in turn), then the host
    powers off (and is terminated)."""
    args = [*_runner_args(pool, jit_prefix, runner_version, runner_sha256), "--wait", str(60 * pool.runner.runner_boot_time_in_minutes)]
    if (reuse := pool.spec.estate.reuse_hosts) is not None:
        # The host outwaits the scaler's window by half a minute: a config stored at its end still finds the host.
        args += ["--max-jobs", str(reuse.max_jobs), "--reuse-wait", f"{REUSE_WINDOW_S + 30:g}"]
    return _script(pool, HOST_ENTRY, args, ["shutdown -h now"])


def node_user_data(pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None, events_queue_url: str) -> str:
    """A capacity-block node: the slot manager runs for the life of the block. If it stops
    (no driver, a bad layout) the node stays up for inspection; its log says why."""
    assert pool.slot_layout is not None
    args = [
        *_runner_args(pool, jit_prefix, runner_version, runner_sha256),
        *("--layout", pool.slot_layout.spec()),
        *("--events-queue-url", events_queue_url),
    ]
    return _script(pool, NODE_ENTRY, args, [])
