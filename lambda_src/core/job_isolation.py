"""Who a job runs as on our hosts: the pure rules that the config loader, the user-data
renderer (estate/derive/host_user_data.py) and the host programs (lambda_src/host) share.

Names that reach a root shell or a root command line are held to a strict pattern here, once,
for all three.
"""

from __future__ import annotations

import re

# useradd's own rule (Debian's NAME_REGEX), at most 28 characters so a slot suffix "-s99" fits its 32.
USER_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,27}")
GROUP_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def check_user_name(name: str) -> str:
    """`name` if it is a plain, unprivileged user name; ValueError otherwise."""
    if not USER_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a user name: 1-28 of a-z, 0-9, _ and -, starting with a letter or _")
    if name == "root":
        raise ValueError("jobs never run as root: name an unprivileged user (estate.allow_job_sudo gives it sudo, explicitly)")
    return name


def check_group_name(name: str) -> str:
    if not GROUP_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a group name: 1-32 of a-z, 0-9, _ and -, starting with a letter or _")
    return name


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
