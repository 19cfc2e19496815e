"""Capacity blocks end to end on a virtual clock: the real webhook, block manager, ledger
(moto DynamoDB), runner configs (moto SSM) and GitHub client against our fake GitHub; EC2's
capacity blocks through our own boundary fake (moto has none)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from estate.local.fake_block_ec2 import FakeBlockEc2
from estate.local.fake_github import jit_runner
from estate.local.plane import LocalPlane
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.aws.jit_parameters import INSTANCE_ARN_TAG
from lambda_src.core.block_planner import DRAIN_MARGIN_S, TERMINATION_LEAD_S, WARNING_LEAD_S
from lambda_src.core.fleet_state import slot_runner_name
from lambda_src.core.planner import LISTING_GRACE_S
from lambda_src.functions.block_manager import BlockManager
from tests.conftest import EXAMPLE_CONFIGS, WORKING_HOURS, fixed_clock

POOL = "gpu-h100-cb"
H100 = ["self-hosted", "linux", "x64", "gpu", "h100"]
SLOTS = 5  # 1x4+4x1 on a p5.48xlarge
BLOCK = "cr-0a1b2c3d4e5f60718"  # the id the example pool names
HOUR = 3600.0


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    # Whole seconds: EC2 reports block dates to the second.
    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    plane.serve_webhook()
    yield plane
    plane.stop()


@pytest.fixture
def ec2(local: LocalPlane) -> FakeBlockEc2:
    subnets = local.settings.pools[POOL].subnet_ids
    return FakeBlockEc2(local.clock, {s: f"us-east-1{'ab'[i % 2]}" for i, s in enumerate(subnets)})


@pytest.fixture
def manager(local: LocalPlane, ec2: FakeBlockEc2) -> BlockManager:
    return BlockManager(
        settings=local.settings,
        ledger=local.plane.ledger,
        ec2=BlockEc2(ec2, local.settings.environment),
        jit=local.plane.jit,
        github=local.plane.github,
        clock=local.clock,
        sleep=lambda s: None,
    )


def slot_name(local: LocalPlane, iid: str, slot: int) -> str:
    pool = local.settings.pools[POOL]
    return slot_runner_name(pool.name_prefix, local.settings.environment, POOL, iid, slot)


def slot_config(local: LocalPlane, iid: str, slot: int) -> dict[str, Any] | None:
    """What the node's slot manager does for one slot: read its config once, delete it."""
    name = local.plane.jit.name(iid, slot)
    found = local.ssm.call("DescribeParameters", {"ParameterFilters": [{"Key": "Name", "Values": [name]}]})["Parameters"]
    if not found:
        return None
    value = local.ssm.call("GetParameter", {"Name": name, "WithDecryption": True})["Parameter"]["Value"]
    local.ssm.call("DeleteParameter", {"Name": name})
    runner_id, name = jit_runner(value)
    return {"runner_id": runner_id, "name": name}


def start_slots(local: LocalPlane, iid: str, slots: range = range(SLOTS)) -> list[str]:
    """The node's runners start: each reads its config and comes online."""
    names = []
    for slot in slots:
        config = slot_config(local, iid, slot)
        assert config is not None, f"slot {slot} of {iid} has no runner config"
        local.github.connect(config["name"])
        names.append(config["name"])
    return names


def queue_arn(pool: str, kind: str) -> str:
    """The manager's queues of a pool in the local plane: `events` (EventBridge) or `reports` (its nodes)."""
    return f"arn:aws:sqs:us-east-1:123456789012:local-{pool}-{kind}"


def event(detail_type: str, detail: dict[str, Any], pool: str = POOL, queue: str = "events") -> dict[str, Any]:
    """An EC2 event as EventBridge puts it on a pool's events queue, as Lambda hands it over."""
    body = json.dumps({"source": "aws.ec2", "detail-type": detail_type, "detail": detail})
    return {"messageId": f"m-{detail_type[:8]}", "body": body, "eventSourceARN": queue_arn(pool, queue)}


