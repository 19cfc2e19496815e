"""The capacity-block planner on plain data: windows, launches, slot refills, drains."""

from __future__ import annotations

import dataclasses

from lambda_src.core.block_planner import (
    DRAIN_MARGIN_S,
    REFILL_GRACE_S,
    SLOT_RESTART_S,
    TERMINATION_LEAD_S,
    WARNING_LEAD_S,
    Block,
    BlockPlan,
    phase,
    plan_blocks,
    should_renew,
    window,
)
from lambda_src.core.fleet_state import BlockRecord, GithubRunner, Instance, SlotRecord, slot_of, slot_runner_name
from lambda_src.core.settings import PoolSettings

HOUR = 3600.0
POOL = PoolSettings(
    name="h100",
    capacity_type="capacity-block",
    instance_types=("p5.48xlarge",),
    labels=("self-hosted", "linux", "x64", "gpu", "h100"),
    runner_group="gpu",
    max_instances=4,
    boot_timeout_s=1200,
    gpus_per_node=8,
    slot_gpus=(4, 1, 1, 1, 1),
    slot_labels=(("h100", "sm90", "4gpu"), *[("h100", "sm90", "1gpu")] * 4),
    job_timeout_s=2 * 3600,
)
ENV = "prod"


def block(start: float = 0.0, hours: float = 24, total: int = 2, available: int | None = None, state: str = "active") -> Block:
    return Block("cr-1", "p5.48xlarge", "us-east-1a", total, total if available is None else available, state, start, start + hours * HOUR)


def node(iid: str = "i-00000000000000001", launched: float = 0.0) -> Instance:
    return Instance(iid, "h100", launched, block="cr-1")


def name(iid: str, slot: int) -> str:
    return slot_runner_name("", ENV, "h100", iid, slot)


def runner(iid: str, slot: int, online: bool = True, busy: bool = False, rid: int | None = None) -> GithubRunner:
    return GithubRunner(rid or 100 + slot, name(iid, slot), online, busy)


def plan(**kw: object) -> BlockPlan:
    args: dict[str, object] = {"pool": POOL, "environment": ENV, "blocks": [block()], "records": {}, "nodes": [], "slots": {},
                               "runners": [], "queued_jobs": 0, "now": HOUR}  # fmt: skip
    args.update(kw)
    return plan_blocks(**args)  # type: ignore[arg-type]


def test_the_window_leaves_room_for_the_longest_job_before_ec2_terminates() -> None:
    b = block(hours=24)
    win = window(b, POOL)
    assert win.terminate_at == b.end - TERMINATION_LEAD_S
    assert win.accept_until == b.end - TERMINATION_LEAD_S - POOL.job_timeout_s - DRAIN_MARGIN_S
    short_jobs = dataclasses.replace(POOL, job_timeout_s=60)
    assert window(b, short_jobs).accept_until == b.end - WARNING_LEAD_S  # never past the warning
    assert window(b, POOL, warned=True, now=HOUR).accept_until == HOUR


def test_phases_follow_the_block_and_the_clock() -> None:
    b = block(start=HOUR)
    win = window(b, POOL)
    assert phase(b, win, 0.0) == "waiting"
    assert phase(dataclasses.replace(b, state="scheduled"), win, 2 * HOUR) == "waiting"
    assert phase(b, win, 2 * HOUR) == "accepting"
    assert phase(b, win, win.accept_until) == "draining"
    assert phase(b, win, win.terminate_at) == "ended"
    assert phase(dataclasses.replace(b, state="expired"), win, 2 * HOUR) == "ended"


def test_queued_jobs_launch_nodes_for_what_free_slots_cannot_take() -> None:
    assert plan(queued_jobs=3).launch == [("cr-1", 1)]
    assert plan(queued_jobs=6).launch == [("cr-1", 2)]
    assert plan(queued_jobs=60).launch == [("cr-1", 2)]  # the block's size
    assert plan(queued_jobs=6, blocks=[block(available=1)]).launch == [("cr-1", 1)]
    free = [runner("i-00000000000000001", s) for s in range(5)]
    assert plan(queued_jobs=5, nodes=[node()], runners=free).launch == []


def test_nothing_launches_into_a_block_that_waits_or_drains() -> None:
    assert plan(queued_jobs=3, now=-1.0).launch == []
    late = 24 * HOUR - TERMINATION_LEAD_S - POOL.job_timeout_s
    assert plan(queued_jobs=3, now=late).launch == []


def test_a_lost_node_is_replaced_up_to_the_blocks_remembered_target() -> None:
    p = plan(records={"cr-1": BlockRecord(target=2)}, nodes=[node()], runners=[runner("i-00000000000000001", s) for s in range(5)])
    assert p.launch == [("cr-1", 1)]


def test_slots_get_a_runner_and_a_fresh_one_after_each_job() -> None:
    iid = "i-00000000000000001"
    fresh = plan(nodes=[node()])
    assert fresh.issue == [(iid, s) for s in range(5)]
    # Slot 1 was seen online after its config; its runner is not listed: it took a job and left,
    # or the paged listing missed it. A fresh config once GitHub says the runner is gone.
    slots = {(iid, s): SlotRecord(issued_at=10.0, seen_at=20.0) for s in range(5)}
    runners = [runner(iid, s) for s in (0, 2, 3, 4)]
    refill = plan(nodes=[node()], slots=slots, runners=runners)
    assert (refill.issue, refill.issue_if_gone) == ([], [(iid, 1)])


