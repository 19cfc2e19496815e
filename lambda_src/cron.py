"""Cron matching for `idle_config` windows, as terraform-aws-github-runner writes them.

Upstream evaluates these with the cron-parser package: six fields with seconds first
(`* * 9-17 * * 1-5`), five-field expressions are accepted too. A window is active during
every minute its expression matches. Pure and stdlib-only; time zones via zoneinfo.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

_NAMES = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
    "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
}  # fmt: skip
# (low, high) per field: minute, hour, day of month, month, day of week (0 and 7 are Sunday).
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


class CronError(ValueError):
    pass


def _value(text: str, field: str) -> int:
    word = text.lower()
    if word in _NAMES:
        return _NAMES[word]
    if not word.isdigit():
        raise CronError(f"{text!r} is not a number or a month/day name in cron field {field!r}")
    return int(word)


def _field(text: str, low: int, high: int) -> frozenset[int]:
    found: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 1
        if step_text and not step_text.isdigit():
            raise CronError(f"bad step {step_text!r} in cron field {text!r}")
        if base in {"*", "?"}:
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, text), _value(last, text)
        else:
            start = _value(base, text)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise CronError(f"{part!r} is outside {low}-{high} in cron field {text!r}")
        found.update(range(start, end + 1, step))
    return frozenset(found)


@lru_cache(maxsize=256)
def parse(expression: str) -> tuple[frozenset[int], ...]:
    fields = expression.split()
    if len(fields) == 6:
        fields = fields[1:]  # seconds: windows are evaluated per minute
    if len(fields) != 5:
        raise CronError(f"cron expression {expression!r} needs 5 or 6 fields, has {len(fields)}")
    parsed = tuple(_field(text, low, high) for text, (low, high) in zip(fields, _BOUNDS, strict=True))
    minute, hour, dom, month, dow = parsed
    return minute, hour, dom, month, frozenset(d % 7 for d in dow)


def matches(expression: str, when: datetime, time_zone: str = "UTC") -> bool:
    """Whether `when` (aware) falls in a minute the expression selects, in `time_zone`."""
    minute, hour, dom, month, dow = parse(expression)
    local = when.astimezone(ZoneInfo(time_zone))
    weekday = (local.weekday() + 1) % 7  # cron counts Sunday as 0
    return local.minute in minute and local.hour in hour and local.day in dom and local.month in month and weekday in dow