def slot_report(
    kind: str, iid: str, slot: int, sender: str | None = None, reason: str = "", pool: str = POOL, queue: str = "reports"
) -> dict[str, Any]:
    body = {"kind": kind, "instance": iid, "slot": slot, "reason": reason}
    return {
        "messageId": f"r-{iid}-{slot}",
        "body": json.dumps(body),
        "attributes": {"SenderId": sender or f"AROAEXAMPLE:{iid}"},
        "eventSourceARN": queue_arn(pool, queue),
    }


def our_runners(local: LocalPlane) -> list[str]:
    return sorted(r.name for r in local.github.runners.values() if POOL in r.name)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# ---- the whole life of a block ------------------------------------------------------------


def test_a_block_runs_jobs_refills_slots_and_drains_before_aws_takes_it_back(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    t0 = local.clock()
    ec2.add_block(BLOCK, "p5.48xlarge", total=2, start=t0 + 600, hours=24)
    end = t0 + 600 + 24 * HOUR
    pool = local.settings.pools[POOL]

    # A job queued before the block starts waits: nothing can launch into a scheduled block.
    first = local.github.queue_job(H100)
    local.pump(manager.scale_up)
    assert ec2.live() == []

    # The block becomes active: one node for the one job (a node has five slots).
    local.clock.advance(600)
    assert manager.handle_events([event("Capacity Block Delivered", {"capacity-reservation-id": BLOCK})]) == []
    (node,) = ec2.live(BLOCK)
    launch = ec2.launch_requests[-1]
    assert launch["InstanceMarketOptions"] == {"MarketType": "capacity-block"}
    assert launch["CapacityReservationSpecification"]["CapacityReservationTarget"]["CapacityReservationId"] == BLOCK

    # Every slot got a runner config only this node may read, labelled for its slot.
    tags = local.ssm.call("ListTagsForResource", {"ResourceType": "Parameter", "ResourceId": local.plane.jit.name(node, 0)})["TagList"]
    assert {t["Key"]: t["Value"] for t in tags} == {INSTANCE_ARN_TAG: f"arn:aws:ec2:us-east-1:123456789012:instance/{node}"}
    names = start_slots(local, node)
    labels = {r.name: set(r.labels) for r in local.github.runners.values()}
    assert labels[names[0]] >= {*H100, "sm90", "4gpu"}
    assert labels[names[1]] >= {*H100, "sm90", "1gpu"}
    manager.manage()

    # The job runs on a slot; when it ends the slot's ephemeral runner is gone and the node
    # reports the slot free: a fresh runner config is there within the same invocation.
    local.github.start_job(first.id, names[1])
    local.clock.advance(1800)
    local.github.finish_job(first.id)
    assert manager.handle_events([slot_report("slot-free", node, 1)]) == []
    assert slot_config(local, node, 1) == {"runner_id": pytest.approx(0, abs=10**9), "name": names[1]}
    local.github.connect(names[1])

    # Close to the end: a job that starts now must still finish before EC2 terminates nodes.
    accept_until = end - TERMINATION_LEAD_S - pool.job_timeout_s - DRAIN_MARGIN_S
    local.clock.advance(accept_until - 60 - local.clock())
    late_but_fits = local.github.queue_job(H100)
    local.pump(manager.scale_up)
    local.github.start_job(late_but_fits.id, names[0])
    manager.manage()
    assert len(our_runners(local)) == SLOTS

    # Past the cut-off: idle runners are deregistered, the busy one keeps its job, and a new
    # job is never started on this block (no runner of the block can take it any more).
    local.clock.advance(120)
    manager.manage()
    assert our_runners(local) == [names[0]]
    too_late = local.github.queue_job(H100)
    local.pump(manager.scale_up)
    assert ec2.live(BLOCK) == [node]
    assert our_runners(local) == [names[0]]
    assert local.github.jobs[too_late.id].status == "queued"

    # The last job ends in time; the node is retired and nothing is left registered before
    # EC2's own termination (30 minutes before the end) and the expiration warning.
    local.clock.advance(pool.job_timeout_s - 120)
    local.github.finish_job(late_but_fits.id)
    manager.manage()
    assert local.clock() < end - TERMINATION_LEAD_S
    assert ec2.live() == []
    assert our_runners(local) == []
    assert all(slot_config(local, node, s) is None for s in range(SLOTS))
    local.clock.advance(end - WARNING_LEAD_S - local.clock())
    warning = {"capacity-reservation-id": BLOCK, "end-date": iso(end)}
    assert manager.handle_events([event("Capacity Block Expiration Warning", warning)]) == []
    assert ec2.aws_terminates_ending_blocks() == []


def test_a_node_lost_mid_block_is_replaced_while_capacity_remains(local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager) -> None:
    t0 = local.clock()
    ec2.add_block(BLOCK, "p5.48xlarge", total=2, start=t0, hours=24)
    for _ in range(2):
        local.github.queue_job(H100)
    local.pump(manager.scale_up)
    (node,) = ec2.live(BLOCK)
    names = start_slots(local, node)

    ec2.lose(node)
    local.clock.advance(LISTING_GRACE_S + 1)
    manager.manage()
    (replacement,) = ec2.live(BLOCK)
    assert replacement != node
    assert not set(names) & set(our_runners(local))  # the lost node's runners are deregistered
    assert len(start_slots(local, replacement)) == SLOTS


def test_a_node_launched_by_a_crashed_invocation_is_adopted_and_supplied(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=local.clock(), hours=24)
    pool = local.settings.pools[POOL]
    request = {
        "MinCount": 1, "MaxCount": 1, "InstanceType": "p5.48xlarge", "InstanceMarketOptions": {"MarketType": "capacity-block"},
        "CapacityReservationSpecification": {"CapacityReservationTarget": {"CapacityReservationId": BLOCK}},
        "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": pool.subnet_ids[0]}],
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [
            {"Key": "runner-estate:managed", "Value": "true"}, {"Key": "runner-estate:environment", "Value": "local"},
            {"Key": "runner-estate:pool", "Value": POOL}]}],
    }  # fmt: skip
    (orphan,) = [i["InstanceId"] for i in ec2.run_instances(**request)["Instances"]]
    manager.manage()
    assert local.plane.ledger.instance(orphan).block == BLOCK  # type: ignore[union-attr]
    assert len(start_slots(local, orphan)) == SLOTS


