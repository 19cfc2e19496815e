"""The runner software on a host, where no job can change it, and the fresh folder each job
runs from.

The install belongs to the host program (root on our hosts, the agent's user on an agent
host); jobs run as another user and may not write any of it. Installing records a manifest
beside it: every folder, file (mode and SHA-256) and link. Before each start the install is
checked against that record, and the job gets a new folder of hard links to the checked
files plus its own `_work` and `_diag` (the runner keeps its registration there too); the
folder is removed after the job. A folder that merely holds a `run.sh` is never trusted.
A host's first job may have its folder linked from the record while the check runs
(lambda_src/host/first_job.py); it is used only if the check then passes against that record.
Stdlib only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pwd
import shutil
import stat
import tarfile
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("runner_estate.host")
RUNNER_URL = "https://github.com/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz"
JOB_FOLDERS = ("_work", "_diag")  # what the runner writes besides its registration files


class RunnerTamperedError(RuntimeError):
    """The runner install is not what was recorded, or others than its owner may change it."""


def manifest_path(directory: Path) -> Path:
    return directory.with_name(directory.name + ".manifest.json")


def _owners(owners: Collection[int] | None) -> Collection[int]:
    return {0, os.geteuid()} if owners is None else owners


def _checked(path: Path, owners: Collection[int]) -> os.stat_result:
    """`path`'s lstat, if only its owner, one of `owners`, may change it."""
    info = path.lstat()
    if info.st_uid not in owners:
        raise RunnerTamperedError(f"{path} is owned by uid {info.st_uid}, not by the host program")
    if not stat.S_ISLNK(info.st_mode):
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise RunnerTamperedError(f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):o})")
        if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
            raise RunnerTamperedError(f"{path} is setuid or setgid")
    return info


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# Files are hashed this many at a time: hashlib lets go of the GIL while it hashes, and a
# freshly booted host reads its image's blocks from EBS faster with several reads in flight.
HASH_THREADS = max(2, min(16, os.cpu_count() or 2))


def _entries(directory: Path, owners: Collection[int]) -> list[list[Any]]:
    """What the tree holds, parents before children: ["d", path, mode], ["f", path, mode,
    sha256], ["l", path, target]."""
    _checked(directory, owners)
    found: list[list[Any]] = []
    files: list[tuple[int, list[Any], Path]] = []  # size, its entry (its digest still to come), path

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path, name = Path(entry.path), prefix + entry.name
            info = _checked(path, owners)
            if stat.S_ISLNK(info.st_mode):
                found.append(["l", name, os.readlink(path)])
            elif stat.S_ISDIR(info.st_mode):
                found.append(["d", name, stat.S_IMODE(info.st_mode)])
                walk(path, name + "/")
            elif stat.S_ISREG(info.st_mode):
                found.append(["f", name, stat.S_IMODE(info.st_mode)])
                files.append((info.st_size, found[-1], path))
            else:
                raise RunnerTamperedError(f"{path} is neither a file, a folder nor a link")

    walk(directory, "")
    files.sort(key=lambda item: -item[0])  # largest first, so no big binary is left to finish on its own
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        for (_, entry, _), digest in zip(files, pool.map(_digest, [path for _, _, path in files]), strict=True):
            entry.append(digest)
    return found


def verify_runner(directory: Path, owners: Collection[int] | None = None) -> dict[str, Any]:
    """The install's manifest, once the tree is checked to match it exactly."""
    owners = _owners(owners)
    record = manifest_path(directory)
    try:
        _checked(record, owners)
        manifest: dict[str, Any] = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunnerTamperedError(f"{directory}: no readable install record ({exc})") from None
    try:
        found = _entries(directory, owners)
    except FileNotFoundError as exc:
        raise RunnerTamperedError(f"{directory}: {exc}") from None
    if found != manifest.get("entries"):
        recorded = {entry[1]: entry for entry in manifest.get("entries", [])}
        now = {entry[1]: entry for entry in found}
        changed = sorted(name for name in recorded.keys() | now.keys() if recorded.get(name) != now.get(name))
        raise RunnerTamperedError(f"{directory}: {', '.join(changed[:3]) or 'the record'} changed since it was installed")
    return manifest


