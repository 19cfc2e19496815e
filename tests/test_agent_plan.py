"""The agent's decisions on plain data."""

from __future__ import annotations

from estate.agent.plan import START_GRACE_S, RunningSlot, plan_reconcile, slots_to_wake
from lambda_src.core.fleet_state import GithubRunner


def listed(*runners: GithubRunner) -> dict[str, GithubRunner]:
    return {r.name: r for r in runners}


def test_an_idle_runner_is_marked_then_retired_past_the_timeout_and_a_busy_one_never() -> None:
    running = [RunningSlot(0, "a-s0-x", 0.0, None), RunningSlot(1, "a-s1-y", 0.0, 100.0)]
    runners = listed(GithubRunner(1, "a-s0-x", True, False), GithubRunner(2, "a-s1-y", True, False))
    plan = plan_reconcile(running, runners, now=400.0, idle_timeout_s=300.0, draining=False)
    assert plan.idle_since == {0: 400.0, 1: 100.0}
    assert plan.retire == [(1, 2)]
    busy = listed(GithubRunner(1, "a-s0-x", True, True), GithubRunner(2, "a-s1-y", True, True))
    assert plan_reconcile(running, busy, now=400.0, idle_timeout_s=300.0, draining=True).retire == []


def test_draining_retires_every_idle_runner_at_once() -> None:
    running = [RunningSlot(0, "a-s0-x", 0.0, None)]
    plan = plan_reconcile(running, listed(GithubRunner(1, "a-s0-x", False, False)), now=1.0, idle_timeout_s=300.0, draining=True)
    assert plan.retire == [(0, 1)]


def test_a_vanished_registration_restarts_its_slot_after_the_grace() -> None:
    running = [RunningSlot(0, "a-s0-x", 0.0, None)]
    assert plan_reconcile(running, {}, now=START_GRACE_S - 1, idle_timeout_s=300.0, draining=False).restart == []
    assert plan_reconcile(running, {}, now=START_GRACE_S + 1, idle_timeout_s=300.0, draining=False).restart == [0]


def test_leftover_registrations_are_deleted_unless_busy() -> None:
    runners = listed(GithubRunner(7, "a-s0-old", False, False), GithubRunner(8, "a-s1-old", True, True))
    assert plan_reconcile([], runners, now=0.0, idle_timeout_s=300.0, draining=False).leftovers == [7]


def test_one_parked_slot_wakes_per_queued_job_it_can_take() -> None:
    parked = {0: ["self-hosted", "linux", "arm64"], 1: ["self-hosted", "linux", "arm64", "gpu"], 2: ["self-hosted", "linux", "arm64"]}
    jobs = [["self-hosted", "GPU"], ["self-hosted", "gpu"], ["self-hosted", "linux"], ["x64"]]
    assert slots_to_wake(jobs, parked) == [1, 0]