def test_a_dead_runner_is_deregistered_and_its_slot_restarted(local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager) -> None:
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=local.clock(), hours=24)
    local.github.queue_job(H100)
    local.pump(manager.scale_up)
    (node,) = ec2.live()
    names = start_slots(local, node)
    manager.manage()  # every runner seen online

    local.github.runner_named(names[2]).status = "offline"  # its process died
    old_id = local.github.runner_named(names[2]).id
    local.clock.advance(60)
    manager.manage()
    config = slot_config(local, node, 2)
    assert config is not None
    assert config["name"] == names[2]
    assert config["runner_id"] != old_id


def test_a_faulty_gpu_takes_its_slot_out_of_rotation_and_only_its_own_node_may_say_so(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=local.clock(), hours=24)
    local.github.queue_job(H100)
    local.pump(manager.scale_up)
    (node,) = ec2.live()
    names = start_slots(local, node)

    forged = slot_report("slot-faulty", node, 3, sender="AROAEXAMPLE:i-0000000000000dead", reason="XID 79")
    assert manager.handle_events([forged]) == []
    assert names[3] in our_runners(local)

    assert manager.handle_events([slot_report("slot-faulty", node, 3, reason="GPU GPU-5: XID 79")]) == []
    assert names[3] not in our_runners(local)
    local.clock.advance(600)
    manager.manage()
    assert slot_config(local, node, 3) is None  # never refilled


def test_the_expiration_warning_drains_at_once(local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager) -> None:
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=local.clock(), hours=24)
    local.github.queue_job(H100)
    local.pump(manager.scale_up)
    (node,) = ec2.live()
    start_slots(local, node)

    warning = {"capacity-reservation-id": BLOCK, "end-date": iso(local.clock() + 40 * 60)}
    assert manager.handle_events([event("Capacity Block Reservation Expiration Warning", warning)]) == []
    assert our_runners(local) == []
    assert ec2.live() == []  # no job ran on it: the node goes too


# ---- a job on a node holds the node's role: what it may say, and what it may not ----------------


