"""Jobs a pool cannot take now move to the next pool that serves them (issue 17.12, the
dynamic half): the pure decision, over routes, launch orders and jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from estate.config.loader import load_estate
from estate.config.prices import PriceTable
from estate.local.plane import LocalPlane
from estate.sim.simulate import simulate
from estate.sim.workload import TraceJob
from lambda_src.core.fleet_state import IN_PROGRESS, QUEUED, Instance, Job
from lambda_src.core.overflow import Move, apply_moves, plan_overflow
from lambda_src.core.planner import plan_launches
from lambda_src.core.routing import Admission, PoolRoute, RoutingTable, normalise
from lambda_src.core.settings import PoolSettings
from tests.conftest import EXAMPLE_CONFIGS, MINIMAL_POOL, WORKING_HOURS, fixed_clock, write_pool

NOW = 1_800_000_000.0
CPU = ("self-hosted", "linux", "x64")


def route(name: str, priority: int, admission: Admission | None = None, max_runners: int | None = None) -> PoolRoute:
    labels = normalise(CPU)
    return PoolRoute(name, True, priority, "spot", (labels,), (labels | {name},), max_runners, 1.0, admission)


def pool(name: str, max_instances: int) -> PoolSettings:
    return PoolSettings(name, "spot", ("m7i.large",), CPU, "Default", max_instances)


TABLE = RoutingTable((route("first", 1), route("second", 2), route("third", 3)))
POOLS = {"first": pool("first", 2), "second": pool("second", 1), "third": pool("third", 5)}


def queued(n: int, on: str = "first", repo: str = "org/app", start: int = 0) -> list[Job]:
    return [Job(start + i, on, QUEUED, NOW + start + i, repo, CPU) for i in range(n)]


def plan(jobs: list[Job], hosts: list[Instance] | None = None, table: RoutingTable = TABLE) -> list[Move]:
    return plan_overflow(table, plan_launches(POOLS, jobs, hosts or [], NOW), jobs)


def test_a_capped_pools_newest_jobs_go_to_the_next_pool_with_room() -> None:
    moves = plan(queued(5))  # first launches 2; second has room for 1, third for 5
    assert [(m.job.id, m.to) for m in moves] == [(4, "second"), (3, "third"), (2, "third")]
    assert all(m.reason == "first capped at 2 instances" for m in moves)
    after = apply_moves(queued(5), moves)
    assert [o.count for o in plan_launches(POOLS, after, [], NOW)] == [2, 1, 2]  # every job has a host coming


def test_nothing_moves_while_the_pool_can_launch_for_its_jobs() -> None:
    assert plan(queued(2)) == []


def test_with_no_room_anywhere_jobs_wait_where_they_are() -> None:
    full = [Instance(f"i-{n:08x}", p, NOW, job_id=n) for n, p in enumerate(["first"] * 2 + ["second"] + ["third"] * 5)]
    assert plan(queued(3), full) == []


def test_idle_runners_of_a_later_pool_count_as_room() -> None:
    hosts = [Instance(f"i-{n:08x}", "first", NOW, job_id=n) for n in range(2)] + [Instance("i-0000000a", "second", NOW)]
    pools = {**POOLS, "second": pool("second", 1), "third": pool("third", 0)}
    jobs = queued(1)
    moves = plan_overflow(TABLE, plan_launches(pools, jobs, hosts, NOW), jobs)
    assert [(m.job.id, m.to) for m in moves] == [(0, "second")]  # second is full, but its runner is idle


def test_jobs_move_only_forward_along_their_own_route() -> None:
    moves = plan(queued(1, on="second") + queued(3, on="first", start=10), [Instance("i-0000000a", "second", NOW, job_id=99)])
    assert {(m.job.id, m.to) for m in moves} == {(12, "third"), (0, "third")}  # never back to first


def test_a_job_its_pool_may_not_take_moves_to_the_first_that_may_or_is_dropped() -> None:
    kernels = Admission("gpu", frozenset({"org/kernels"}))
    table = RoutingTable((route("first", 1, kernels), route("second", 2), route("third", 3, max_runners=0)))
    jobs = [*queued(1, repo="org/app"), *queued(1, on="third", start=5)]
    assert [(m.job.id, m.to) for m in plan(jobs, table=table)] == [(0, "second"), (5, "second")]
    public = [Job(7, "first", QUEUED, NOW, "org/kernels", CPU, public=True)]
    (drop,) = plan(public, table=RoutingTable((route("first", 1, kernels),)))
    assert (drop.to, drop.reason) == (None, "no pool may take it")
    assert apply_moves(public, [drop]) == []


def test_jobs_no_longer_queued_never_move() -> None:
    started = [Job(1, "first", IN_PROGRESS, NOW, "org/app", CPU)] * 3
    assert plan(started) == []


def test_pools_without_an_order_neither_give_nor_take_overflow() -> None:
    block = PoolRoute("block", True, 0, "capacity-block", (normalise(CPU),), (normalise(CPU),))
    table = RoutingTable((block, *TABLE.routes))
    jobs = queued(4, on="block")
    assert plan(jobs, table=table) == []  # the block manager counts its slots, not the scaler


@given(st.lists(st.sampled_from(["first", "second", "third"]), max_size=25), st.integers(0, 8))
def test_overflow_never_asks_more_of_a_pool_than_its_caps_allow(pools: list[str], busy: int) -> None:
    jobs = [Job(i, p, QUEUED, NOW + i, "org/app", CPU) for i, p in enumerate(pools)]
    hosts = [Instance(f"i-{n:08x}", "third", NOW, job_id=1000 + n) for n in range(min(busy, 5))]
    before = plan_launches(POOLS, jobs, hosts, NOW)
    moves = plan(jobs, hosts)
    after = plan_launches(POOLS, apply_moves(jobs, moves), hosts, NOW)
    for new in after:
        if any(m.to == new.pool for m in moves):
            assert new.count == new.shortfall  # a pool given jobs can cover every one of them
        assert new.count <= new.room
    assert sum(o.shortfall - o.count for o in after if o.shortfall > 0) <= sum(o.shortfall - o.count for o in before if o.shortfall > 0)


# ---- the shells: scale-up, reconcile and the simulator use the decision --------------------


def two_cpu_pools(directory: Path) -> list[str]:
    write_pool(
        directory,
        "cpu-a",
        MINIMAL_POOL.replace("runners_maximum_count: 4", "runners_maximum_count: 1").replace(
            "exactMatch: true", "exactMatch: true\n  priority: 1"
        ),
    )
    write_pool(directory, "cpu-b", MINIMAL_POOL.replace("exactMatch: true", "exactMatch: true\n  priority: 2"))
    return [str(directory)]


def test_scale_up_sends_what_a_capped_pool_cannot_launch_for_to_the_next_pool(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local = LocalPlane(two_cpu_pools(tmp_path), clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    try:
        local.serve_webhook()
        jobs = [local.github.queue_job(["self-hosted", "linux", "x64", "cpu"]) for _ in range(3)]
        assert {local.plane.ledger.job(j.id).pool for j in jobs} == {"cpu-a"}  # type: ignore[union-attr]
        local.pump()
        assert len(local.running_instances("cpu-a")) == 1
        assert len(local.running_instances("cpu-b")) == 2  # was: two jobs stranded behind cpu-a's cap
        pools = [local.plane.ledger.job(j.id).pool for j in jobs]  # type: ignore[union-attr]
        assert pools == ["cpu-a", "cpu-b", "cpu-b"]  # the oldest keeps its place
        report = local.plane.reconcile()
        assert report.rerouted == []
        assert sum(o.count for o in report.orders.values()) == 0  # every job has its host
    finally:
        local.stop()


def test_reconcile_stops_counting_a_found_job_no_group_admits(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    groups = {
        "gpu": {"repositories": ["kernels", "serving"]},
        "gpu-h100": {"repositories": ["kernels"]},
        "gpu-b200": {"repositories": ["kernels"]},
    }
    local = LocalPlane(
        [str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url, runner_groups=groups
    ).start()
    try:
        local.serve_webhook()
        local.github.queue_job(["self-hosted", "linux", "x64", "gpu", "t4"], repo="example-org/serving")  # heard, admitted
        lost = local.github.queue_job(["self-hosted", "linux", "x64", "gpu", "h100"], repo="example-org/serving", send=False)
        local.pump()
        local.clock.advance(60)
        report = local.plane.reconcile()  # finds the lost job by labels alone, then routing's admission drops it
        assert lost.id in report.found_jobs
        assert {"job": lost.id, "from": "gpu-h100-cb", "to": None, "reason": "no pool may take it"} in report.rerouted
        assert [j.pool for j in local.plane.ledger.queued_jobs()] == ["gpu-t4-spot"]  # no demand for the H100 block
    finally:
        local.stop()


def test_the_simulated_estate_moves_a_capped_pools_jobs_as_the_lambdas_do(tmp_path: Path) -> None:
    estate = load_estate(two_cpu_pools(tmp_path))
    trace = [TraceJob(f"j{i}", 0.0, ("self-hosted", "linux", "x64", "cpu"), 600.0) for i in range(3)]
    _, sims = simulate(estate, trace, ["estate"], PriceTable())
    sim = sims["estate"]
    assert sorted(h.pool for h in sim.hosts) == ["cpu-a", "cpu-b", "cpu-b"]  # was: three jobs behind one host
    assert max(j.started_at or 0.0 for j in sim.jobs) < 600.0  # no job waits for another to finish
    assert sim.report()["jobs_unserved"] == 0
