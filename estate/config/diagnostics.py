"""Errors and warnings about configuration, each naming where the problem is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError


def _where(file: str, pool: str | None, key: str | None) -> str:
    parts = [file]
    if pool:
        parts.append(f"pool '{pool}'")
    if key:
        parts.append(key)
    return ": ".join(parts)


@dataclass(frozen=True)
class ConfigWarning:
    """Something accepted but worth knowing: a key not acted on yet, a security opt-out."""

    file: str
    pool: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        return f"{_where(self.file, self.pool, self.key)}: {self.message}"


class ConfigError(Exception):
    """Configuration that cannot be used; one line naming file, pool and key."""

    def __init__(self, file: str, pool: str | None, key: str | None, message: str) -> None:
        self.file, self.pool, self.key, self.message = file, pool, key, message
        super().__init__(f"{_where(file, pool, key)}: {message}")


def key_path(loc: Iterable[int | str]) -> str:
    """`("runner_config", "instance_types", 2)` -> `runner_config.instance_types[2]`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """The first validation problem as (key path, one-line message)."""
    error = exc.errors()[0]
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return key_path(error["loc"]), message
