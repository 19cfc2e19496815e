"""Queued jobs a pool cannot take now go to the next pool that serves them: one decision, pure.

Routing (`core/routing.py`) puts a job on its most preferred pool and passes over pools that
can never take it (drained, or a runner group that does not admit the job). Whether a pool can
take it *now* is known only when scaling: `plan_launches` caps a pool at its instances or its
hourly budget. Jobs a capped pool cannot launch for would wait there while a later pool in
their route has room, so they move on, newest first (the oldest keep their place for the
capped pool's next free runner). The scaler, the reconciler and the simulator all ask this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from lambda_src.core.fleet_state import QUEUED, Job
from lambda_src.core.planner import LaunchOrder
from lambda_src.core.routing import JobOrigin, RoutingTable


@dataclass(frozen=True)
class Move:
    job: Job  # as it stands, on its current pool
    to: str | None  # the pool it goes to; None: no pool may take it, so it stops counting as demand
    reason: str


def capacity_left(order: LaunchOrder) -> int:
    """Jobs a pool can still take beyond its own: idle runners its queue does not use, plus
    the instances its caps allow beyond what it launches."""
    return max(0, -order.shortfall) + max(0, order.room - order.count)


def uncovered(order: LaunchOrder, gone: int = 0) -> int:
    """Queued jobs of the pool its caps leave without a runner, once `gone` of them have moved
    away (pool_config's top-up is not a job, so it never moves)."""
    return max(0, min(order.queued - gone, order.shortfall - gone - order.count))


def origin_of(job: Job) -> JobOrigin:
    """What runner-group admission looks at for a queued job, as far as the ledger knows it."""
    return JobOrigin(job.repo, public=job.public, run_workflows=job.run_workflows)


def plan_overflow(routing: RoutingTable, orders: Iterable[LaunchOrder], jobs: Iterable[Job]) -> list[Move]:
    """Where queued jobs should go instead of the pool they wait for:
    - a job its pool may not take (drained since, not admitted: e.g. a job found by labels
      alone, or the config changed) moves to the first pool that may; with none it is dropped;
    - a capped pool's jobs it cannot cover move to the next pool of their route (after the
      current one) with capacity left; with none they stay and wait.
    `orders` are `plan_launches`' orders for the pools the caller scales; only those give or
    take overflow (a capacity-block pool's slots are the block manager's to count)."""
    by_pool: Mapping[str, LaunchOrder] = {o.pool: o for o in orders}
    left = {name: capacity_left(o) for name, o in by_pool.items()}
    queued = sorted((j for j in jobs if j.state == QUEUED), key=lambda j: (j.queued_at, j.id))
    moves: list[Move] = []
    gone: dict[str, int] = {}
    waiting: dict[str, list[tuple[Job, list[str]]]] = {}
    for job in queued:
        route = routing.route(job.labels, origin_of(job))
        if job.pool not in route:
            to = next(iter(route), None)
            why = "no pool may take it" if to is None else f"pool {job.pool} may not take it"
            moves.append(Move(job, to, why))
            gone[job.pool] = gone.get(job.pool, 0) + 1
            if to is not None and to in left:
                left[to] = max(0, left[to] - 1)
            continue
        waiting.setdefault(job.pool, []).append((job, route[route.index(job.pool) + 1 :]))
    for pool, entries in sorted(waiting.items()):
        order = by_pool.get(pool)
        if order is None:
            continue
        excess = uncovered(order, gone.get(pool, 0))
        for job, later in reversed(entries):  # newest first
            if excess <= 0:
                break
            to = next((p for p in later if left.get(p, 0) > 0), None)
            if to is None:
                continue
            left[to] -= 1
            excess -= 1
            moves.append(Move(job, to, f"{pool} {order.reason}"))
    return moves


def apply_moves(jobs: Iterable[Job], moves: Iterable[Move]) -> list[Job]:
    """The queued jobs as they stand once the moves are made (dropped jobs gone)."""
    changed = {m.job.id: m.to for m in moves}
    out = []
    for job in jobs:
        if job.id not in changed:
            out.append(job)
        elif (to := changed[job.id]) is not None:
            out.append(replace(job, pool=to))
    return out
