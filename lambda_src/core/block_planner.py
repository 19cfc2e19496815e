"""Capacity-block decisions, pure: when to launch nodes into a block, which slots get a fresh
runner, and how a block drains so no job is cut off when AWS takes the nodes back.

A block is paid for whether or not it runs jobs; its nodes live for the block, not per job.
Each node is split into slots (lambda_src/core/gpu_slots.py); each slot runs one ephemeral JIT
runner at a time and gets a fresh one after every job, until the block drains.

Timeline of a block ending at `end` (EC2 sends the expiration warning 40 minutes before the
end and starts terminating instances 30 minutes before it):

    ... accepting ... | accept_until ... draining ... | terminate_at (end - 30 min) | end

`accept_until` leaves room for the pool's longest job (`job_timeout_s`) plus a margin for
the manager's cycle, so a job a slot takes before it always finishes before `terminate_at`.
The Lambdas (lambda_src/functions/block_manager.py) and the simulator run these functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lambda_src.core.fleet_state import BlockRecord, GithubRunner, Instance, SlotRecord, slot_of, slot_runner_name
from lambda_src.core.planner import LISTING_GRACE_S
from lambda_src.core.settings import PoolSettings

WARNING_LEAD_S = 40 * 60  # EC2's expiration warning comes this long before the end
TERMINATION_LEAD_S = 30 * 60  # ...and instances begin terminating this long before it
DRAIN_MARGIN_S = 5 * 60  # a manager cycle (1 min) plus the time an idle runner needs to be deregistered
SLOT_RESTART_S = 5 * 60  # a fresh runner on a running node must come online within this
REFILL_GRACE_S = 30.0  # a config issued this recently may not show in GitHub's runner list yet
RENEW_LEAD_S = 24 * 3600  # look for the next block when the last one ends within this

ACTIVE = "active"
# The EventBridge events the manager acts on; AWS documents both spellings of each.
CB_DETAIL_TYPES = ("Capacity Block Delivered", "Capacity Block Reservation Delivered")
CB_WARNING_TYPES = ("Capacity Block Expiration Warning", "Capacity Block Reservation Expiration Warning")
STATE_CHANGE = "EC2 Instance State-change Notification"


@dataclass(frozen=True)
class Block:
    """A capacity reservation of type capacity-block, as EC2 describes it."""

    id: str
    instance_type: str
    availability_zone: str
    total: int
    available: int
    state: str  # payment-pending | scheduled | active | expired | cancelled | ...
    start: float
    end: float


@dataclass(frozen=True)
class Window:
    accept_until: float
    terminate_at: float


def window(block: Block, pool: PoolSettings, warned: bool = False, now: float = 0.0) -> Window:
    terminate_at = block.end - TERMINATION_LEAD_S
    accept_until = min(terminate_at - pool.job_timeout_s - DRAIN_MARGIN_S, block.end - WARNING_LEAD_S)
    if warned:  # from the warning on, whatever the clock says
        accept_until = min(accept_until, now)
    return Window(accept_until, terminate_at)


def phase(block: Block, win: Window, now: float) -> str:
    """waiting (not started), accepting, draining (no new jobs) or ended (nodes must be gone)."""
    if block.state in {"expired", "cancelled", "failed", "unsupported"} or now >= win.terminate_at:
        return "ended"
    if block.state != ACTIVE or now < block.start:
        return "waiting"
    return "accepting" if now < win.accept_until else "draining"


@dataclass(frozen=True)
class Deregister:
    runner_id: int
    instance_id: str | None
    slot: int | None
    reason: str


@dataclass
class BlockPlan:
    launch: list[tuple[str, int]] = field(default_factory=list)  # (block id, nodes)
    targets: dict[str, int] = field(default_factory=dict)  # new BlockRecord.target per block
    issue: list[tuple[str, int]] = field(default_factory=list)  # (instance, slot): store a fresh runner config
    # (instance, slot): its runner is missing from the one listing. A paged listing shifts as
    # ephemeral runners are deleted, so a busy runner can be missed: the shell asks GitHub for
    # the runner by name and issues a fresh config only if it is really gone.
    issue_if_gone: list[tuple[str, int]] = field(default_factory=list)
    seen: list[tuple[str, int]] = field(default_factory=list)  # (instance, slot): runner online, remember it
    withdraw: list[tuple[str, int]] = field(default_factory=list)  # unread configs to delete: the block drains
    deregister: list[Deregister] = field(default_factory=list)
    retire: list[tuple[str, str]] = field(default_factory=list)  # (instance, why): terminate the node
    # Nodes to retire whose slots' runners the listing did not show: node -> those runner names,
    # each confirmed not running a job before the node goes.
    retire_unless_busy: dict[str, tuple[str, ...]] = field(default_factory=dict)
    overran: list[tuple[str, int]] = field(default_factory=list)  # busy when the block's nodes must go
    report: dict[str, dict[str, Any]] = field(default_factory=dict)  # per block: what ran and what sat idle
    renew: bool = False  # buy the next block (only where the pool opts in)


def plan_blocks(
    pool: PoolSettings,
    environment: str,
    blocks: Iterable[Block],
    records: Mapping[str, BlockRecord],
    nodes: Iterable[Instance],
    slots: Mapping[tuple[str, int], SlotRecord],
    runners: Iterable[GithubRunner],
    queued_jobs: int,
    now: float,
) -> BlockPlan:
    """One cycle of a capacity-block pool. `nodes` are its live nodes (Instance.block set),
    `runners` one listing of the org's runners, `queued_jobs` the jobs waiting for the pool."""
    plan = BlockPlan()
    by_block = {b.id: b for b in blocks}
    by_name = {r.name: r for r in runners}
    per_node = len(pool.slot_gpus)
    live_nodes: dict[str, list[Instance]] = {b: [] for b in by_block}
    free_slots = 0
    named: set[str] = set()

    for node in nodes:
        block = by_block.get(node.block or "")
        if block is None:
            plan.retire.append((node.id, f"its block {node.block} is not one of this pool's"))
            continue
        record = records.get(block.id, BlockRecord())
        win = window(block, pool, record.warned, now)
        stage = phase(block, win, now)
        live_nodes[block.id].append(node)
        busy_on_node = 0
        unlisted: list[str] = []
        for index in range(per_node):
            name = slot_runner_name(pool.name_prefix, environment, pool.name, node.id, index)
            named.add(name)
            runner = by_name.get(name)
            if runner is None:
                unlisted.append(name)
            rec = slots.get((node.id, index), SlotRecord())
            if runner is not None and runner.busy:
                busy_on_node += 1
                if stage == "ended" or now >= win.terminate_at - DRAIN_MARGIN_S:
                    plan.overran.append((node.id, index))
                continue
            if stage != "accepting" or rec.faulty:
                if runner is not None:
                    why = f"slot out of rotation: {rec.faulty}" if rec.faulty else f"block {block.id} is {stage}"
                    plan.deregister.append(Deregister(runner.id, node.id, index, why))
                elif rec.issued_at is not None and (rec.seen_at is None or rec.seen_at < rec.issued_at):
                    plan.withdraw.append((node.id, index))
                continue
            free_slots += _accepting_slot(plan, pool, node, index, runner, rec, now)
        if stage in {"draining", "ended"} and busy_on_node == 0:
            plan.retire.append((node.id, f"block {block.id} is {stage} and the node runs no job"))
            if unlisted:
                plan.retire_unless_busy[node.id] = tuple(unlisted)

    # Runners named like our slots whose node is gone: never busy ones (a job still runs there).
    for name, runner in by_name.items():
        found = slot_of(name)
        if found is None or name in named or runner.busy:
            continue
        if slot_runner_name(pool.name_prefix, environment, pool.name, found[0], found[1]) == name:
            plan.deregister.append(Deregister(runner.id, None, None, "ghost: its node is gone"))

    _plan_launches(plan, pool, by_block, records, live_nodes, queued_jobs - free_slots, per_node, now)
    for block in by_block.values():
        plan.report[block.id] = _block_report(block, pool, records.get(block.id, BlockRecord()), live_nodes[block.id],
                                              by_name, environment, now, slots)  # fmt: skip
    busy = sum(r["busy_gpus"] for r in plan.report.values())
    paid = sum(r["paid_gpus"] for r in plan.report.values() if r["phase"] == "accepting")
    plan.renew = should_renew(pool, by_block.values(), queued_jobs, busy / paid if paid else 0.0, now)
    return plan


