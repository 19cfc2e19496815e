"""Who a job runs as on our hosts: the pure rules that the config loader, the user-data
renderer (estate/derive/host_user_data.py) and the host programs (lambda_src/host) share.

A job runs as an unprivileged user of its own: on a capacity-block node one per GPU slot
(`slot_user`), so no slot's job may enter another slot's folder, read its runner's
environment or end its processes. A user name reaches a root shell and root command lines:
its pattern is here, once, for the loader and the hosts.
"""

from __future__ import annotations

import re

# useradd's own rule (Debian's NAME_REGEX), at most 28 characters so a slot suffix "-s99" fits its 32.
USER_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,27}")


def slot_user(base: str, index: int) -> str:
    """The user slot `index` of a node runs its jobs as: `runner_run_as` plus the slot."""
    return f"{base}-s{index}"


def tidy_commands(user: str, home: str | None) -> list[list[str]]:
    """What a job leaves outside its folder, cleared before its host (or slot) takes the next
    config: its crontab, its files in the shared temporary folders and, where the user owns
    it, its home (a poisoned pip cache or git config must not meet the next job). Ending the
    user's processes comes first (`pkill`, repeated until none is left)."""
    commands = [
        ["crontab", "-r", "-u", user],
        ["find", "/tmp", "/var/tmp", "/dev/shm", "-xdev", "-mindepth", "1", "-user", user, "-delete"],  # noqa: S108 - clearing them
    ]
    return [*commands, ["find", home, "-xdev", "-mindepth", "1", "-delete"]] if home else commands
