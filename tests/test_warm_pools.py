"""The warm-pool decisions (lambda_src/core/warm_pools.py): sizes from the pool's own demand
history, the EBS budget, what is retired and what a launch starts."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.config.pool import Pool
from estate.derive.control_config import pool_settings
from lambda_src.core.settings import PoolSettings
from lambda_src.core.warm_pools import (
    DEMAND_BUCKET_S,
    OFF,
    SCHEDULED,
    WEEK_S,
    WarmInstance,
    WarmSettings,
    WarmWindow,
    demand_bucket,
    held_size,
    history_buckets,
    launch_size,
    percentile,
    pick_warm,
    plan_warm_pool,
    prepare_deadline_s,
    target_size,
    warm_launch_token,
    weekly_samples,
    within_budget,
)
from tests.conftest import MINIMAL_POOL, write_pool

NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC).timestamp()  # a Monday, 14:00 UTC


def history(per_week: list[int], at: float = NOW) -> dict[int, int]:
    """Launches in the first bucket of the same Monday 14:00 window, `per_week[k-1]` k weeks ago."""
    return {demand_bucket(at - k * WEEK_S): n for k, n in enumerate(per_week, 1) if n}


def test_a_pool_that_launched_at_this_hour_on_past_mondays_keeps_that_many_warm() -> None:
    settings = WarmSettings(maximum=10, percentile=0.9, weeks=4)
    assert target_size(settings, history([3, 5, 4, 2]), NOW) == 5


def test_launches_at_other_hours_or_weekdays_do_not_count() -> None:
    tuesday = {demand_bucket(NOW - WEEK_S + 24 * 3600): 9, demand_bucket(NOW - WEEK_S - 3 * 3600): 9}
    assert target_size(WarmSettings(), tuesday, NOW) == 0


def test_the_window_spans_the_lookahead() -> None:
    later_in_window = {demand_bucket(NOW - WEEK_S) + 1: 2, demand_bucket(NOW - WEEK_S) + 2: 1}
    assert weekly_samples(later_in_window, NOW, lookahead_s=3 * DEMAND_BUCKET_S, weeks=1) == [3]
    assert weekly_samples(later_in_window, NOW, lookahead_s=DEMAND_BUCKET_S, weeks=1) == [0]


def test_a_new_pool_with_no_history_keeps_none_warm() -> None:
    assert target_size(WarmSettings(), {}, NOW) == 0


def test_the_size_is_bounded_by_the_pools_maximum() -> None:
    assert target_size(WarmSettings(maximum=2), history([8, 8, 8, 8]), NOW) == 2


def test_one_busy_week_in_four_does_not_set_the_size_at_a_lower_percentile() -> None:
    assert target_size(WarmSettings(percentile=0.5, maximum=50), history([40, 1, 1, 1]), NOW) == 1
    assert target_size(WarmSettings(percentile=1.0, maximum=50), history([40, 1, 1, 1]), NOW) == 40


def test_nearest_rank_percentile() -> None:
    assert percentile([1, 2, 3, 4], 0.9) == 4
    assert percentile([1, 2, 3, 4], 0.5) == 2
    assert percentile([], 0.9) == 0


def test_scheduled_sizes_hold_while_their_cron_matches() -> None:
    weekdays = WarmSettings(mode=SCHEDULED, maximum=5, windows=(WarmWindow("* 8-17 * * MON-FRI", "UTC", 3),))
    assert target_size(weekdays, {}, NOW) == 3
    assert target_size(weekdays, {}, NOW + 5 * 3600) == 0  # 19:00


def test_off_keeps_none_whatever_the_demand() -> None:
    assert target_size(WarmSettings(mode=OFF), history([9, 9, 9, 9]), NOW) == 0


def test_the_ebs_budget_trims_the_pool_holding_the_most_first() -> None:
    trimmed = within_budget({"gpu": 4, "cpu": 4}, {"gpu": 200.0, "cpu": 30.0}, budget_gib=500.0)
    assert trimmed == {"gpu": 1, "cpu": 4}  # 200 + 120 <= 500 after three GPU instances go
    assert within_budget({"gpu": 4}, {"gpu": 200.0}, None) == {"gpu": 4}


def warm(iid: str, launched_at: float, image: str = "ami-new", ready: bool = True, pool: str = "cpu") -> WarmInstance:
    return WarmInstance(iid, pool, launched_at, image, ready)


def test_superseded_and_aged_instances_are_retired_and_replaced() -> None:
    settings = WarmSettings(max_age_s=3600)
    plan = plan_warm_pool(
        "cpu", settings, [warm("i-old-image", NOW - 60, "ami-old"), warm("i-aged", NOW - 7200), warm("i-ok", NOW - 60)], 3, "ami-new", NOW
    )
    assert set(plan.retire) == {"i-old-image", "i-aged"}
    assert plan.launch == 2


def test_beyond_the_target_the_oldest_go() -> None:
    plan = plan_warm_pool(
        "cpu", WarmSettings(), [warm("i-a", NOW - 300), warm("i-b", NOW - 200), warm("i-c", NOW - 100)], 1, "ami-new", NOW
    )
    assert plan.retire == ("i-a", "i-b")
    assert plan.launch == 0


def test_an_instance_still_preparing_past_its_deadline_failed_its_boot_and_is_replaced() -> None:
    deadline = prepare_deadline_s(600)
    pool = [
        warm("i-late", NOW - deadline - 1, ready=False),
        warm("i-booting", NOW - deadline + 1, ready=False),
        warm("i-old-ready", NOW - 7200),
    ]
    plan = plan_warm_pool("cpu", WarmSettings(), pool, 3, "ami-new", NOW, boot_timeout_s=600)
    assert (plan.retire, plan.failed_boots, plan.launch) == (("i-late",), ("i-late",), 1)
    assert plan_warm_pool("cpu", WarmSettings(), pool, 3, "ami-new", NOW).retire == ()  # the simulator's hosts never fail a boot


def test_another_pools_warm_instances_are_not_this_pools() -> None:
    plan = plan_warm_pool("cpu", WarmSettings(), [warm("i-gpu", NOW - 60, pool="gpu")], 1, "ami-new", NOW)
    assert (plan.retire, plan.launch) == ((), 1)


def test_a_launch_starts_ready_instances_of_the_newest_image_oldest_first() -> None:
    pool = [
        warm("i-new", NOW - 10),
        warm("i-older", NOW - 500),
        warm("i-booting", NOW - 900, ready=False),
        warm("i-stale", NOW - 999, "ami-old"),
    ]
    assert pick_warm(pool, "cpu", 5, "ami-new") == ["i-older", "i-new"]
    assert pick_warm(pool, "cpu", 1, "ami-new") == ["i-older"]
    assert pick_warm(pool, "gpu", 1, "ami-new") == []


# ---- a pool file's `estate.warm_pool` ---------------------------------------------------------


def load_one(tmp_path: Path, extra: str = "") -> Pool:
    write_pool(tmp_path, "cpu", MINIMAL_POOL + extra)
    (pool,) = load_estate([str(tmp_path)]).pools
    return pool


ON_DEMAND = "  instance_target_capacity_type: on-demand\n"


def test_an_upstream_on_demand_pool_file_gets_an_adaptive_warm_pool_of_its_baked_image(tmp_path: Path) -> None:
    warm = load_one(tmp_path, ON_DEMAND).warm_settings
    assert (warm.mode, warm.maximum, warm.weeks) == ("adaptive", 4, 4)
    assert warm.volume_gib == 30.0  # the default root volume


def test_an_upstream_spot_pool_keeps_none_warm_unless_asked_and_is_then_told_the_price(tmp_path: Path) -> None:
    """A warm instance is on-demand: in a spot pool each warm start runs its job at on-demand price."""
    assert load_one(tmp_path).warm_settings.mode == "off"
    write_pool(tmp_path, "cpu", MINIMAL_POOL + "estate:\n  warm_pool: {mode: adaptive}\n")
    estate = load_estate([str(tmp_path)])
    assert estate.pools[0].warm_settings.mode == "adaptive"
    (warning,) = [w for w in estate.warnings if w.key == "estate.warm_pool"]
    assert "on-demand price" in warning.message


def test_a_stock_image_pool_keeps_none_warm(tmp_path: Path) -> None:
    assert load_one(tmp_path, "estate:\n  image:\n    source: ami\n").warm_settings.mode == "off"


def test_a_warm_pool_on_a_stock_image_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"estate\.warm_pool.*baked image"):
        load_one(tmp_path, "estate:\n  image:\n    source: ami\n  warm_pool:\n    mode: adaptive\n")


def test_a_scheduled_warm_pool_needs_windows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode scheduled needs windows"):
        load_one(tmp_path, "estate:\n  warm_pool:\n    mode: scheduled\n")


def test_scheduled_windows_reach_the_control_plane_settings_and_survive_its_json(tmp_path: Path) -> None:
    pool = load_one(
        tmp_path,
        "estate:\n  warm_pool:\n    mode: scheduled\n    maximum: 6\n    windows:\n      - {cron: '* 8-17 * * MON-FRI', size: 2}\n",
    )
    settings = pool_settings(pool)
    assert settings.warm.windows == (WarmWindow("* 8-17 * * MON-FRI", "UTC", 2),)
    again = PoolSettings.from_dict(json.loads(json.dumps(asdict(settings))))
    assert again.warm == settings.warm


def test_an_instance_the_target_wants_again_within_the_hold_is_kept_not_relaunched() -> None:
    # Demand at 14:30 on past Mondays: at 14:00 the 10-minute target is 0, the hold sees 3.
    launches = {demand_bucket(NOW + 1800 - k * WEEK_S): 3 for k in range(1, 5)}
    settings = WarmSettings(maximum=10)
    assert target_size(settings, launches, NOW) == 0
    assert held_size(settings, launches, NOW) == 3
    pool = [warm("i-a", NOW - 300), warm("i-b", NOW - 200), warm("i-c", NOW - 100), warm("i-d", NOW - 50)]
    plan = plan_warm_pool("cpu", settings, pool, 0, "ami-new", NOW, keep=held_size(settings, launches, NOW))
    assert (plan.launch, plan.retire) == (0, ("i-a",))


def test_the_history_read_covers_every_bucket_the_sizes_look_at() -> None:
    settings = WarmSettings(weeks=2, lookahead_s=600, hold_s=900)
    buckets = history_buckets(settings, NOW)
    everything = {b: 1 for b in range(demand_bucket(NOW - 3 * WEEK_S), demand_bucket(NOW))}
    only_read = {b: 1 for b in buckets}
    for step in range(0, settings.hold_s + 1, DEMAND_BUCKET_S):
        assert target_size(settings, only_read, NOW + step) == target_size(settings, everything, NOW + step)
    assert held_size(settings, only_read, NOW) == held_size(settings, everything, NOW)
    assert history_buckets(WarmSettings(mode=OFF), NOW) == []


def test_a_launch_is_sized_for_when_it_will_be_ready_so_a_rushs_end_launches_nothing() -> None:
    # Past Mondays launched 4 in the bucket just before 14:00 and nothing after it.
    before = {demand_bucket(NOW - 60 - k * WEEK_S): 4 for k in range(1, 5)}
    settings = WarmSettings(maximum=10, ready_s=300)
    assert target_size(settings, before, NOW - 60) == 4  # the rush is still in this minute's window
    assert launch_size(settings, before, NOW - 60) == 0  # but it is over before a launch could serve it
    # Ahead of a rush the launch leads it by the time an instance takes to be ready.
    ahead = {demand_bucket(NOW + 600 - k * WEEK_S): 2 for k in range(1, 5)}
    assert (target_size(settings, ahead, NOW), launch_size(settings, ahead, NOW)) == (0, 2)
    assert held_size(settings, ahead, NOW) >= launch_size(settings, ahead, NOW)  # what it launches, it keeps


def test_a_warm_launch_token_repeats_only_for_the_same_launch() -> None:
    pool = [warm("i-a", NOW - 300), warm("i-b", NOW - 200)]
    token = warm_launch_token("cpu", pool, 2, NOW)
    assert token == warm_launch_token("cpu", list(reversed(pool)), 2, NOW + 30)  # a retry within the minute
    assert len(token) <= 60  # room for the per-type suffix in a 64-character ClientToken
    others = [
        warm_launch_token("cpu", pool, 1, NOW),
        warm_launch_token("cpu", pool[:1], 2, NOW),
        warm_launch_token("gpu", pool, 2, NOW),
        warm_launch_token("cpu", pool, 2, NOW + 60),
    ]
    assert token not in others
    assert len(set(others)) == len(others)
