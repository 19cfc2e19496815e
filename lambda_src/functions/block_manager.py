"""The capacity-block manager's shell: read blocks, nodes, slots and runners; ask
lambda_src/core/block_planner.py; apply its plan. Serves `cb_scale_up` (queued jobs of
capacity-block pools), `cb_manager` (every minute, EventBridge's Capacity Block and
instance-state events, and the nodes' slot reports), the local plane and the tests.

The App key never leaves the control plane: a node's slots get one-job runner configs as
SecureStrings only that node may read (lambda_src/aws/jit_parameters.py).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.aws.jit_parameters import JitParameters
from lambda_src.aws.ledger import Ledger, planning_lock
from lambda_src.core.block_planner import CB_DETAIL_TYPES, CB_WARNING_TYPES, STATE_CHANGE, Block, BlockPlan, plan_blocks, plan_node_sync
from lambda_src.core.fleet_state import GithubRunner, Instance, runner_name, slot_runner_name
from lambda_src.core.job_messages import jobs_by_pool
from lambda_src.core.overflow import origin_of
from lambda_src.core.settings import ControlPlaneSettings, PoolSettings
from lambda_src.functions.run_workflows import name_run_workflows
from lambda_src.github.client import GithubClient

log = logging.getLogger("runner_estate.block_manager")

SLOT_REPORTS = frozenset({"slot-free", "slot-faulty"})
# SQS's SenderId for an instance role's session: "<role id>:<session>", the session named after the instance.
_SENDER_INSTANCE = re.compile(r"AROA[A-Z0-9]+:(i-[0-9a-f]{8,17})")


class BadReportError(ValueError):
    """A node's slot report that cannot be acted on (never retried)."""


@dataclass
class CycleReport:
    pool: str
    launched: list[str] = field(default_factory=list)
    issued: int = 0
    deregistered: int = 0
    retired: list[str] = field(default_factory=list)
    overran: int = 0
    bought: str | None = None
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "launched": len(self.launched),
            "issued": self.issued,
            "deregistered": self.deregistered,
            "retired": len(self.retired),
            "overran": self.overran,
            "bought": self.bought,
            "idle_gpus": sum(b["idle_gpus"] for b in self.blocks.values() if b["phase"] in {"accepting", "draining"}),
            "blocks": self.blocks,
        }


