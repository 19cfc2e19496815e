"""The user-data a runner host boots with: unpack the stdlib bootstrap and run it once.

It carries code and settings only — no credential of any kind. The host's one-job runner
config arrives later through its own SSM parameter (lambda_src/jit_parameters.py).
"""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
from pathlib import Path

from estate.pool import Pool

LAMBDA_SRC = Path(__file__).resolve().parent.parent / "lambda_src"
HOST_MODULES = ("__init__.py", "aws_json.py", "host_bootstrap.py")
INSTALL_DIR = "/opt/runner-estate"
LOG_FILE = "/var/log/runner-estate/runner.log"
USER_DATA_LIMIT = 16 * 1024  # EC2's limit on user-data before base64


def _bundle() -> str:
    """The bootstrap's modules as a gzipped tar, base64: small and free of quoting hazards."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in HOST_MODULES:
            data = (LAMBDA_SRC / name).read_bytes()
            info = tarfile.TarInfo(f"lambda_src/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: same input, same user-data
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(gzip.compress(buffer.getvalue(), mtime=0)).decode()


def user_data(pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None) -> str:
    args = [
        f"--parameter-prefix {jit_prefix}",
        f"--runner-version {runner_version}",
        f"--runner-arch {pool.runner.runner_architecture}",
        f"--run-as {pool.runner.runner_run_as}",
        f"--wait {60 * pool.runner.runner_boot_time_in_minutes}",
    ]
    if runner_sha256:
        args.append(f"--runner-sha256 {runner_sha256}")
    script = "\n".join(
        [
            "#!/bin/bash",
            "# runner-estate host bootstrap: one job, then the host powers off (and is terminated).",
            "set -uo pipefail",
            f"mkdir -p {INSTALL_DIR} $(dirname {LOG_FILE})",
            f"id -u {pool.runner.runner_run_as} >/dev/null 2>&1 || useradd --create-home {pool.runner.runner_run_as}",
            f"base64 -d <<'BUNDLE' | tar -xz -C {INSTALL_DIR}",
            _bundle(),
            "BUNDLE",
            f"cd {INSTALL_DIR} && python3 -m lambda_src.host_bootstrap {' '.join(args)} >>{LOG_FILE} 2>&1",
            "shutdown -h now",
            "",
        ]
    )
    if len(script) > USER_DATA_LIMIT:
        raise ValueError(f"user-data for pool {pool.name} is {len(script)} bytes; EC2 allows {USER_DATA_LIMIT}")
    return script
