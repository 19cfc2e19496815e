"""The users jobs run as on a host, handled by the host program (root): what a job leaves
behind is cleared before the next config is fetched. Stdlib only; every command goes through
an injectable runner so tests can read the argv."""

from __future__ import annotations

import logging
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lambda_src.core.job_isolation import tidy_commands
from lambda_src.host.runner_files import remove_job_dir

log = logging.getLogger("runner_estate.host")
Run = Callable[[list[str]], int]  # argv -> exit status
PKILL_ROUNDS = 50


class HostSetupError(RuntimeError):
    """The host cannot keep jobs apart as it must; it starts no (further) runner."""


def run_command(argv: list[str]) -> int:
    return subprocess.run(argv, check=False, timeout=300).returncode  # noqa: S603 - fixed argv, no shell


def clearable_home(user: str, lookup: Callable[[str], pwd.struct_passwd] = pwd.getpwnam) -> str | None:
    """The user's home, only if it is the user's own folder: never a system folder a system
    account points at (/usr/sbin, /)."""
    try:
        account = lookup(user)
        return account.pw_dir if Path(account.pw_dir).lstat().st_uid == account.pw_uid != 0 else None
    except (KeyError, OSError):
        return None


def tidy_after_job(
    user: str,
    folder: Path,
    run: Run = run_command,
    home_of: Callable[[str], str | None] = clearable_home,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """End every process of the job's user, clear what it left, remove the job's folder."""
    for _ in range(PKILL_ROUNDS):
        status = run(["pkill", "-KILL", "-u", user])
        if status == 1:  # no process left
            break
        if status != 0:
            raise HostSetupError(f"pkill -u {user} failed with {status}")
        sleep(0.1)
    else:
        raise HostSetupError(f"processes of {user} outlive {PKILL_ROUNDS} rounds of pkill; no further job starts here")
    for argv in tidy_commands(user, home_of(user)):
        if run(argv) != 0:
            log.warning("%s did not finish cleanly", " ".join(argv))
    remove_job_dir(folder)