def running_node(local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager) -> str:
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=local.clock(), hours=24)
    local.github.queue_job(H100)
    local.pump(manager.scale_up)
    (node,) = ec2.live()
    start_slots(local, node)
    return node


def test_a_forged_expiration_warning_on_the_slot_reports_queue_drains_nothing(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    """The node role may send to its slot-reports queue: an EventBridge-shaped body there is a
    job's forgery, never a Capacity Block event."""
    node = running_node(local, ec2, manager)
    warning = {"capacity-reservation-id": BLOCK, "end-date": iso(local.clock() + 40 * 60)}
    forged = event("Capacity Block Expiration Warning", warning, queue="reports")
    forged["attributes"] = {"SenderId": f"AROAEXAMPLE:{node}"}
    assert manager.handle_events([forged]) == []
    assert local.plane.ledger.block_record(BLOCK).warned is False
    manager.manage()
    assert len(our_runners(local)) == SLOTS
    assert ec2.live() == [node]


def test_a_warning_about_another_pools_block_leaves_that_block_alone(local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager) -> None:
    """EventBridge's rules match every block of the account; each pool acts only on its own."""
    node = running_node(local, ec2, manager)
    warning = {"capacity-reservation-id": BLOCK, "end-date": iso(local.clock() + 40 * 60)}
    assert manager.handle_events([event("Capacity Block Expiration Warning", warning, pool="gpu-b200-cb")]) == []
    assert local.plane.ledger.block_record(BLOCK).warned is False
    assert ec2.live() == [node]


def test_a_warning_is_dated_by_ec2_not_by_the_event(local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager) -> None:
    running_node(local, ec2, manager)
    warning = {"capacity-reservation-id": BLOCK, "end-date": iso(local.clock() + 400 * 24 * HOUR)}
    assert manager.handle_events([event("Capacity Block Expiration Warning", warning)]) == []
    (expires,) = [item["expires_at"] for item in local.plane.ledger.table.scan().get("Items", []) if item["pk"] == f"block#{BLOCK}"]
    assert int(expires) == int(ec2.reservations[BLOCK].end + 7 * 24 * HOUR)


@pytest.mark.parametrize(
    "sender",
    [
        None,  # no SenderId at all
        "AIDAEXAMPLEUSER",  # an IAM user, not an instance role
        "AROAEXAMPLE:some-session",  # a role session not named after an instance
        "AROAEXAMPLE:i-0000000000000dead",  # another instance
    ],
)
def test_a_slot_report_is_believed_only_from_the_node_it_names(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager, sender: str | None
) -> None:
    node = running_node(local, ec2, manager)
    forged = slot_report("slot-faulty", node, 2, reason="XID 79")
    forged["attributes"] = {} if sender is None else {"SenderId": sender}
    assert manager.handle_events([forged]) == []
    assert local.plane.ledger.slots(POOL)[(node, 2)].faulty is None


def test_a_node_may_not_report_through_another_pools_queue_or_an_unknown_one(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    node = running_node(local, ec2, manager)
    elsewhere = slot_report("slot-faulty", node, 2, reason="XID 79", pool="gpu-b200-cb")
    unknown = {**slot_report("slot-faulty", node, 2, reason="XID 79"), "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:other"}
    missing = {k: v for k, v in slot_report("slot-faulty", node, 2, reason="XID 79").items() if k != "eventSourceARN"}
    assert manager.handle_events([elsewhere, unknown, missing]) == []
    assert local.plane.ledger.slots(POOL)[(node, 2)].faulty is None


def test_a_busy_slot_runner_missing_from_one_listing_is_neither_replaced_nor_its_node_retired(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    """The org's runner listing pages while ephemeral runners are deleted: a busy slot runner
    can fall between pages. Its slot is not refilled (a second runner of that name cannot be
    registered while it runs) and a draining node is not retired under its job."""
    pool = local.settings.pools[POOL]
    end = local.clock() + 24 * HOUR
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=local.clock(), hours=24)
    job = local.github.queue_job(H100)
    local.pump(manager.scale_up)
    (node,) = ec2.live()
    names = start_slots(local, node)
    manager.manage()
    local.github.start_job(job.id, names[2])
    real_listing = local.plane.github.list_runners
    local.plane.github.list_runners = lambda: [r for r in real_listing() if r.name != names[2]]  # type: ignore[method-assign]

    local.clock.advance(600)
    assert all("failed" not in summary for summary in manager.manage())
    assert slot_config(local, node, 2) is None  # no second config for the busy slot
    local.clock.advance(end - TERMINATION_LEAD_S - pool.job_timeout_s - local.clock())  # draining now
    manager.manage()
    assert ec2.live() == [node]
    assert local.github.runner_named(names[2]).busy


def test_a_block_with_less_time_left_than_the_longest_job_launches_nothing(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    pool = local.settings.pools[POOL]
    hours = (pool.job_timeout_s + TERMINATION_LEAD_S) / HOUR
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=local.clock() - 60, hours=hours)
    local.github.queue_job(H100)
    local.pump(manager.scale_up)
    assert ec2.live() == []
    assert our_runners(local) == []


def test_events_that_are_not_ours_or_broken_are_dropped_not_retried(local: LocalPlane, manager: BlockManager) -> None:
    records = [
        {"messageId": "a", "body": "not json"},
        event("EC2 Instance State-change Notification", {"instance-id": "i-0123456789abcdef0", "state": "running"}),
        event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-0123456789abcdef0"}),
        slot_report("slot-free", "i-0123456789abcdef0", 0),
    ]
    assert manager.handle_events(records) == []


def test_a_throttled_launch_or_a_github_outage_retries_the_jobs_message(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=local.clock(), hours=24)
    ec2.launch_faults.append("RequestLimitExceeded")
    local.github.queue_job(H100)
    local.pump(manager.scale_up)  # the failed message stays on the queue
    assert ec2.live() == []
    local.github.fail_next(502, "generate-jitconfig", times=4)  # every retry of one call
    local.pump(manager.scale_up)  # launched, but no runner config could be made: retried
    (node,) = ec2.live()
    local.pump(manager.scale_up)
    assert len(start_slots(local, node)) == SLOTS
    assert local.dlq_depth(POOL) == 0


# ---- buying the next block ----------------------------------------------------------------


def renewing(local: LocalPlane, manager: BlockManager, max_price: float) -> None:
    """The pool as if its file said `renew: true, max_price_usd: <max_price>, duration_hours: 24`."""
    pools = dict(local.settings.pools)
    pools[POOL] = dataclasses.replace(pools[POOL], renew=True, renew_max_price_usd=max_price, renew_duration_hours=24)
    manager.settings = dataclasses.replace(local.settings, pools=pools)
    manager.__dict__.pop("pools", None)  # the cached view of the capacity-block pools


def offering(ec2: FakeBlockEc2, oid: str, start: float, fee: float) -> None:
    ec2.offerings.append({"CapacityBlockOfferingId": oid, "InstanceType": "p5.48xlarge", "AvailabilityZone": "us-east-1a",
                          "InstanceCount": 1, "StartDate": datetime.fromtimestamp(start, UTC), "CapacityBlockDurationHours": 24,
                          "UpfrontFee": str(fee)})  # fmt: skip


def test_the_next_block_is_bought_only_when_the_pool_opts_in_within_its_price(
    local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager
) -> None:
    t0 = local.clock()
    ec2.add_block(BLOCK, "p5.48xlarge", total=1, start=t0 - 20 * HOUR, hours=24)
    offering(ec2, "cbo-cheap", t0 + 4 * HOUR, 700.0)
    offering(ec2, "cbo-dear", t0 + 4 * HOUR, 900.0)
    for _ in range(6):
        local.github.queue_job(H100)  # more demand than the block can serve in time
    local.pump(manager.scale_up)
    assert ec2.purchases == []  # off by default

    renewing(local, manager, max_price=650.0)
    manager.manage()
    assert ec2.purchases == []  # nothing within the price limit

    renewing(local, manager, max_price=800.0)
    manager.manage()
    (bought,) = ec2.purchases
    assert ec2.reservations[bought].tags["runner-estate:pool"] == POOL
    manager.manage()
    assert len(ec2.purchases) == 1  # a scheduled block is already held
