"""Errors and warnings about configuration, each naming where the problem is."""

from __future__ import annotations

from dataclasses import dataclass


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
