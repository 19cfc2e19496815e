"""A host's first job, made ready while the host finds out who it is (issue 20.3, the fast
launch path; bench/boot_bench.py measures it): the runner install is checked against its
record and, at the same time, the job's folder is linked from that record. On a baked image
the check is most of the boot (hashing every file of the install) and is paid once; the
links are made while it runs (they take from it only the CPU they use: where no core is
spare, as on a 2-vCPU host, the two only trade places).

The folder is used only if the check passes against the very record it was linked from, with
nothing downloaded; otherwise it is built again from the checked install, as for every later
job (runner_files.fresh_job_dir). This lives apart from runner_files so that a capacity-block
node's user-data, which carries runner_files and must fit EC2's 16 KiB, does not carry it.
Stdlib only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambda_src.host.runner_files import RunnerTamperedError, build_job_dir, fresh_job_dir, give_folder, installed_runner, manifest_path

log = logging.getLogger("runner_estate.host")


@dataclass(frozen=True)
class CheckedInstall:
    directory: Path
    record: dict[str, Any]  # what the tree was checked against, or recorded with after the download
    downloaded: bool  # the tree is not the one the host found


def checked_install(directory: Path, version: str, arch: str, sha256: str | None, fetch: Callable[[str], bytes]) -> CheckedInstall:
    """The runner install, checked against its record: on a baked image (lambda_src/host/bake.py
    put it there) nothing is downloaded; elsewhere, or if the image holds another version or an
    install that fails its check, the release is downloaded and checked against its checksum."""
    fetched: list[str] = []

    def counted(url: str) -> bytes:
        fetched.append(url)
        return fetch(url)

    record = installed_runner(directory, version, arch, sha256, counted)
    how = f"downloaded from {fetched[0]}" if fetched else "is the image's own: nothing downloaded"
    log.info("runner %s at %s %s", version, directory, how)
    return CheckedInstall(directory, record, bool(fetched))


def job_dir_from_record(pristine: Path, folder: Path, user: str | None, chown: Callable[[Path, str], None] = give_folder) -> dict[str, Any]:
    """runner_files.fresh_job_dir from the install's record alone, the tree not yet checked
    against it; returns the record as read. Its entries must be plain paths, each under a folder
    the record lists before it: whatever the record says, this writes inside `folder` only,
    under folders it made itself. Who wrote the record, and whether the tree matches it, is
    the check's to say (runner_files.verify_runner); a folder built from a record the check
    did not pass is never used."""
    record = json.loads(manifest_path(pristine).read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise RunnerTamperedError(f"{manifest_path(pristine)} is no install record")
    build_job_dir(pristine, folder, user, _plain_entries(record.get("entries")), chown)
    return record


def _plain_entries(entries: object) -> list[list[Any]]:
    """`entries` if they could be what runner_files records (["d", path, mode], ["f", path,
    mode, sha256], ["l", path, target], parents first), or RunnerTamperedError: no absolute
    path, no `..`, and nothing under anything but a folder listed before it (never a link)."""
    if not isinstance(entries, list):
        raise RunnerTamperedError("the install record lists no entries")
    folders = {""}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) in (3, 4) and all(isinstance(part, str) for part in entry[:2])):
            raise RunnerTamperedError(f"the install record holds a malformed entry {entry!r:.80}")
        kind, name = entry[0], entry[1]
        parts = name.split("/")
        if (
            kind not in ("d", "f", "l")
            or any(part in ("", ".", "..") for part in parts)  # also a leading, trailing or double slash
            or "/".join(parts[:-1]) not in folders
            or (kind == "d" and not isinstance(entry[2], int))
            or (kind == "l" and not isinstance(entry[2], str))
        ):
            raise RunnerTamperedError(f"the install record holds an entry no install has: {entry!r:.80}")
        if kind == "d":
            folders.add(name)
    return entries


def _early_folder(directory: Path, folder: Path, user: str | None) -> dict[str, Any] | None:
    """The first job's folder linked from the install's record; the record, or None where there
    is none to link from (a stock image) or it is no install's record."""
    try:
        return job_dir_from_record(directory, folder, user)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.info("the first job's folder waits for the checked install (%s)", exc)
        return None


class FirstJob:
    """The check and the link, started on `pool` at once. No config should be fetched before
    `checked_install()` has returned: a host whose install fails its check, with no checked
    download to mend it, takes no config. `folder_for_job()` gives the first job the early
    folder if the check found the very tree it was linked from (nothing downloaded, the checked
    record the one linked); otherwise, and for every later job, a folder built from the checked
    install, checked again first."""

    def __init__(
        self,
        pool: Executor,
        directory: Path,
        folder: Path,
        version: str,
        arch: str,
        sha256: str | None,
        user: str | None,
        fetch: Callable[[str], bytes],
    ):
        self.folder, self.user = folder, user
        self._check = pool.submit(checked_install, directory, version, arch, sha256, fetch)
        self._link = pool.submit(_early_folder, directory, folder, user)
        self._first = True

    def checked_install(self) -> CheckedInstall:
        """Waits for the check; a failed check that no checked download mended raises here."""
        return self._check.result()

    def folder_for_job(self) -> Path:
        install = self.checked_install()
        linked = self._link.result()  # also: nothing is still writing the folder
        first, self._first = self._first, False
        if first and not install.downloaded and linked is not None and linked == install.record:
            log.info("the first job's folder was linked while the install was checked")
            return self.folder
        return fresh_job_dir(install.directory, self.folder, self.user)