def record_runner(directory: Path, version: str, arch: str) -> dict[str, Any]:
    """Write the install's manifest beside it (owner-writable only); returns it."""
    manifest = {"version": version, "arch": arch, "entries": _entries(directory, _owners(None))}
    partial = manifest_path(directory).with_suffix(".partial")
    partial.write_text(json.dumps(manifest), encoding="utf-8")
    partial.chmod(0o644)
    partial.replace(manifest_path(directory))
    return manifest


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def install_runner(
    directory: Path, version: str, arch: str, sha256: str | None, fetch: Callable[[str], bytes], adopt: bool = False
) -> Path:
    """The runner of this version in `directory`, as recorded here earlier, or else downloaded,
    checked against `sha256`, made writable by its owner only and recorded. Whatever else the
    folder holds is set aside. `adopt`: an unrecorded runner already there (the agent's
    operator put it there) is recorded and used, if no one but its owner may write it."""
    installed_runner(directory, version, arch, sha256, fetch, adopt)
    return directory


def installed_runner(
    directory: Path, version: str, arch: str, sha256: str | None, fetch: Callable[[str], bytes], adopt: bool = False
) -> dict[str, Any]:
    """install_runner, returning the record the install in `directory` was just checked against
    (or recorded with, after a download)."""
    try:
        manifest = verify_runner(directory)
        if (manifest.get("version"), manifest.get("arch")) == (version, arch):
            return manifest
        log.info("%s holds runner %s for %s; installing %s", directory, manifest.get("version"), manifest.get("arch"), version)
    except RunnerTamperedError as exc:
        if adopt and (directory / "run.sh").exists() and not manifest_path(directory).exists():
            adopted = record_runner(directory, version, arch)
            log.warning("%s: using the runner already there, not checked against a release checksum", directory)
            return adopted
        if directory.exists() or manifest_path(directory).exists():
            log.warning("%s is not used (%s); installing a checked download", directory, exc)
    url = RUNNER_URL.format(version=version, arch="x64" if arch == "x64" else "arm64")
    blob = fetch(url)
    digest = hashlib.sha256(blob).hexdigest()
    if sha256 and digest != sha256.lower():
        raise RuntimeError(f"runner {version} for {arch}: sha256 {digest} does not match the configured {sha256}")
    if not sha256:
        log.warning("runner %s for %s: no checksum configured; downloaded sha256 is %s", version, arch, digest)
    partial = directory.with_name(directory.name + ".partial")
    _remove(partial)
    partial.mkdir(parents=True)
    partial.chmod(0o755)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(partial, filter="data")  # no links out, no setuid, no group or other write
    for path in [partial, *partial.rglob("*")]:
        if not path.is_symlink():
            path.chmod(stat.S_IMODE(path.lstat().st_mode) & ~0o6022)
    _remove(manifest_path(directory))
    _remove(directory)
    partial.rename(directory)
    return record_runner(directory, version, arch)


def give_folder(path: Path, user: str) -> None:
    account = pwd.getpwnam(user)
    try:
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
    except PermissionError:
        raise RuntimeError(f"cannot give {path} to {user}: running jobs as another user needs root") from None


def _own_name() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without an account (some containers)
        return None


def fresh_job_dir(pristine: Path, folder: Path, user: str | None, chown: Callable[[Path, str], None] = give_folder) -> Path:
    """A new `folder` for one job: the checked install as hard links (its files stay the
    install's, unwritable to the job) in folders the job's `user` owns, mode 700 at the top."""
    return build_job_dir(pristine, folder, user, verify_runner(pristine)["entries"], chown)


def build_job_dir(
    pristine: Path, folder: Path, user: str | None, entries: list[list[Any]], chown: Callable[[Path, str], None] = give_folder
) -> Path:
    """`folder` built afresh from `entries`, an install's record, as fresh_job_dir describes; the
    caller answers for the entries (fresh_job_dir: checked against the tree)."""
    _remove(folder)
    folder.mkdir(parents=True)
    folder.chmod(0o700)
    owned = [folder]
    for kind, name, *detail in entries:
        target = folder / name
        if kind == "d":
            target.mkdir()
            target.chmod(detail[0])
            owned.append(target)
        elif kind == "l":
            target.symlink_to(detail[0])
        else:
            try:
                os.link(pristine / name, target)
            except OSError:  # another file system
                shutil.copy2(pristine / name, target)
    for name in JOB_FOLDERS:
        (folder / name).mkdir(exist_ok=True)
        owned.append(folder / name)
    if user is not None and user != _own_name():
        for path in owned:
            chown(path, user)
    return folder


def remove_job_dir(folder: Path) -> None:
    _remove(folder)
