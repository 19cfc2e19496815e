"""idle_config windows: upstream's six-field cron (seconds first), five fields, time zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lambda_src.cron import CronError, matches


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "when", "expected"),
    [
        ("* * 9-17 * * 1-5", "2026-11-24T10:30:00", True),  # Tuesday, office hours
        ("* * 9-17 * * 1-5", "2026-11-24T18:00:00", False),
        ("* * 9-17 * * mon-fri", "2026-11-29T10:00:00", False),  # Sunday
        ("*/15 * * * *", "2026-11-24T10:45:00", True),
        ("*/15 * * * *", "2026-11-24T10:46:00", False),
        ("0 0 * * 0,7", "2026-11-29T00:00:00", True),
        ("* * 1 jan *", "2027-01-01T05:00:00", True),
    ],
)
def test_matches(expression: str, when: str, expected: bool) -> None:
    assert matches(expression, at(when)) is expected


def test_time_zone_shifts_the_window() -> None:
    # 08:30 UTC is 09:30 in Berlin in winter.
    assert matches("* * 9-17 * * *", at("2026-11-24T08:30:00"), "Europe/Berlin")
    assert not matches("* * 9-17 * * *", at("2026-11-24T08:30:00"), "UTC")


@pytest.mark.parametrize("bad", ["* * *", "61 * * * *", "* * * * * * *", "a * * * *", "*/x * * * *"])
def test_bad_expressions_are_refused(bad: str) -> None:
    with pytest.raises(CronError):
        matches(bad, at("2026-11-24T10:00:00"))
