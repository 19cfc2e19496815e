"""The pure planners: how many hosts to launch, which hosts and runners to retire."""

from __future__ import annotations

import time

from lambda_src.core.fleet_state import COMPLETED, IN_PROGRESS, QUEUED, GithubRunner, Instance, Job, instance_id_of, runner_name
from lambda_src.core.planner import (
    IDLE_CONFIRM_S,
    REUSE_WINDOW_S,
    ScaleDownPlan,
    least_recently_done,
    plan_host_sync,
    plan_launches,
    plan_reuse,
    plan_scale_down,
)
from lambda_src.core.settings import IdleWindow, PoolSettings, PoolWindow
from lambda_src.functions.control_plane import Report

NOW = 1_800_000_000.0
ENV = "prod"


def pool(name: str = "gpu", max_instances: int = 10, **kw: object) -> PoolSettings:
    return PoolSettings(
        name=name, capacity_type="spot", instance_types=("g4dn.xlarge",), labels=("self-hosted", "gpu"), runner_group="Default",
        max_instances=max_instances, minimum_running_s=300, boot_timeout_s=300, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def jobs(n: int, pool_name: str = "gpu", state: str = QUEUED) -> list[Job]:
    return [Job(i, pool_name, state, NOW) for i in range(n)]


def host(iid: str, pool_name: str = "gpu", age: float = 60, **kw: object) -> Instance:
    return Instance(iid, pool_name, NOW - age, **kw)  # type: ignore[arg-type]


def one(pools: dict[str, PoolSettings], js: list[Job], hosts: list[Instance], now: float = NOW) -> int:
    (order,) = plan_launches(pools, js, hosts, now)
    return order.count


# ---- scale-up ---------------------------------------------------------------------------


def test_launches_one_host_per_queued_job() -> None:
    assert one({"gpu": pool()}, jobs(3), []) == 3


def test_unassigned_booting_and_idle_hosts_cover_queued_jobs() -> None:
    hosts = [host("i-0000000a"), host("i-0000000b", registered_at=NOW - 10)]
    assert one({"gpu": pool()}, jobs(3), hosts) == 1


def test_a_host_whose_runner_took_a_job_is_not_supply() -> None:
    assert one({"gpu": pool()}, jobs(1), [host("i-0000000a", job_id=99)]) == 1


def test_jobs_no_longer_queued_need_nothing() -> None:
    assert one({"gpu": pool()}, jobs(2, state=IN_PROGRESS) + jobs(2, state=COMPLETED), []) == 0


def test_a_duplicate_delivery_is_absorbed_by_the_booting_host() -> None:
    # The same job seen twice is one ledger row; its host is already booting.
    assert one({"gpu": pool()}, jobs(1), [host("i-0000000a", age=5)]) == 0


def test_capped_by_max_instances_counting_busy_hosts() -> None:
    busy = [host(f"i-{i:08x}", job_id=i) for i in range(8)]
    (order,) = plan_launches({"gpu": pool(max_instances=10)}, jobs(5), busy, NOW)
    assert (order.count, order.room) == (2, 2)
    assert "capped" in order.reason


def test_a_host_that_never_registered_in_time_stops_counting_as_supply() -> None:
    stuck = host("i-0000000a", age=301)
    assert one({"gpu": pool()}, jobs(1), [stuck]) == 1


def test_idle_config_alone_creates_no_runner() -> None:
    # Upstream's idle_config keeps runners from scale-down; creating them is pool_config's job.
    every_minute = IdleWindow("* * * * * *", "UTC", 2, "oldest_first")
    assert one({"gpu": pool(idle_windows=(every_minute,))}, [], []) == 0


def test_pool_config_tops_up_unassigned_runners_when_its_schedule_fires() -> None:
    every_minute = PoolWindow("cron(* * ? * * *)", "UTC", 3)
    (order,) = plan_launches({"gpu": pool(pool_windows=(every_minute,))}, jobs(1), [host("i-0000000a")], NOW)
    assert (order.count, order.top_up, order.supply) == (3, 3, 1)  # 1 queued + 3 pooled - 1 booting
    assert order.reason == "launch for queued jobs"


def test_pool_config_top_up_is_idempotent() -> None:
    every_minute = PoolWindow("rate(1 minute)", "UTC", 2)
    pooled = [host("i-0000000a"), host("i-0000000b", registered_at=NOW - 30)]
    assert one({"gpu": pool(pool_windows=(every_minute,))}, [], pooled) == 0


def test_pool_config_fire_is_seen_by_a_cycle_a_minute_late_only() -> None:
    at_eight = PoolWindow("cron(0 8 ? * * *)", "UTC", 1)  # NOW is 08:00:00 UTC
    pools = {"gpu": pool(pool_windows=(at_eight,))}
    assert [one(pools, [], [], NOW + late) for late in (0, 59, 60, 119, 120)] == [1, 1, 1, 1, 0]
    assert one(pools, [], [], NOW - 1) == 0


def test_pool_config_schedules_use_their_time_zone() -> None:
    eight_in_berlin = PoolWindow("cron(0 8 ? * * *)", "Europe/Berlin", 1)  # 07:00 UTC in winter
    pools = {"gpu": pool(pool_windows=(eight_in_berlin,))}
    assert (one(pools, [], [], NOW), one(pools, [], [], NOW - 3600)) == (0, 1)


def test_only_restricts_the_pools_planned() -> None:
    pools = {"a": pool("a"), "b": pool("b")}
    orders = plan_launches(pools, jobs(1, "a") + jobs(1, "b"), [], NOW, only=["b"])
    assert [(o.pool, o.count) for o in orders] == [("b", 1)]


def test_ten_thousand_jobs_over_fifty_pools_is_fast_enough_to_run_per_event() -> None:
    pools = {f"p{i}": pool(f"p{i}", max_instances=1000) for i in range(50)}
    many = [Job(i, f"p{i % 50}", QUEUED, NOW) for i in range(10_000)]
    started = time.perf_counter()
    orders = plan_launches(pools, many, [], NOW)
    assert sum(o.count for o in orders) == 10_000
    assert time.perf_counter() - started < 2.0  # a sanity bound; bench/ measures the real figure


# ---- scale-down -------------------------------------------------------------------------


def runner(iid: str, rid: int, online: bool = True, busy: bool = False, pool_name: str = "gpu") -> GithubRunner:
    return GithubRunner(rid, runner_name("", ENV, pool_name, iid), online, busy)


def down(
    hosts: list[Instance], runners: list[GithubRunner], queued: list[Job] | None = None, idle_windows: tuple[IdleWindow, ...] = ()
) -> ScaleDownPlan:
    return plan_scale_down({"gpu": pool(idle_windows=idle_windows)}, ENV, hosts, runners, queued or [], NOW)


def test_first_idle_sighting_only_marks_the_runner() -> None:
    plan = down([host("i-0000000a", age=900, registered_at=NOW - 800)], [runner("i-0000000a", 1)])
    assert plan.first_idle == ["i-0000000a"]
    assert plan.retire == []


def test_idle_on_two_listings_a_minute_apart_and_past_minimum_time_is_retired() -> None:
    h = host("i-0000000a", age=900, registered_at=NOW - 800, idle_since=NOW - IDLE_CONFIRM_S)
    plan = down([h], [runner("i-0000000a", 1)])
    assert [(r.instance_id, r.runner_id) for r in plan.retire] == [("i-0000000a", 1)]


def test_idle_seen_twice_within_a_minute_is_kept() -> None:
    h = host("i-0000000a", age=900, registered_at=NOW - 800, idle_since=NOW - 30)
    assert down([h], [runner("i-0000000a", 1)]).retire == []


def test_idle_but_younger_than_minimum_running_time_is_kept() -> None:
    h = host("i-0000000a", age=200, registered_at=NOW - 150, idle_since=NOW - 120)
    assert down([h], [runner("i-0000000a", 1)]).retire == []


def test_a_busy_runner_is_never_retired_and_loses_its_idle_mark() -> None:
    h = host("i-0000000a", age=9000, registered_at=NOW - 8000, idle_since=NOW - 5000)
    plan = down([h], [runner("i-0000000a", 1, busy=True)])
    assert plan.retire == []
    assert plan.not_idle == ["i-0000000a"]


def test_an_ephemeral_runner_that_took_its_job_is_left_to_exit() -> None:
    # GitHub's busy flag still reads false, but the in_progress webhook assigned it a job.
    h = host("i-0000000a", age=9000, registered_at=NOW - 8000, idle_since=NOW - 5000, job_id=7)
    assert down([h], [runner("i-0000000a", 1, busy=False)]).retire == []


def test_warm_floor_and_waiting_jobs_keep_idle_runners() -> None:
    window = IdleWindow("* * * * *", "UTC", 1, "oldest_first")
    hosts = [host(f"i-{i:08x}", age=900 + i, registered_at=NOW - 800, idle_since=NOW - 120) for i in range(4)]
    runners = [runner(f"i-{i:08x}", i) for i in range(4)]
    plan = down(hosts, runners, queued=jobs(1), idle_windows=(window,))
    retired = sorted(r.instance_id or "" for r in plan.retire)
    assert len(retired) == 2  # 4 idle - 1 warm - 1 queued job
    assert retired == ["i-00000002", "i-00000003"]  # oldest first


def test_orphan_host_whose_runner_never_registered_is_terminated() -> None:
    plan = down([host("i-0000000a", age=301)], [])
    assert [(r.instance_id, r.runner_id) for r in plan.retire] == [("i-0000000a", None)]
    assert "never registered" in plan.retire[0].reason


def test_a_host_whose_job_runs_is_never_retired_whatever_one_listing_says() -> None:
    """A paged listing shifts while ephemeral runners are deleted: a busy runner can fall
    between pages, or read offline. The ledger's in_progress says the job runs: hands off."""
    h = host("i-0000000a", age=9000, registered_at=NOW - 8000, job_id=7)
    assert down([h], []).retire == []
    assert down([h], [runner("i-0000000a", 1, online=False)]).retire == []


def test_absence_from_one_listing_is_only_a_suspicion_the_shell_confirms() -> None:
    h = host("i-0000000a", age=9000, registered_at=NOW - 8000)
    (retire,) = down([h], []).retire
    assert retire.confirm_absence == runner("i-0000000a", 1).name
    (listed_offline,) = down([h], [runner("i-0000000a", 1, online=False)]).retire
    assert listed_offline.confirm_absence is None  # GitHub said offline: no doubt to clear


def test_booting_host_is_left_alone() -> None:
    assert down([host("i-0000000a", age=100)], [runner("i-0000000a", 1, online=False)]).retire == []


def test_ghost_runner_without_a_host_is_deleted_but_others_runners_are_not() -> None:
    ghost = runner("i-0000000f", 5, online=False)
    strangers = [
        GithubRunner(6, "laptop-of-someone", True, False),
        GithubRunner(7, runner_name("", "staging", "gpu", "i-0000000e"), False, False),
    ]
    plan = down([], [ghost, *strangers])
    assert [(r.instance_id, r.runner_id) for r in plan.retire] == [(None, 5)]
    assert plan.retire[0].reason.startswith("ghost")


def test_a_busy_ghost_is_left_for_github_to_finish() -> None:
    assert down([], [runner("i-0000000f", 5, busy=True)]).retire == []


def test_hourly_budget_caps_launches_before_the_instance_cap() -> None:
    priced = PoolSettings(
        name="gpu", capacity_type="spot", instance_types=("g5.2xlarge",), labels=("self-hosted",), runner_group="Default",
        max_instances=50, max_hourly_usd=5.0, host_hourly_usd=1.21,
    )  # fmt: skip
    (order,) = plan_launches({"gpu": priced}, jobs(10), [host("i-0000000a", job_id=1)], NOW)
    assert order.count == 3  # 4 hosts fit in $5/hour at $1.21 each; one is already running
    assert order.reason == "capped at $5/hour"


def test_a_cycle_summary_names_the_pools_held_back_by_a_cap() -> None:
    report = Report()
    (report.orders["gpu"],) = plan_launches({"gpu": pool(max_instances=1)}, jobs(3), [], NOW)
    (report.orders["other"],) = plan_launches({"other": pool("other")}, jobs(1, "other"), [], NOW)
    assert report.summary()["capped"] == {"gpu": "capped at 1 instances"}


def test_host_sync_finishes_or_undoes_half_done_launches() -> None:
    known = {
        "i-0000000a": host("i-0000000a", age=30),  # just launched, EC2's listing lags: keep
        "i-0000000b": host("i-0000000b", age=600, jit_at=NOW - 590),  # fine
        "i-0000000c": host("i-0000000c", age=600),  # never got its runner config: undo
        "i-0000000d": host("i-0000000d", age=600, jit_at=NOW - 590),  # EC2 no longer lists it: gone
    }
    listed = {
        "i-0000000b": ("gpu", NOW - 600),
        "i-0000000c": ("gpu", NOW - 600),
        "i-0000000e": ("gpu", NOW - 30),  # launched, never recorded, young: adopt
        "i-0000000f": ("gpu", NOW - 900),  # the same, too old to finish: undo
        "i-00000010": ("someone-elses", NOW - 30),
    }
    plan = plan_host_sync({"gpu": pool()}, known, listed, NOW)
    assert (plan.adopt, plan.terminate_unknown, plan.undo, plan.gone) == (["i-0000000e"], ["i-0000000f"], ["i-0000000c"], ["i-0000000d"])
    assert plan.live == ["i-0000000a", "i-0000000b"]


def test_least_recently_done_goes_round_whatever_the_names_and_failures() -> None:
    done: dict[str, float | None] = {f"repo-{i:02d}": None for i in range(25)}
    seen: set[str] = set()
    for cycle in range(3):  # ceil(25 / 10)
        for name in least_recently_done(done.items(), 10):
            done[name] = float(cycle)  # done (or failed: it is stamped either way)
            seen.add(name)
    assert seen == set(done)
    assert least_recently_done([("b", 5.0), ("a", None), ("c", 1.0)], 2) == ["a", "c"]


def test_host_sync_never_judges_another_controllers_instances() -> None:
    """A capacity-block node has no host runner config (its slots have theirs): to the scaler it
    would look like a half-done launch. It is not the scaler's, so it is neither undone nor gone."""
    known = {
        "i-0000000a": host("i-0000000a", pool_name="h100-cb", age=600, block="cr-1"),
        "i-0000000b": host("i-0000000b", pool_name="gone-from-config", age=600),
        "i-0000000c": host("i-0000000c", age=600, block="cr-1"),  # a node, whatever its pool name
    }
    listed = {"i-0000000a": ("h100-cb", NOW - 600), "i-0000000d": ("h100-cb", NOW - 30)}
    plan = plan_host_sync({"gpu": pool()}, known, listed, NOW)
    assert (plan.adopt, plan.terminate_unknown, plan.undo, plan.gone, plan.live) == ([], [], [], [], [])


# ---- estate.reuse_hosts -----------------------------------------------------------------


def spent(iid: str = "i-0000000a", jobs_done: int = 1, finished: float = 5.0) -> Instance:
    return host(iid, age=900, registered_at=NOW - 800, job_id=1, jobs_done=jobs_done, finished_at=NOW - finished)


def reuse(target: Instance, queued: int, others: list[Instance] | None = None, max_jobs: int = 3) -> bool:
    return plan_reuse(pool(max_jobs_per_host=max_jobs), target, jobs(queued), [target, *(others or [])], NOW)


def test_scale_down_leaves_a_spent_host_its_reuse_window() -> None:
    """Its ephemeral runner left with the job: absent from the listing, yet the host waits for a
    next config (REUSE_WINDOW_S). Retiring it then would cut the window to the next listing."""
    reusing = pool(max_jobs_per_host=3)
    waiting = spent(finished=REUSE_WINDOW_S / 2)
    assert plan_scale_down({"gpu": reusing}, ENV, [waiting], [], [], NOW).retire == []
    past = spent(finished=REUSE_WINDOW_S + 1)
    assert [r.instance_id for r in plan_scale_down({"gpu": reusing}, ENV, [past], [], [], NOW).retire] == [past.id]
    done = spent(jobs_done=3, finished=5)  # its last job: nothing to wait for
    assert [r.instance_id for r in plan_scale_down({"gpu": reusing}, ENV, [done], [], [], NOW).retire] == [done.id]


def test_a_spent_host_is_reused_for_a_waiting_job_nothing_else_covers() -> None:
    assert reuse(spent(), queued=1)


def test_a_spent_host_is_not_kept_on_speculation() -> None:
    assert not reuse(spent(), queued=0)
    assert not reuse(spent(), queued=1, others=[host("i-0000000b", age=30)])  # a booting host covers the job


def test_reuse_stops_at_the_pools_job_limit_and_is_off_by_default() -> None:
    assert not reuse(spent(jobs_done=3), queued=1, max_jobs=3)
    assert not reuse(spent(), queued=1, max_jobs=1)


def test_a_host_that_finished_too_long_ago_has_powered_off() -> None:
    assert not reuse(spent(finished=REUSE_WINDOW_S + 1), queued=1)


def test_a_spent_host_is_neither_supply_nor_an_idle_runner() -> None:
    assert one({"gpu": pool()}, jobs(1), [spent()]) == 1
    assert down([spent()], []).retire[0].instance_id == "i-0000000a"  # its runner is gone: the host is leaving


def test_a_reused_hosts_runner_is_found_by_its_new_name_and_boots_from_its_reuse() -> None:
    reused = spent().given_next_runner(runner_name("", ENV, "gpu", "i-0000000a", 1), NOW - 30)
    assert (reused.generation, reused.spent, reused.assigned, reused.runner_since) == (1, False, False, NOW - 30)
    assert one({"gpu": pool()}, jobs(1), [reused]) == 0  # its next runner is supply
    assert down([reused], []).retire == []  # registering: 30 s of a 300 s boot time
    named = GithubRunner(3, runner_name("", ENV, "gpu", "i-0000000a", 1), True, False)
    assert down([reused], [named]).registered == ["i-0000000a"]


def test_a_ghost_with_a_reuse_suffix_is_still_ours() -> None:
    ghost = GithubRunner(5, runner_name("", ENV, "gpu", "i-0000000f", 2), False, False)
    assert [r.runner_id for r in down([], [ghost]).retire] == [5]


def test_reuse_names_keep_the_instance_id_recoverable() -> None:
    assert instance_id_of(runner_name("ci-", ENV, "gpu", "i-0123456789abcdef0", 3)) == "i-0123456789abcdef0"
    assert runner_name("ci-", ENV, "gpu", "i-0123456789abcdef0") == "ci-prod-gpu-i-0123456789abcdef0"
    assert instance_id_of("ci-prod-gpu-i-0123456789abcdef0-s2") is None  # a capacity-block slot runner is not a host's
