"""The agent's decisions on plain data."""

from __future__ import annotations

from estate.agent.plan import (
    JOB_EXIT_GRACE_S,
    START_GRACE_S,
    Account,
    FileFacts,
    RunningSlot,
    plan_reconcile,
    separation_problems,
    slots_to_wake,
)
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


def test_a_registration_missing_from_a_listing_is_confirmed_before_anything_is_stopped() -> None:
    """A paged listing misses runners that exist (runners deleted while it pages shift the
    rest): absence asks GitHub about that runner; only its answer can restart the slot."""
    running = [RunningSlot(0, "a-s0-x", 0.0, None, runner_id=5)]
    assert plan_reconcile(running, {}, now=START_GRACE_S - 1, idle_timeout_s=300.0, draining=False).confirm == []  # may not show yet
    missed = plan_reconcile(running, {}, now=START_GRACE_S + 1, idle_timeout_s=300.0, draining=False)
    assert (missed.restart, missed.confirm) == ([], [0])
    gone = plan_reconcile(running, {}, now=START_GRACE_S + 1, idle_timeout_s=300.0, draining=False, confirmed={0: None})
    assert (gone.restart, gone.confirm) == ([0], [])


def test_a_runner_missing_from_a_listing_but_running_a_job_is_left_alone() -> None:
    running = [RunningSlot(0, "a-s0-x", 0.0, None, runner_id=5)]
    still_there = {0: GithubRunner(5, "a-s0-x", True, True)}
    plan = plan_reconcile(running, {}, now=1000.0, idle_timeout_s=300.0, draining=True, confirmed=still_there)
    assert (plan.restart, plan.retire, plan.leftovers) == ([], [], [])
    assert plan.busy_at == {0: 1000.0}


def test_a_runner_whose_job_just_ended_is_left_to_exit_by_itself() -> None:
    """GitHub removes an ephemeral runner when its job ends; the process exits on its own a
    moment later. Seen busy recently, a confirmed-gone runner is not stopped yet."""
    running = [RunningSlot(0, "a-s0-x", 0.0, None, runner_id=5, busy_at=990.0)]
    soon = plan_reconcile(running, {}, now=1000.0, idle_timeout_s=300.0, draining=False, confirmed={0: None})
    assert soon.restart == []
    later = plan_reconcile(running, {}, now=990.0 + JOB_EXIT_GRACE_S + 1, idle_timeout_s=300.0, draining=False, confirmed={0: None})
    assert later.restart == [0]


def test_a_busy_runner_is_marked_so() -> None:
    running = [RunningSlot(0, "a-s0-x", 0.0, None, runner_id=5)]
    plan = plan_reconcile(running, listed(GithubRunner(5, "a-s0-x", True, True)), now=70.0, idle_timeout_s=300.0, draining=False)
    assert (plan.busy_at, plan.idle_since) == ({0: 70.0}, {0: None})


def test_leftover_registrations_are_deleted_unless_busy() -> None:
    runners = listed(GithubRunner(7, "a-s0-old", False, False), GithubRunner(8, "a-s1-old", True, True))
    assert plan_reconcile([], runners, now=0.0, idle_timeout_s=300.0, draining=False).leftovers == [7]


def test_one_parked_slot_wakes_per_queued_job_it_can_take() -> None:
    parked = {0: ["self-hosted", "linux", "arm64"], 1: ["self-hosted", "linux", "arm64", "gpu"], 2: ["self-hosted", "linux", "arm64"]}
    jobs = [["self-hosted", "GPU"], ["self-hosted", "gpu"], ["self-hosted", "linux"], ["x64"]]
    assert slots_to_wake(jobs, parked) == [1, 0]


# ---- who may read the agent's credential ------------------------------------------------------

AGENT = Account("runner-estate", 990, frozenset({990}))
RUNNERS = Account("runner", 1001, frozenset({1001}))
PRIVILEGED = {0: "root", 27: "sudo", 998: "docker"}
TOKEN = FileFacts("/etc/runner-estate/token.json", owner=990, group=990, mode=0o100600)
ETC = FileFacts("/etc/runner-estate", owner=0, group=0, mode=0o40755)
CODE = FileFacts("/opt/runner-estate", owner=0, group=0, mode=0o40755)


def problems(run_as: Account | None, token: FileFacts = TOKEN, etc: FileFacts = ETC, code: FileFacts = CODE) -> list[str]:
    return separation_problems(AGENT, run_as, [token], [etc], [code], PRIVILEGED)


def test_runners_under_their_own_unprivileged_user_cannot_reach_the_credential() -> None:
    assert problems(RUNNERS) == []


def test_runners_need_a_user_of_their_own_that_is_neither_root_nor_the_agents() -> None:
    assert "--run-as" in problems(None)[0]
    assert "root" in problems(Account("root", 0, frozenset({0})))[0]
    assert "agent's own user" in problems(Account("alias", 990, frozenset({990})))[0]  # same uid, another name
    assert "sudo" in problems(Account("runner", 1001, frozenset({1001, 27})))[0]
    assert "docker" in problems(Account("runner", 1001, frozenset({1001, 998})))[0]  # docker is root by another name
    assert "root" in problems(Account("runner", 1001, frozenset({0})))[0]


def test_the_credential_belongs_to_the_agent_and_nobody_else_may_read_it() -> None:
    owned_by_runners = FileFacts(TOKEN.path, owner=1001, group=1001, mode=0o100600)
    assert "belongs to uid 1001" in problems(RUNNERS, token=owned_by_runners)[0]
    group_readable = FileFacts(TOKEN.path, owner=990, group=1001, mode=0o100640)
    assert "readable by group or others" in problems(RUNNERS, token=group_readable)[0]


def test_the_runners_user_may_not_replace_the_credential_or_the_agents_code() -> None:
    their_dir = FileFacts("/etc/runner-estate", owner=1001, group=1001, mode=0o40700)
    assert "writable by the runners' user" in problems(RUNNERS, etc=their_dir)[0]
    group_writable = FileFacts("/opt/runner-estate", owner=0, group=1001, mode=0o40775)
    assert "writable by the runners' user" in problems(RUNNERS, code=group_writable)[0]
    sticky_tmp = FileFacts("/tmp", owner=0, group=0, mode=0o41777)  # noqa: S108 - sticky: others cannot replace the file
    assert problems(RUNNERS, etc=sticky_tmp) == []