def _accepting_slot(
    plan: BlockPlan, pool: PoolSettings, node: Instance, index: int, runner: GithubRunner | None, rec: SlotRecord, now: float
) -> int:
    """Keep one slot of an accepting block supplied with a runner. Returns 1 when the slot is
    free for a queued job (an idle runner, or one starting), else 0."""
    key = (node.id, index)
    issued_after_seen = rec.issued_at is not None and (rec.seen_at is None or rec.seen_at < rec.issued_at)
    if runner is not None and runner.online:
        if issued_after_seen:
            plan.seen.append(key)
        return 1
    if rec.issued_at is None:
        plan.issue.append(key)
        return 1
    if runner is None:
        # Its runner took a job and left (ephemeral), or never registered: a fresh one either
        # way, once GitHub confirms the runner is gone (the listing may have missed it).
        if not issued_after_seen or now - rec.issued_at > REFILL_GRACE_S:
            plan.issue_if_gone.append(key)
        return 1
    # Registered but offline: starting, or its process died.
    started = max(rec.issued_at, node.launched_at)
    grace = pool.boot_timeout_s if now - node.launched_at < pool.boot_timeout_s else SLOT_RESTART_S
    if not issued_after_seen or now - started > grace:
        plan.deregister.append(Deregister(runner.id, node.id, index, "runner offline: restarting the slot"))
        plan.issue.append(key)
    return 1