@dataclass
class BlockManager:
    settings: ControlPlaneSettings
    ledger: Ledger
    ec2: BlockEc2
    jit: JitParameters
    github: GithubClient
    clock: Callable[[], float]
    sleep: Callable[[float], None] = time.sleep
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)

    @cached_property
    def pools(self) -> dict[str, PoolSettings]:
        return {n: p for n, p in self.settings.pools.items() if p.capacity_type == "capacity-block"}

    # ---- entry points -----------------------------------------------------------------
    def scale_up(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Queued jobs of capacity-block pools: run those pools' cycles. Returns message ids to retry."""
        by_pool, poison = jobs_by_pool(records, self.settings.pools, self.clock())
        ours = {pool: [m for m, _ in items] for pool, items in by_pool.items() if pool in self.pools}
        return poison + self._cycles(ours)

    @cached_property
    def _sources(self) -> dict[str, tuple[PoolSettings, str]]:
        """Queue ARN -> (pool, what it carries): EventBridge's events, or the nodes' reports."""
        found: dict[str, tuple[PoolSettings, str]] = {}
        for pool in self.pools.values():
            queues = ((pool.events_queue_arn, "events"), (pool.reports_queue_arn, "reports"))
            found.update({arn: (pool, kind) for arn, kind in queues if arn})
        return found

    def handle_events(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """A batch from a pool's events queue (EventBridge only) or its slot-reports queue (its
        nodes only); which queue a record came from decides what it may say. Returns ids to retry."""
        by_pool: dict[str, list[str]] = {}
        for record in records:
            message_id = str(record.get("messageId", ""))
            try:
                source = self._sources.get(str(record.get("eventSourceARN", "")))
                if source is None:
                    raise BadReportError(f"from {record.get('eventSourceARN')!r}, not one of our queues")
                pool, kind = source
                body = json.loads(str(record.get("body", "")))
                if not isinstance(body, dict):
                    raise BadReportError("not a JSON object")
                if kind == "reports":
                    pools = self._node_report(pool, body, record.get("attributes", {}))
                else:
                    pools = self._eventbridge_event(pool, body)
            except (BadReportError, ValueError, KeyError, TypeError) as exc:
                log.error("dropped event %s: %s", message_id, exc)
                continue
            for name in pools:
                by_pool.setdefault(name, []).append(message_id)
        return sorted(set(self._cycles(by_pool)))

    def manage(self) -> list[dict[str, Any]]:
        """The schedule: every capacity-block pool, whatever events were lost. One pool's
        failure is logged and reported; the others still run."""
        runners = self.github.list_runners() if self.pools else []
        summaries = []
        for pool in sorted(self.pools):
            try:
                summaries.append(self.cycle(pool, runners).summary())
            except Exception as exc:
                log.exception("capacity-block cycle of pool %s failed", pool)
                summaries.append({**CycleReport(pool).summary(), "failed": str(exc)[:200]})
        return summaries

    def _cycles(self, by_pool: Mapping[str, list[str]]) -> list[str]:
        failures: list[str] = []
        runners = self.github.list_runners() if by_pool else []
        for pool, ids in sorted(by_pool.items()):
            try:
                self.cycle(pool, runners)
            except Exception:  # one pool's failure must not starve the others; SQS retries its messages
                log.exception("capacity-block cycle of pool %s failed", pool)
                failures += ids
        return failures

    def _node_report(self, pool: PoolSettings, body: Mapping[str, Any], attributes: Mapping[str, Any]) -> list[str]:
        """A node's slot report, believed only from that node: SQS names the sender's session,
        which EC2 names after the instance, so a job on one node cannot speak for another."""
        kind, instance, slot = str(body["kind"]), str(body["instance"]), int(body["slot"])
        if kind not in SLOT_REPORTS:
            raise BadReportError(f"unknown report {kind!r}")
        sender = _SENDER_INSTANCE.fullmatch(str(attributes.get("SenderId", "")))
        if sender is None or sender[1] != instance:
            raise BadReportError(f"{attributes.get('SenderId')!r} reported on {instance}")
        node = self.ledger.instance(instance, live_only=True)
        if node is None or node.pool != pool.name:
            raise BadReportError(f"{instance} is not a live node of pool {pool.name}")
        if not 0 <= slot < len(pool.slot_gpus):
            raise BadReportError(f"{instance} has no slot {slot}")
        if kind == "slot-faulty":
            reason = str(body.get("reason", "unhealthy GPU"))[:300]
            log.error("node %s slot %d leaves rotation: %s", instance, slot, reason)
            self.ledger.set_slot(node.pool, instance, slot, faulty=reason)
        return [node.pool]

    def _eventbridge_event(self, pool: PoolSettings, body: Mapping[str, Any]) -> list[str]:
        """An EC2 event EventBridge delivered to this pool's queue. The rules match every block
        of the account, so an event about another pool's block is that pool's (its own queue
        has a copy); a warning's end is EC2's, not the event's."""
        if body.get("source") != "aws.ec2":
            raise BadReportError(f"not an EC2 event: source {body.get('source')!r}")
        detail_type, detail = str(body.get("detail-type", "")), body.get("detail", {})
        if detail_type in CB_WARNING_TYPES:
            rid = str(detail["capacity-reservation-id"])
            block = next((b for b in self.ec2.blocks(pool) if b.id == rid), None)
            if block is None:
                return []
            log.warning("capacity block %s of pool %s expires at %s: draining", rid, pool.name, detail.get("end-date"))
            self.ledger.set_block(rid, block.end, warned=True)
            return [pool.name]
        if detail_type in CB_DETAIL_TYPES:
            return [pool.name]
        if detail_type == STATE_CHANGE:
            node = self.ledger.instance(str(detail["instance-id"]))
            return [pool.name] if node is not None and node.pool == pool.name else []
        raise BadReportError(f"unexpected event {detail_type or sorted(body)!r}")

    # ---- one pool's cycle -------------------------------------------------------------
    def cycle(self, pool_name: str, runners: list[GithubRunner]) -> CycleReport:
        pool = self.pools[pool_name]
        report = CycleReport(pool_name)
        with planning_lock(self.ledger, pool_name, self.holder, self.sleep):
            now = self.clock()
            blocks = self.ec2.blocks(pool)
            nodes = self._sync_nodes(pool, now)
            records = {b.id: self.ledger.block_record(b.id) for b in blocks}
            # Demand: queued jobs this pool's runner group admits (as far as GitHub names their runs).
            route = self.settings.routing.get(pool_name)
            jobs = name_run_workflows(self.ledger.queued_jobs(pool_name), self.settings.routing, self.github, self.ledger)
            queued = sum(1 for job in jobs if route.refusal(origin_of(job)) is None)
            plan = plan_blocks(pool, self.settings.environment, blocks, records, nodes, self.ledger.slots(pool_name), runners,
                               queued, now)  # fmt: skip
            self._apply(pool, {b.id: b for b in blocks}, plan, report, now)
            if plan.renew:
                report.bought = self.ec2.buy_next(pool, max((b.end for b in blocks), default=now))
        log.info("capacity blocks: %s", json.dumps(report.summary(), sort_keys=True))
        return report

    def _sync_nodes(self, pool: PoolSettings, now: float) -> list[Instance]:
        """The pool's live nodes, with the ledger and EC2 made to agree first (plan_node_sync)."""
        listed = {n.id: n for n in self.ec2.nodes({pool.name})}
        known = {i.id: i for i in self.ledger.live_instances(pool.name)}
        adopt, gone = plan_node_sync(known, listed, now)
        for iid in adopt:
            node = listed[iid]
            known[iid] = Instance(iid, pool.name, node.launched_at, runner_name=self._name(pool, iid), block=node.block)
            self.ledger.add_instance(known[iid])
        for iid in gone:
            log.warning("node %s of pool %s is gone", iid, pool.name)
            self._forget(pool, iid)
            del known[iid]
        return list(known.values())

    def _apply(self, pool: PoolSettings, blocks: Mapping[str, Block], plan: BlockPlan, report: CycleReport, now: float) -> None:
        for dereg in plan.deregister:
            if self.github.delete_runner(dereg.runner_id):
                report.deregistered += 1
                log.info("deregistered runner %s (node %s slot %s): %s", dereg.runner_id, dereg.instance_id, dereg.slot, dereg.reason)
        for iid, slot in plan.withdraw:
            self.jit.delete(iid, slot)
        for iid, why in plan.retire:
            if busy := self._still_busy(plan.retire_unless_busy.get(iid, ())):
                log.warning("node %s of pool %s kept: %s missing from the listing but running a job", iid, pool.name, busy)
                continue
            log.info("retiring node %s of pool %s: %s", iid, pool.name, why)
            self.ec2.terminate([iid])
            self._forget(pool, iid)
            report.retired.append(iid)
        for block_id, target in plan.targets.items():
            self.ledger.set_block(block_id, blocks[block_id].end, target=target)
        issue = list(plan.issue)
        for iid, slot in plan.issue_if_gone:
            found = self.github.find_runner(self._slot_name(pool, iid, slot))
            if found is None:
                issue.append((iid, slot))
            elif found.online or found.busy:  # the listing missed it: the slot is supplied
                self.ledger.set_slot(pool.name, iid, slot, seen_at=now)
        for block_id, count in plan.launch:
            token = f"{block_id}-{int(now // 60)}-{count}"
            for iid in self.ec2.launch(pool, blocks[block_id], count, token):
                self.ledger.add_instance(Instance(iid, pool.name, now, runner_name=self._name(pool, iid), block=block_id))
                report.launched.append(iid)
                issue += [(iid, slot) for slot in range(len(pool.slot_gpus))]
        for iid, slot in issue:
            name = self._slot_name(pool, iid, slot)
            _, config = self.github.fresh_jitconfig(name, pool.runner_group, pool.labels_of_slot(slot))
            if not self.jit.put(iid, config, slot):  # an unread config of an earlier runner: replaced
                self.jit.delete(iid, slot)
                self.jit.put(iid, config, slot)
            self.ledger.set_slot(pool.name, iid, slot, issued_at=now)
            report.issued += 1
        for iid, slot in plan.seen:
            self.ledger.set_slot(pool.name, iid, slot, seen_at=now)
        for iid, slot in plan.overran:
            log.error("node %s slot %d still runs a job as its block ends: job timeout above job_timeout_minutes?", iid, slot)
        report.overran = len(plan.overran)
        report.blocks = plan.report

    def _forget(self, pool: PoolSettings, instance_id: str) -> None:
        self.ledger.instance_gone(instance_id)
        self.ledger.slots_gone(instance_id, len(pool.slot_gpus))
        for slot in range(len(pool.slot_gpus)):
            self.jit.delete(instance_id, slot)

    def _still_busy(self, names: Iterable[str]) -> list[str]:
        """Which of these runners, missing from the listing, GitHub says are running a job."""
        return [name for name in names if (found := self.github.find_runner(name)) is not None and found.busy]

    def _slot_name(self, pool: PoolSettings, instance_id: str, slot: int) -> str:
        return slot_runner_name(pool.name_prefix, self.settings.environment, pool.name, instance_id, slot)

    def _name(self, pool: PoolSettings, instance_id: str) -> str:
        return runner_name(pool.name_prefix, self.settings.environment, pool.name, instance_id)
