"""Runs on a runner host at boot (started by the launch template's user-data): fetch this
host's one-job runner config from SSM, delete it, run the runner once, then power off. A pool
with `estate.reuse_hosts` lets the host wait a little for a next one-job config (the scaler
stores one only when a job is waiting), tidy up, and run again, up to its job limit.

Stdlib only (Ubuntu images have python3 but no AWS CLI). Credentials and identity come from
IMDSv2; the config is passed to the runner in its environment (readable only by that user
and root), never on a command line, in user-data or in a log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient, Credentials
from lambda_src.core.job_isolation import USER_NAME_RE

log = logging.getLogger("runner_estate.host")
IMDS_URL = "http://169.254.169.254"
RUNNER_URL = "https://github.com/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz"
JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"  # the runner reads --jitconfig from here


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


def fetch_runner_config(ssm: AwsJsonClient, name: str, wait_s: float, sleep: Callable[[float], None] = time.sleep) -> str:
    """Wait for the scaler to store this host's config, read it once, and delete it."""
    deadline = time.monotonic() + wait_s
    delay = 1.0
    while True:
        try:
            value = str(ssm.call("GetParameter", {"Name": name, "WithDecryption": True})["Parameter"]["Value"])
            break
        except AwsError as exc:
            if exc.code != "ParameterNotFound" or time.monotonic() + delay > deadline:
                raise
            sleep(delay)
            delay = min(delay * 2, 10.0)
    ssm.call("DeleteParameter", {"Name": name})
    return value


def install_runner(directory: Path, version: str, arch: str, sha256: str | None, fetch: Callable[[str], bytes]) -> Path:
    """The runner of this version in `directory`, downloaded and checked when absent (an AMI
    may bake it in). A checksum that does not match stops the host."""
    if (directory / "run.sh").exists():
        return directory
    url = RUNNER_URL.format(version=version, arch="x64" if arch == "x64" else "arm64")
    blob = fetch(url)
    digest = hashlib.sha256(blob).hexdigest()
    if sha256 and digest != sha256.lower():
        raise RuntimeError(f"runner {version} for {arch}: sha256 {digest} does not match the configured {sha256}")
    if not sha256:
        log.warning("runner %s for %s: no checksum configured; downloaded sha256 is %s", version, arch, digest)
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "runner.tar.gz"
    archive.write_bytes(blob)
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    archive.unlink()
    return directory


def start_runner(command: list[str], config: str, user: str | None, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start the runner for its one job, with the config only in its environment (never on a
    command line); `extra_env` pins a GPU slot's devices."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra_env or {})
    env[JIT_ENV] = config
    keep = ",".join([JIT_ENV, *sorted(extra_env or {})])
    prefix = ["sudo", f"--preserve-env={keep}", "-u", user] if user and user != "root" else []
    return subprocess.Popen([*prefix, *command], env=env)  # noqa: S603 - fixed argv, no shell


def run_once(command: list[str], config: str, user: str | None) -> int:
    """Run the runner for its one job."""
    return start_runner(command, config, user).wait()


def serve_jobs(
    fetch: Callable[[float], str],
    run: Callable[[str], int],
    tidy: Callable[[], None],
    first_wait_s: float,
    reuse_wait_s: float,
    max_jobs: int,
) -> int:
    """Run one-job runners in turn: the first config waited for through the boot, each next
    one only `reuse_wait_s` after the last runner exits. Returns how many ran."""
    ran = 0
    while ran < max_jobs:
        try:
            config = fetch(first_wait_s if ran == 0 else reuse_wait_s)
        except AwsError as exc:
            if ran == 0 or exc.code != "ParameterNotFound":
                raise
            log.info("no next runner config within %.0f s; powering off", reuse_wait_s)
            break
        if ran:
            tidy()  # only once the next job is certain: a host that powers off needs no tidying
        log.info("runner config %d received; starting the runner", ran + 1)
        log.info("runner exited with %d", run(config))
        ran += 1
    return ran


def tidy_between_jobs(runner_dir: Path, user: str, kill: Callable[[list[str]], object] = subprocess.run) -> None:
    """What one job leaves that the next must not meet: the runner user's processes and the
    runner's work folder (checkouts, caches, job containers' mounts)."""
    if user != "root":
        kill(["pkill", "-KILL", "-u", user])
    shutil.rmtree(runner_dir / "_work", ignore_errors=True)


def download(url: str) -> bytes:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_host_arguments(parser)
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the runner config")
    parser.add_argument("--max-jobs", type=int, default=1, help="one-job runners this host may run in turn (estate.reuse_hosts)")
    parser.add_argument("--reuse-wait", type=float, default=60.0, help="seconds to wait for a next runner config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    imds = Imds(args.imds_url)
    instance_id = imds.get("meta-data/instance-id")
    region = imds.get("meta-data/placement/region")
    ssm = AwsJsonClient("ssm", region, credentials=imds.credentials)
    directory = install_runner(Path(args.runner_dir), args.runner_version, args.runner_arch, args.runner_sha256, download)
    if args.run_as != "root":
        subprocess.run(["chown", "-R", f"{args.run_as}:{args.run_as}", str(directory)], check=True)  # noqa: S603, S607
    ran = serve_jobs(
        fetch=lambda wait_s: fetch_runner_config(ssm, f"{args.parameter_prefix}{instance_id}", wait_s),
        run=lambda config: run_once([str(directory / "run.sh")], config, args.run_as),
        tidy=lambda: tidy_between_jobs(directory, args.run_as),
        first_wait_s=args.wait,
        reuse_wait_s=args.reuse_wait,
        max_jobs=args.max_jobs,
    )
    log.info("%s ran %d job(s)", instance_id, ran)
    return 0


if __name__ == "__main__":
    sys.exit(main())
