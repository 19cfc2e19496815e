"""The two schedule languages terraform-aws-github-runner's configs are written in.

- `idle_config` windows: upstream evaluates them with the cron-parser package: six fields
  with seconds first (`* * 9-17 * * 1-5`); five-field expressions are accepted too. A window
  is active during every minute its expression matches (`matches`).
- `pool_config` schedules: EventBridge schedule expressions, `cron(minutes hours
  day-of-month month day-of-week year)` (day-of-week 1-7 is Sunday-Saturday; one of the two
  day fields must be `?`) or `rate(N minutes|hours|days)` (`fires`).

Pure and stdlib-only; time zones via zoneinfo.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
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


_EVENTBRIDGE_DAYS = {"sun": 1, "mon": 2, "tue": 3, "wed": 4, "thu": 5, "fri": 6, "sat": 7}
# (low, high) per EventBridge field: minutes, hours, day of month, month, day of week, year.
_EVENTBRIDGE_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (1, 7), (1970, 2199))
_RATE_UNITS = {"minute": 1, "minutes": 1, "hour": 60, "hours": 60, "day": 1440, "days": 1440}


def _value(text: str, field: str, names: Mapping[str, int] = _NAMES) -> int:
    word = text.lower()
    if word in names:
        return names[word]
    if not word.isdigit():
        raise CronError(f"{text!r} is not a number or a month/day name in cron field {field!r}")
    return int(word)


def _field(text: str, low: int, high: int, names: Mapping[str, int] = _NAMES) -> frozenset[int]:
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
            start, end = _value(first, text, names), _value(last, text, names)
        else:
            start = _value(base, text, names)
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


@lru_cache(maxsize=256)
def parse_schedule(expression: str) -> int | tuple[frozenset[int], ...]:
    """An EventBridge schedule expression: minutes between fires for `rate(...)`, the six
    fields' values for `cron(...)`. L, W and # are refused rather than misread."""
    text = expression.strip()
    if text.startswith("rate(") and text.endswith(")"):
        amount, _, unit = text[5:-1].strip().partition(" ")
        if not amount.isdigit() or int(amount) < 1 or unit.strip().lower() not in _RATE_UNITS:
            raise CronError(f"{expression!r}: a rate is `rate(N minutes|hours|days)` with N a positive whole number")
        return int(amount) * _RATE_UNITS[unit.strip().lower()]
    if not (text.startswith("cron(") and text.endswith(")")):
        raise CronError(f"{expression!r} is neither cron(...) nor rate(...)")
    fields = text[5:-1].split()
    if len(fields) != 6:
        raise CronError(f"{expression!r}: cron(...) needs 6 fields (minutes hours day-of-month month day-of-week year), has {len(fields)}")
    dom, dow = fields[2].upper(), fields[4].upper()
    if any(mark in dom for mark in "LW#") or any(mark in dow for mark in "L#"):  # day names hold W (WED), none holds L
        raise CronError(f"{expression!r}: L, W and # are not supported")
    if [fields[2], fields[4]].count("?") != 1:
        raise CronError(f"{expression!r}: exactly one of day-of-month and day-of-week must be `?`")
    return tuple(
        _field(field, low, high, _EVENTBRIDGE_DAYS if i == 4 else _NAMES)
        for i, (field, (low, high)) in enumerate(zip(fields, _EVENTBRIDGE_BOUNDS, strict=True))
    )


def fires(expression: str, when: datetime, time_zone: str = "UTC") -> bool:
    """Whether the schedule fires within the minute of `when` (aware). A rate is counted from
    the epoch: EventBridge counts from when the rule was made, which no config records."""
    parsed = parse_schedule(expression)
    if isinstance(parsed, int):
        return int(when.timestamp() // 60) % parsed == 0
    minute, hour, dom, month, dow, year = parsed
    local = when.astimezone(ZoneInfo(time_zone))
    weekday = (local.weekday() + 1) % 7 + 1  # EventBridge counts Sunday as 1
    return (
        local.minute in minute
        and local.hour in hour
        and local.day in dom
        and local.month in month
        and weekday in dow
        and local.year in year
    )


def fired_within(expression: str, when: datetime, time_zone: str = "UTC", minutes: int = 2) -> bool:
    """Whether the schedule fired in the minute of `when` or the `minutes - 1` before it: a
    reconcile that runs late or skips a minute still sees the fire."""
    return any(fires(expression, when - timedelta(minutes=back), time_zone) for back in range(minutes))
