"""The two schedule languages: idle_config cron (seconds first, five fields, time zones) and pool_config EventBridge schedules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lambda_src.core.cron import CronError, fired_within, fires, matches


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


# ---- pool_config: EventBridge schedule expressions ---------------------------------------


@pytest.mark.parametrize(
    ("expression", "when", "expected"),
    [
        ("cron(* 14-23 ? * MON-FRI *)", "2026-11-24T14:00:00", True),  # Tuesday
        ("cron(* 14-23 ? * MON-FRI *)", "2026-11-29T14:00:00", False),  # Sunday
        ("cron(0 8 ? * 1 *)", "2026-11-29T08:00:30", True),  # EventBridge counts Sunday as 1
        ("cron(0 8 ? * 2-6 *)", "2026-11-29T08:00:00", False),
        ("cron(0 8 ? * WED *)", "2026-11-25T08:00:00", True),
        ("cron(0 8 1 JAN ? 2027)", "2027-01-01T08:00:00", True),
        ("cron(0 8 1 JAN ? 2027)", "2028-01-01T08:00:00", False),
        ("cron(*/10 * ? * * *)", "2026-11-24T10:20:00", True),
        ("rate(5 minutes)", "2026-11-24T10:25:00", True),
        ("rate(5 minutes)", "2026-11-24T10:26:00", False),
        ("rate(1 hour)", "2026-11-24T10:00:00", True),
    ],
)
def test_schedule_fires(expression: str, when: str, expected: bool) -> None:
    assert fires(expression, at(when)) is expected


def test_a_fire_is_still_seen_a_minute_later() -> None:
    assert fired_within("cron(0 8 ? * * *)", at("2026-11-24T08:01:59"))
    assert not fired_within("cron(0 8 ? * * *)", at("2026-11-24T08:02:00"))


@pytest.mark.parametrize(
    "bad",
    ["0 8 * * *", "cron(0 8 * * ? )", "cron(0 8 * * 1 *)", "cron(0 8 ? * ? *)", "cron(0 8 L * ? *)", "cron(0 8 15W * ? *)",
     "cron(0 8 ? * 6#3 *)", "cron(0 8 ? * 5L *)", "rate(0 minutes)", "rate(2 weeks)", "rate(x minutes)", "cron(0 24 ? * * *)"],
)  # fmt: skip
def test_bad_schedules_are_refused(bad: str) -> None:
    with pytest.raises(CronError):
        fires(bad, at("2026-11-24T10:00:00"))