def test_a_config_just_issued_is_given_time_to_show_in_the_runner_list() -> None:
    iid = "i-00000000000000001"
    slots = {(iid, s): SlotRecord(issued_at=HOUR - REFILL_GRACE_S / 2) for s in range(5)}
    assert plan(nodes=[node()], slots=slots).issue_if_gone == []
    slots = {(iid, s): SlotRecord(issued_at=HOUR - REFILL_GRACE_S - 1) for s in range(5)}
    assert len(plan(nodes=[node()], slots=slots).issue_if_gone) == 5


def test_an_offline_runner_restarts_after_its_grace_and_a_booting_node_gets_its_boot_time() -> None:
    iid = "i-00000000000000001"
    offline = [runner(iid, s, online=False) for s in range(5)]
    booting = plan(nodes=[node(launched=HOUR - 600)], slots={(iid, s): SlotRecord(issued_at=HOUR - 600) for s in range(5)}, runners=offline)
    assert booting.deregister == []
    stuck = {(iid, s): SlotRecord(issued_at=HOUR - SLOT_RESTART_S - 1) for s in range(5)}
    late = plan(nodes=[node(launched=0.0)], slots=stuck, runners=offline)
    assert len(late.deregister) == 5
    assert len(late.issue) == 5


def test_draining_deregisters_idle_runners_keeps_busy_ones_and_retires_empty_nodes() -> None:
    a, b = "i-00000000000000001", "i-00000000000000002"
    now = window(block(), POOL).accept_until + 1
    runners = [runner(a, 0, busy=True), runner(a, 1), runner(b, 0, rid=300)]
    p = plan(nodes=[node(a), node(b)], runners=runners, now=now, slots={(b, 1): SlotRecord(issued_at=1.0)})
    assert sorted(d.runner_id for d in p.deregister) == [101, 300]
    assert p.retire == [(b, "block cr-1 is draining and the node runs no job")]
    assert p.withdraw == [(b, 1)]  # an unread config is deleted
    assert p.issue == []
    # b's other slots were not in the listing: each is confirmed not running a job first.
    assert p.retire_unless_busy == {b: tuple(name(b, s) for s in range(1, 5))}


def test_a_job_still_running_when_the_nodes_must_go_is_reported() -> None:
    a = "i-00000000000000001"
    now = window(block(), POOL).terminate_at - DRAIN_MARGIN_S
    p = plan(nodes=[node(a)], runners=[runner(a, 0, busy=True)], now=now)
    assert p.overran == [(a, 0)]


def test_faulty_slots_are_not_refilled_and_ghost_runners_are_removed() -> None:
    a = "i-00000000000000001"
    slots = {(a, 2): SlotRecord(issued_at=1.0, seen_at=2.0, faulty="XID 79")}
    ghost = GithubRunner(900, name("i-0000000000000dead", 0), False, False)
    p = plan(nodes=[node(a)], slots=slots, runners=[runner(a, 2), ghost])
    assert (a, 2) not in p.issue
    assert {d.runner_id for d in p.deregister} == {102, 900}


def test_the_report_counts_paid_busy_and_idle_gpus() -> None:
    a = "i-00000000000000001"
    report = plan(nodes=[node(a)], runners=[runner(a, 0, busy=True), runner(a, 1, busy=True)]).report["cr-1"]
    assert report["paid_gpus"] == 16
    assert report["busy_gpus"] == 5
    assert report["idle_gpus"] == 11
    assert report["unlaunched_gpus"] == 8


def test_renewal_only_when_opted_in_demand_persists_and_no_later_block_is_held() -> None:
    renewing = dataclasses.replace(POOL, renew=True)
    ending = block(start=-20 * HOUR, hours=24)
    assert not should_renew(POOL, [ending], queued_jobs=5, busy_share=1.0, now=0.0)
    assert should_renew(renewing, [ending], queued_jobs=5, busy_share=0.0, now=0.0)
    assert should_renew(renewing, [ending], queued_jobs=0, busy_share=0.6, now=0.0)
    assert not should_renew(renewing, [ending], queued_jobs=0, busy_share=0.2, now=0.0)
    assert not should_renew(renewing, [block(start=0.0, hours=48)], queued_jobs=5, busy_share=1.0, now=0.0)
    later = dataclasses.replace(ending, id="cr-2", state="scheduled", start=4 * HOUR, end=28 * HOUR)
    assert not should_renew(renewing, [ending, later], queued_jobs=5, busy_share=1.0, now=0.0)


def test_slot_runner_names_map_back_to_node_and_slot() -> None:
    assert slot_of(name("i-0123456789abcdef0", 3)) == ("i-0123456789abcdef0", 3)
    assert slot_of("prod-h100-i-0123456789abcdef0") is None


def test_nodes_ec2_lists_are_adopted_and_ones_it_lost_are_gone_after_the_grace() -> None:
    from lambda_src.core.block_planner import plan_node_sync
    from lambda_src.core.planner import LISTING_GRACE_S

    known = {"i-1": node("i-1", launched=0.0), "i-2": node("i-2", launched=0.0), "i-3": node("i-3", launched=HOUR)}
    adopt, gone = plan_node_sync(known, ["i-1", "i-9"], now=HOUR + LISTING_GRACE_S / 2)
    assert adopt == ["i-9"]
    assert gone == ["i-2"]  # i-3 was launched too recently for the listing to be trusted