def _plan_launches(
    plan: BlockPlan,
    pool: PoolSettings,
    blocks: Mapping[str, Block],
    records: Mapping[str, BlockRecord],
    live: Mapping[str, list[Instance]],
    unserved: int,
    per_node: int,
    now: float,
) -> None:
    """Nodes for queued jobs no slot can take, in the accepting block that lasts longest;
    and a replacement for every node a block lost while it still accepts jobs."""
    wanted = math.ceil(max(0, unserved) / per_node) if per_node else 0
    room_total = max(0, pool.max_instances - sum(len(n) for n in live.values()))
    accepting = [b for b in blocks.values() if phase(b, window(b, pool, records.get(b.id, BlockRecord()).warned, now), now) == "accepting"]
    for block in sorted(accepting, key=lambda b: b.end, reverse=True):
        have = len(live[block.id])
        target = min(block.total, max(records.get(block.id, BlockRecord()).target, have))
        # A lost node's replacement serves queued jobs as well as any new node would.
        count = min(max(target - have, wanted), block.total - have, room_total, block.available)
        wanted -= count
        room_total -= count
        if count:
            plan.launch.append((block.id, count))
        if max(target, have + count) != records.get(block.id, BlockRecord()).target:
            plan.targets[block.id] = max(target, have + count)


def _block_report(
    block: Block,
    pool: PoolSettings,
    record: BlockRecord,
    nodes: list[Instance],
    runners: Mapping[str, GithubRunner],
    environment: str,
    now: float,
    slots: Mapping[tuple[str, int], SlotRecord] | None = None,
) -> dict[str, Any]:
    """GPUs the block pays for, how many run a job right now, and its slots by state."""
    gpus_per_node = sum(pool.slot_gpus)
    busy = busy_slots = faulty_slots = 0
    for node in nodes:
        for index, gpus in enumerate(pool.slot_gpus):
            runner = runners.get(slot_runner_name(pool.name_prefix, environment, pool.name, node.id, index))
            if runner is not None and runner.busy:
                busy += gpus
                busy_slots += 1
            elif (slots or {}).get((node.id, index), SlotRecord()).faulty:
                faulty_slots += 1
    win = window(block, pool, record.warned, now)
    paid = block.total * pool.gpus_per_node
    return {
        "phase": phase(block, win, now),
        "nodes": len(nodes),
        "capacity": block.total,
        "paid_gpus": paid,
        "busy_gpus": busy,
        "idle_gpus": paid - busy,
        "unlaunched_gpus": (block.total - len(nodes)) * pool.gpus_per_node,
        "unslotted_gpus": len(nodes) * (pool.gpus_per_node - gpus_per_node),
        "hours_left": round(max(0.0, block.end - now) / 3600, 2),
        "busy_slots": busy_slots,
        "faulty_slots": faulty_slots,
        "idle_slots": len(nodes) * len(pool.slot_gpus) - busy_slots - faulty_slots,
    }


def plan_node_sync(known: Mapping[str, Instance], listed: Iterable[str], now: float) -> tuple[list[str], list[str]]:
    """Ledger and EC2 in agreement for capacity-block nodes: (ids EC2 lists but the ledger
    lacks — a launch that crashed before recording it — to adopt, since nodes live for their
    block; ids the ledger holds but EC2 no longer lists past the listing's grace, gone)."""
    listed = set(listed)
    adopt = sorted(listed - set(known))
    gone = sorted(iid for iid, inst in known.items() if iid not in listed and now - inst.launched_at > LISTING_GRACE_S)
    return adopt, gone


def should_renew(pool: PoolSettings, blocks: Iterable[Block], queued_jobs: int, busy_share: float, now: float) -> bool:
    """Buy the next block (only where the pool opts in): demand persists — jobs waiting, or
    most slots busy — the last block ends within a day, and no later block is already held."""
    if not pool.renew:
        return False
    upcoming = [b for b in blocks if b.state in {ACTIVE, "scheduled", "payment-pending"}]
    if any(b.state in {"scheduled", "payment-pending"} for b in upcoming):
        return False
    last_end = max((b.end for b in upcoming), default=now)
    return last_end - now <= RENEW_LEAD_S and (queued_jobs > 0 or busy_share >= 0.5)
