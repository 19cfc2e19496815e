"""Runs on a runner host at boot (started by the launch template's user-data): fetch this
host's one-job runner config from SSM, delete it, run the runner once, then power off. A pool
with `estate.reuse_hosts` lets the host wait a little for a next one-job config (the scaler
stores one only when a job is waiting), tidy up, and run again, up to its job limit.

A warm instance (issue 20.2) finds WARM_CONFIG where its config would be: the install is checked
(and the image's images and disks are there), and it powers off into `stopped` with no job. Its
user-data runs again at each boot (cloud-init's per-boot scripts), so once the scaler starts it
for a job it fetches its one-job config exactly as a fresh host does.

Nothing waits that need not (issue 20.3; bench/boot_bench.py): while the host asks IMDS who
it is, the runner install is checked against its record and the first job's folder linked
from that record (lambda_src/host/first_job.py); the config is fetched once the check has passed.

Stdlib only (Ubuntu images have python3 but no AWS CLI). Credentials and identity come from
IMDSv2; the config is passed to the runner in its environment (readable only by that user
and root), never on a command line, in user-data or in a log.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient
from lambda_src.core.tags import WARM_CONFIG
from lambda_src.host.common import JIT_ENV, Imds, add_host_arguments, download, not_written_yet, start_runner
from lambda_src.host.first_job import CheckedInstall, FirstJob, checked_install
from lambda_src.host.job_users import tidy_after_job
from lambda_src.host.runner_files import install_runner

log = logging.getLogger("runner_estate.host")
__all__ = [
    "JIT_ENV",
    "CheckedInstall",
    "FirstJob",
    "Imds",
    "download",
    "fetch_runner_config",
    "install_runner",
    "main",
    "prepared_runner",
    "run_once",
    "serve_jobs",
    "start_runner",
]


def fetch_runner_config(
    ssm: AwsJsonClient,
    name: str,
    wait_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Wait up to `wait_s` for the scaler to store this host's config, read it once, and delete
    it. Until it is written the read is refused (common.NOT_WRITTEN_YET); when the wait ends
    that refusal is raised. Any other error is raised at once."""
    deadline = clock() + wait_s
    delay = 1.0
    while True:
        try:
            value = str(ssm.call("GetParameter", {"Name": name, "WithDecryption": True})["Parameter"]["Value"])
            break
        except AwsError as exc:
            if not not_written_yet(exc):
                raise
            if clock() + delay > deadline:
                log.warning("no runner config at %s within %.0f s (last answer %s)", name, wait_s, exc.code)
                raise
            sleep(delay)
            delay = min(delay * 2, 10.0)
    ssm.call("DeleteParameter", {"Name": name})
    return value


def run_once(command: list[str], config: str, user: str | None, cwd: Path | None = None) -> int:
    """Run the runner for its one job."""
    return start_runner(command, config, user, cwd=cwd).wait()


def serve_jobs(
    fetch: Callable[[float], str],
    run: Callable[[str], int],
    tidy: Callable[[], None],
    first_wait_s: float,
    reuse_wait_s: float,
    max_jobs: int,
) -> int:
    """Run one-job runners in turn: the first config waited for through the boot, each next
    one only `reuse_wait_s` after the last runner exits. After every job the host is tidied
    before anything else happens: nothing the job left runs while the next config is fetched.
    Returns how many ran."""
    ran = 0
    while ran < max_jobs:
        try:
            config = fetch(first_wait_s if ran == 0 else reuse_wait_s)
        except AwsError as exc:
            if ran == 0 or not not_written_yet(exc):
                raise
            log.info("no next runner config within %.0f s; powering off", reuse_wait_s)
            break
        if ran == 0 and config == WARM_CONFIG:
            log.info("a warm instance, prepared: powering off until a job starts it")
            break
        log.info("runner config %d received; starting the runner", ran + 1)
        try:
            log.info("runner exited with %d", run(config))
        finally:
            tidy()
        ran += 1
    return ran


def prepared_runner(directory: Path, version: str, arch: str, sha256: str | None, fetch: Callable[[str], bytes] | None = None) -> Path:
    """The runner install, checked against its manifest: on a baked image (lambda_src/host/bake.py
    put it there) nothing is downloaded; elsewhere, or if the image holds another version, the
    release is downloaded and checked against its checksum."""
    return checked_install(directory, version, arch, sha256, fetch or download).directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_host_arguments(parser)
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the runner config")
    parser.add_argument("--max-jobs", type=int, default=1, help="one-job runners this host may run in turn (estate.reuse_hosts)")
    parser.add_argument("--reuse-wait", type=float, default=60.0, help="seconds to wait for a next runner config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    imds = Imds(args.imds_url)
    folder = Path(f"{args.runner_dir}-job")  # built afresh for each job, removed after it
    with ThreadPoolExecutor(2) as pool:
        runner = Path(args.runner_dir)
        jobs = FirstJob(pool, runner, folder, args.runner_version, args.runner_arch, args.runner_sha256, args.run_as, download)
        instance_id = imds.get("meta-data/instance-id")
        region = imds.get("meta-data/placement/region")
        ssm = AwsJsonClient("ssm", region, credentials=imds.credentials)

        def run(config: str) -> int:
            ready = jobs.folder_for_job()
            return run_once([str(ready / "run.sh")], config, args.run_as, cwd=ready)

        def fetch(wait_s: float) -> str:
            jobs.checked_install()  # no config is taken (and deleted) for an install that fails its check
            return fetch_runner_config(ssm, f"{args.parameter_prefix}{instance_id}", wait_s)

        ran = serve_jobs(
            fetch=fetch,
            run=run,
            tidy=lambda: tidy_after_job(args.run_as, folder),
            first_wait_s=args.wait,
            reuse_wait_s=args.reuse_wait,
            max_jobs=args.max_jobs,
        )
    log.info("%s ran %d job(s)", instance_id, ran)
    return 0


if __name__ == "__main__":
    sys.exit(main())
