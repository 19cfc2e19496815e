"""A spot interruption re-runs the job (issue 21.1): the warned host takes no new work, the job
that failed because its host went away is re-run once and its retry runs on-demand, a job that
ended on its own never is, and a pool that keeps being interrupted is taken off spot a while.
Pure decisions first, then end to end on loopback (EventBridge's events handed to the handler
as the queue's event source mapping would)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from estate.config.loader import load_estate
from estate.local.plane import LocalPlane
from lambda_src.core.fleet_state import COMPLETED, IN_PROGRESS, QUEUED, GithubRunner, Instance, Job, runner_name
from lambda_src.core.interruptions import (
    ASK_AFTER_S,
    BREAKER_HOLD_S,
    REBALANCE,
    RERUN_WINDOW_S,
    WARNING,
    Interruption,
    breaker_open_until,
    decide_rerun,
    on_demand_sibling,
    parse_spot_event,
)
from lambda_src.core.planner import may_take_next_runner, plan_launches, plan_scale_down, scaled_pools
from lambda_src.core.settings import PoolSettings
from lambda_src.functions.webhook import job_from_payload
from tests.conftest import (
    EXAMPLE_CONFIGS,
    INSTANTS,
    SHARED_FIXTURES,
    WORKING_HOURS,
    fixed_clock,
    needs_shared,
    served_example_plane,
    write_pool,
)
from tests.test_control_plane import with_ec2_faults

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL, ON_DEMAND = "gpu-t4-spot", "gpu-t4-ondemand"
NOW = 1_800_000_000.0
EVENTS = SHARED_FIXTURES / "aws" / "events"


# ---- EventBridge's events ------------------------------------------------------------------


@needs_shared
def test_the_two_events_are_read_from_awss_own_examples_and_nothing_else_is() -> None:
    warning = parse_spot_event((EVENTS / "ec2-spot-instance-interruption-warning.json").read_text())
    assert warning is not None
    assert (warning.kind, warning.instance_id, warning.warning) == (WARNING, "i-1234567890abcdef0", True)
    hint = parse_spot_event((EVENTS / "ec2-instance-rebalance-recommendation.json").read_text())
    assert hint is not None
    assert (hint.kind, hint.warning) == (REBALANCE, False)
    assert hint.at < warning.at
    for other in ("ec2-bid-evicted-via-cloudtrail.json", "ec2-instance-state-change-shutting-down.json"):
        assert parse_spot_event((EVENTS / other).read_text()) is None
    assert parse_spot_event("not json") is None
    assert parse_spot_event(json.dumps({"source": "aws.ec2", "detail-type": WARNING, "detail": {}})) is None


@needs_shared
def test_the_completed_webhook_tells_conclusion_time_and_attempt() -> None:
    payload = json.loads((SHARED_FIXTURES / "github/webhooks/workflow_job/completed.failure.with-organization.payload.json").read_text())
    estate = load_estate([EXAMPLE_CONFIGS])
    payload["workflow_job"]["labels"] = T4
    payload["repository"].update(private=True, visibility="private")  # the example's repository is public, which no GPU pool admits
    action, found = job_from_payload(payload, estate.routing_table())
    assert action == "completed"
    assert found is not None
    assert (found.conclusion, found.run_attempt) == ("failure", 1)
    assert found.completed_at == datetime(2021, 8, 5, 10, 38, 16, tzinfo=UTC).timestamp()


# ---- the breaker ---------------------------------------------------------------------------


def test_two_warnings_within_fifteen_minutes_take_a_pool_off_spot_for_thirty() -> None:
    assert breaker_open_until([NOW], NOW) is None
    assert breaker_open_until([NOW - 14 * 60, NOW], NOW) == NOW + BREAKER_HOLD_S
    assert breaker_open_until([NOW - 16 * 60, NOW], NOW) is None
    assert breaker_open_until([NOW - 14 * 60, NOW], NOW + BREAKER_HOLD_S + 1) is None  # closed again


# ---- which job is re-run -------------------------------------------------------------------

WARNED = Interruption("i-0123456789abcdef0", POOL, NOW)


def job(state: str = COMPLETED, conclusion: str | None = "failure", ended: float | None = NOW + 90) -> Job:
    return Job(7, POOL, state, NOW - 600, "org/app", tuple(T4), run_id=70, run_attempt=1, conclusion=conclusion, completed_at=ended)


def test_a_job_that_failed_as_its_host_went_away_is_rerun() -> None:
    assert decide_rerun(WARNED, job(), NOW + 120).action == "rerun"
    assert decide_rerun(WARNED, job(conclusion="cancelled"), NOW + 120).action == "rerun"


@pytest.mark.parametrize(
    ("view", "why"),
    [
        (job(conclusion="success"), "ended success"),
        (job(ended=NOW - 5), "failed before its host was warned"),
        (job(ended=NOW + RERUN_WINDOW_S + 1), "long after"),
        (job(conclusion="timed_out"), "ended timed_out"),
    ],
)
def test_a_job_that_ended_on_its_own_is_never_rerun(view: Job, why: str) -> None:
    decision = decide_rerun(WARNED, view, NOW + RERUN_WINDOW_S + 60)
    assert decision.action == "skip"
    assert why in decision.reason


def test_once_only_and_waiting_for_the_end_or_asking_github() -> None:
    assert decide_rerun(WARNED, job(), NOW + 120, rerun_before=True).action == "skip"
    assert decide_rerun(WARNED, job(IN_PROGRESS, None, None), NOW + 60).action == "wait"
    assert decide_rerun(WARNED, job(IN_PROGRESS, None, None), NOW + ASK_AFTER_S + 1).action == "ask"
    assert decide_rerun(WARNED, None, NOW + 60).action == "wait"
    assert decide_rerun(WARNED, None, NOW + ASK_AFTER_S + 1).action == "skip"


def test_the_retry_goes_to_the_pools_on_demand_sibling_by_routing() -> None:
    estate = load_estate([EXAMPLE_CONFIGS])
    pools = {p.name for p in estate.pools if p.capacity_type != "capacity-block"}
    assert on_demand_sibling(estate.routing_table(), pools, job()) == ON_DEMAND
    assert on_demand_sibling(estate.routing_table(), pools - {ON_DEMAND}, job()) is None


# ---- the planners: a warned host takes no new work ------------------------------------------

SPOT = PoolSettings("p", "spot", ("m7i.large",), ("self-hosted",), "Default", 10, max_jobs_per_host=3)
NAME = runner_name("", "prod", "p", "i-0123456789abcdef0")


def test_a_warned_host_is_no_supply_takes_no_next_job_and_its_idle_runner_goes_now() -> None:
    warned = Instance("i-0123456789abcdef0", "p", NOW - 600, registered_at=NOW - 500, idle_since=NOW - 10, interrupted_at=NOW - 5)
    queued = Job(1, "p", QUEUED, NOW)
    (order,) = plan_launches({"p": SPOT}, [queued], [warned], NOW)
    assert (order.supply, order.count) == (0, 1)
    spent = Instance("i-0123456789abcdef0", "p", NOW - 600, finished_at=NOW - 5, jobs_done=1, rebalance_at=NOW - 5)
    assert not may_take_next_runner(SPOT, spent, NOW)
    plan = plan_scale_down({"p": SPOT}, "prod", [warned], [GithubRunner(3, NAME, True, False)], [], NOW)
    assert [(r.instance_id, r.runner_id) for r in plan.retire] == [("i-0123456789abcdef0", 3)]
    busy = plan_scale_down({"p": SPOT}, "prod", [warned], [GithubRunner(3, NAME, True, True)], [], NOW)
    assert busy.retire == []


def test_a_steered_job_launches_on_demand_in_a_spot_pool() -> None:
    (order,) = plan_launches({"p": SPOT}, [Job(1, "p", QUEUED, NOW, on_demand=True), Job(2, "p", QUEUED, NOW)], [], NOW)
    assert (order.count, order.on_demand) == (2, 1)


# ---- on loopback ----------------------------------------------------------------------------


@pytest.fixture(params=sorted(INSTANTS))
def local(request: pytest.FixtureRequest, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    with served_example_plane(moto_url, monkeypatch, INSTANTS[request.param]) as plane:
        yield plane


@pytest.fixture
def one(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    with served_example_plane(moto_url, monkeypatch, WORKING_HOURS) as plane:
        yield plane


def event(local: LocalPlane, instance_id: str, kind: str = WARNING) -> dict[str, Any]:
    """An SQS record carrying EventBridge's event, as the queue's event source mapping hands it over."""
    detail: dict[str, str] = {"instance-id": instance_id}
    if kind == WARNING:
        detail["instance-action"] = "terminate"
    body = {
        "version": "0",
        "id": f"e-{instance_id}-{kind[:4]}",
        "detail-type": kind,
        "source": "aws.ec2",
        "account": "123456789012",
        "time": datetime.fromtimestamp(local.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"],
        "detail": detail,
    }
    return {"messageId": f"m-{instance_id}-{kind[:4]}", "body": json.dumps(body)}


def running_job(local: LocalPlane, run_id: int | None = None) -> tuple[Any, str]:
    job = local.github.queue_job(T4, run_id=run_id)
    local.pump()
    hosts = [local.plane.ledger.instance(i, live_only=True) for i in local.running_instances(POOL)]
    (iid,) = [h.id for h in hosts if h is not None and not h.assigned]  # the one launched for this job
    local.github.start_job(job.id, local.boot(iid))
    return job, iid


def interrupted(local: LocalPlane, job: Any, iid: str) -> None:
    """EC2 warns, then takes the host two minutes later: GitHub loses the runner and fails the job."""
    failures, _ = local.spot_events.handle([event(local, iid)])
    assert failures == []
    local.clock.advance(120)
    local.power_off(iid)
    local.clock.advance(60)
    local.github.lose_runner(job.id)


def test_an_interrupted_job_is_rerun_once_and_its_retry_runs_on_demand(local: LocalPlane) -> None:
    job, iid = running_job(local)
    interrupted(local, job, iid)
    report = local.plane.reconcile()
    assert report.reruns == [job.id]
    assert local.github.reruns == [job.id]
    (retry,) = [j for j in local.github.jobs.values() if j.run_id == job.run_id and j.id != job.id]
    assert retry.run_attempt == 2
    local.pump()
    stored = local.plane.ledger.job(retry.id)
    assert stored is not None
    assert stored.pool == ON_DEMAND  # the pool's on-demand sibling
    assert len(local.running_instances(ON_DEMAND)) == 1

    local.clock.advance(60)
    assert local.plane.reconcile().reruns == []
    assert local.github.reruns == [job.id]  # once


def test_a_job_that_failed_on_its_own_is_never_rerun(one: LocalPlane) -> None:
    job, iid = running_job(one)
    one.github.finish_job(job.id, conclusion="failure")  # its tests failed
    one.clock.advance(30)
    one.spot_events.handle([event(one, iid)])  # the warning comes after
    one.clock.advance(ASK_AFTER_S + 60)
    report = one.plane.reconcile()
    assert report.reruns == []
    assert report.rerun_skipped == [job.id]
    assert one.github.reruns == []


def test_a_job_that_finished_despite_the_warning_is_not_rerun(one: LocalPlane) -> None:
    job, iid = running_job(one)
    one.spot_events.handle([event(one, iid)])
    one.clock.advance(60)
    one.github.finish_job(job.id)  # done within the two minutes
    one.clock.advance(60)
    assert one.plane.reconcile().rerun_skipped == [job.id]
    assert one.github.reruns == []


def test_a_lost_completed_webhook_is_asked_of_github(one: LocalPlane) -> None:
    job, iid = running_job(one)
    one.spot_events.handle([event(one, iid)])
    one.clock.advance(120)
    one.power_off(iid)
    one.github.webhook_down = True
    one.github.lose_runner(job.id)
    one.github.webhook_down = False
    one.clock.advance(60)
    assert one.plane.reconcile().reruns == []  # not known yet
    one.clock.advance(ASK_AFTER_S)
    assert one.plane.reconcile().reruns == [job.id]


def test_the_rerun_waits_for_its_run_to_complete(one: LocalPlane) -> None:
    job, iid = running_job(one)
    sibling = one.github.queue_job(["self-hosted", "linux", "x64", "cpu"], run_id=job.run_id)  # still running elsewhere
    interrupted(one, job, iid)
    assert one.plane.reconcile().reruns == []
    assert one.github.reruns == []
    one.github.finish_job(sibling.id)
    one.clock.advance(60)
    assert one.plane.reconcile().reruns == [job.id]


def test_a_warned_idle_host_takes_no_job_and_is_retired_at_once(local: LocalPlane) -> None:
    job = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    name = local.boot(iid)
    local.github.finish_job(job.id)  # cancelled before the runner took it: the runner idles
    failures, report = local.spot_events.handle([event(local, iid, REBALANCE)])
    assert (failures, report.drained) == ([], [iid])
    assert iid not in local.running_instances(POOL)
    assert name not in {r.name for r in local.github.runners.values()}
    assert report.summary()["rebalance_recommendations"] == 1


def test_events_for_instances_not_ours_are_counted_and_dropped(one: LocalPlane) -> None:
    failures, report = one.spot_events.handle([event(one, "i-0fffffffffffffff0"), {"messageId": "x", "body": "{}"}])
    assert failures == []
    assert (report.not_ours, report.ignored) == (1, 1)


def test_two_interruptions_in_a_pool_take_it_off_spot_for_a_while(one: LocalPlane) -> None:
    _, first_host = running_job(one)
    _, second_host = running_job(one)
    one.spot_events.handle([event(one, first_host)])
    one.clock.advance(5 * 60)
    _, report = one.spot_events.handle([event(one, second_host), event(one, second_host)])  # SQS may deliver twice
    assert report.breaker_opened == [POOL]
    assert report.warnings == 2
    faulty = with_ec2_faults(one, [])
    one.github.queue_job(T4)
    one.pump()
    markets = [r["TargetCapacitySpecification"]["DefaultTargetCapacityType"] for r in faulty.requests]
    assert markets == ["on-demand"]
    assert one.plane.reconcile().summary()["off_spot"] == 1

    one.clock.advance(BREAKER_HOLD_S)
    one.github.queue_job(T4)
    one.pump()
    assert [r["TargetCapacitySpecification"]["DefaultTargetCapacityType"] for r in faulty.requests][-1] == "spot"


SPOT_ONLY = """\
matcherConfig:
  exactMatch: true
  labelMatchers:
    - [self-hosted, linux, x64, cpu]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [cpu]
  instance_types: [m7i.2xlarge]
  instance_target_capacity_type: spot
  runners_maximum_count: 4
"""


def test_without_an_on_demand_sibling_the_retry_gets_an_on_demand_host_of_its_pool(
    tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pool(tmp_path, "cpu-spot", SPOT_ONLY)
    plane = LocalPlane([str(tmp_path)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    plane.serve_webhook()
    try:
        cpu = ["self-hosted", "linux", "x64", "cpu"]
        assert scaled_pools(plane.settings.pools) == {"cpu-spot": plane.settings.pools["cpu-spot"]}
        job = plane.github.queue_job(cpu)
        plane.pump()
        (iid,) = plane.running_instances("cpu-spot")
        plane.github.start_job(job.id, plane.boot(iid))
        interrupted(plane, job, iid)
        faulty = with_ec2_faults(plane, [])
        assert plane.plane.reconcile().reruns == [job.id]
        plane.pump()
        assert [r["TargetCapacitySpecification"]["DefaultTargetCapacityType"] for r in faulty.requests] == ["on-demand"]
    finally:
        plane.stop()
