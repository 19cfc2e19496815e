"""What every host program shares (the one-job bootstrap, the GPU slot manager, and the
agent's runners): IMDSv2, the arguments user-data starts it with, the runner download, and
starting a runner with its config in its environment only. Stdlib only."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lambda_src.aws.sigv4_client import AwsError, Credentials
from lambda_src.core.job_isolation import USER_NAME_RE

IMDS_URL = "http://169.254.169.254"
RUNNER_CACHE = Path("/opt/runner-cache")  # release tarballs an image may carry, to save the download
JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"  # the runner reads --jitconfig from here

# What SSM answers a host that reads its runner config before the control plane wrote it. The
# runner role may read only a parameter tagged with the host's own instance ARN (estate/derive/
# iam_policies.jit_parameter_policy), and a parameter that does not exist has no tags: IAM
# refuses the read (AccessDeniedException) before SSM could say ParameterNotFound. Both mean
# "not yet" to a host that is waiting for its config; it gives up when its wait ends.
NOT_WRITTEN_YET = frozenset({"ParameterNotFound", "AccessDeniedException"})


def not_written_yet(exc: AwsError) -> bool:
    """Whether a failed read of a host's own runner config means it is not there (yet)."""
    return exc.code in NOT_WRITTEN_YET


@dataclass
class Imds:
    """Instance metadata over IMDSv2 only: every read carries a session token."""

    base: str = IMDS_URL
    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            request = urllib.request.Request(  # noqa: S310 - the link-local metadata service
                f"{self.base}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
            )
            with urllib.request.urlopen(request, timeout=2) as answer:  # noqa: S310
                self._token = answer.read().decode()
        return self._token

    def get(self, path: str) -> str:
        request = urllib.request.Request(f"{self.base}/latest/{path}", headers={"X-aws-ec2-metadata-token": self.token()})  # noqa: S310
        with urllib.request.urlopen(request, timeout=2) as answer:  # noqa: S310
            return str(answer.read().decode())

    def credentials(self) -> Credentials:
        role = self.get("meta-data/iam/security-credentials/").splitlines()[0]
        data = json.loads(self.get(f"meta-data/iam/security-credentials/{role}"))
        return Credentials(data["AccessKeyId"], data["SecretAccessKey"], data["Token"])


def start_runner(
    command: list[str], config: str, user: str | None, extra_env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start the runner for its one job, with the config only in its environment (never on a
    command line); `extra_env` pins a GPU slot's devices; `cwd` is the job's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra_env or {})
    env[JIT_ENV] = config
    return subprocess.Popen(runner_argv(command, user, sorted(extra_env or {})), env=env, cwd=cwd)  # noqa: S603 - no shell


def runner_argv(command: list[str], user: str | None, extra_env: list[str]) -> list[str]:
    """`command` as `user` (sudo keeps only the config and `extra_env` of the environment)."""
    keep = ",".join([JIT_ENV, *extra_env])
    return ["sudo", f"--preserve-env={keep}", "-u", user, *command] if user and user != "root" else command


def download(url: str) -> bytes:
    """The release tarball; an image may carry it in RUNNER_CACHE (it is checked the same way)."""
    cached = RUNNER_CACHE / url.rsplit("/", 1)[-1]
    if cached.is_file():
        return cached.read_bytes()
    with urllib.request.urlopen(url, timeout=120) as answer:  # noqa: S310 - https release URL
        return bytes(answer.read())


def _matching(pattern: str) -> Callable[[str], str]:
    """An argparse type that takes only values matching `pattern` (the loader checked them too)."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise argparse.ArgumentTypeError(f"{value!r} does not match {pattern}")
        return value

    return check


def add_host_arguments(parser: argparse.ArgumentParser) -> None:
    """What every host program is started with by its user-data (estate/derive/host_user_data.py)."""
    parser.add_argument("--parameter-prefix", type=_matching(r"/[A-Za-z0-9_./-]+/"), required=True)
    parser.add_argument("--runner-version", type=_matching(r"\d+\.\d+\.\d+"), required=True)
    parser.add_argument("--runner-arch", choices=["x64", "arm64"], required=True)
    parser.add_argument("--runner-sha256", type=_matching(r"[0-9A-Fa-f]{64}"))
    parser.add_argument("--run-as", type=_matching(USER_NAME_RE.pattern), default="ubuntu")
    parser.add_argument("--runner-dir", default="/opt/actions-runner")
    parser.add_argument("--imds-url", default=IMDS_URL)
