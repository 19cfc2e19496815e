"""What the estate looks like now, pure: per pool how many jobs wait and for how long, its hosts
by state, whether its cap holds jobs back, and why the oldest waiting job waits.

The reconciler emits these counts as metrics every minute (lambda_src/functions/handlers.py),
and `estate status` prints them with the runners GitHub lists. Nothing is decided twice: the
reasons come from the planners' own answers (`plan_launches`' LaunchOrder, routing's refusals,
the capacity-block planner's block report), read back, never re-derived.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lambda_src.core.costs import spend_rate
from lambda_src.core.fleet_state import QUEUED, GithubRunner, Instance, Job
from lambda_src.core.overflow import origin_of
from lambda_src.core.planner import LaunchOrder, plan_launches, scaled_pools
from lambda_src.core.settings import ControlPlaneSettings, PoolSettings

BOOTING, IDLE, BUSY = "booting", "idle", "busy"
HOST_STATES = (BOOTING, IDLE, BUSY)


def host_state(host: Instance, runners: Mapping[str, GithubRunner] | None = None) -> str:
    """booting (its runner not online yet), idle (online, no job) or busy (running a job). With a
    runner listing, GitHub's word counts; without one (the reconciler), the ledger's marks."""
    if host.assigned and not host.spent:
        return BUSY
    runner = None if runners is None else runners.get(host.runner_name)
    if runner is not None and (runner.busy or runner.online):
        return BUSY if runner.busy else IDLE
    # No runner online: one never seen online is still booting (or stuck: scale-down retires
    # it after the pool's boot time); a seen one is spent or leaving, paid for and idle.
    return BOOTING if host.registered_at is None else IDLE


@dataclass(frozen=True)
class PoolView:
    pool: str
    queued: int
    oldest_wait_s: float  # how long the oldest queued job has waited (0 with none)
    booting: int
    idle: int
    busy: int
    at_cap: bool  # its caps leave queued jobs without a runner (plan_launches says "capped ...")
    reason: str  # plan_launches' reason for the pool ("" for capacity-block pools)
    idle_gpus: int  # GPUs of idle and booting hosts: paid, running nothing
    spend_usd_per_hour: float  # what its live hosts cost an hour (blocks: see block_spend_rate)

    def metrics(self) -> dict[str, float]:
        return {
            "queued_jobs": float(self.queued),
            "oldest_wait": round(self.oldest_wait_s, 1),
            "hosts_booting": float(self.booting),
            "hosts_idle": float(self.idle),
            "hosts_busy": float(self.busy),
            "at_cap": 1.0 if self.at_cap else 0.0,
            "idle_gpus": float(self.idle_gpus),
        }


def pool_views(
    pools: Mapping[str, PoolSettings],
    jobs: Iterable[Job],
    hosts: Iterable[Instance],
    now: float,
    runners: Mapping[str, GithubRunner] | None = None,
) -> dict[str, PoolView]:
    """Every pool's counts now. `jobs` are the queued jobs, `hosts` the live hosts of pools that
    launch per job (capacity-block nodes are counted by slot, in their block report)."""
    queued = [j for j in jobs if j.state == QUEUED]
    live = [h for h in hosts if h.pool in pools]
    orders = {o.pool: o for o in plan_launches(scaled_pools(pools), queued, live, now)}
    views = {}
    for name, pool in sorted(pools.items()):
        waiting = [now - j.queued_at for j in queued if j.pool == name]
        states = {s: 0 for s in HOST_STATES}
        for host in live:
            if host.pool == name:
                states[host_state(host, runners)] += 1
        order = orders.get(name)
        views[name] = PoolView(
            pool=name,
            queued=len(waiting),
            oldest_wait_s=max(waiting, default=0.0),
            booting=states[BOOTING],
            idle=states[IDLE],
            busy=states[BUSY],
            at_cap=order is not None and order.reason.startswith("capped"),
            reason="" if order is None else order.reason,
            idle_gpus=(states[BOOTING] + states[IDLE]) * pool.host_gpus,
            spend_usd_per_hour=spend_rate(pools, (h for h in live if h.pool == name)),
        )
    return views


@dataclass(frozen=True)
class Wait:
    job: Job
    waited_s: float
    reason: str


def oldest_waits(
    settings: ControlPlaneSettings,
    jobs: Iterable[Job],
    hosts: Iterable[Instance],
    now: float,
    *,
    runners: Mapping[str, GithubRunner] | None = None,
    blocks: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    failures: Mapping[str, str] | None = None,
) -> dict[str, Wait]:
    """Per pool, its oldest queued job and why it waits. `blocks` are the capacity-block
    planner's reports per pool (BlockPlan.report), `failures` the last launch failure per pool."""
    queued = sorted((j for j in jobs if j.state == QUEUED), key=lambda j: (j.queued_at, j.id))
    live = list(hosts)
    views = pool_views(settings.pools, queued, live, now, runners)
    orders = {o.pool: o for o in plan_launches(scaled_pools(settings.pools), queued, live, now)}
    found: dict[str, Wait] = {}
    for job in queued:
        if job.pool in found:
            continue
        reason = why_waiting(settings, job, orders, views, blocks or {}, failures or {})
        found[job.pool] = Wait(job, now - job.queued_at, reason)
    return found


def why_waiting(
    settings: ControlPlaneSettings,
    job: Job,
    orders: Mapping[str, LaunchOrder],
    views: Mapping[str, PoolView],
    blocks: Mapping[str, Mapping[str, Mapping[str, Any]]],
    failures: Mapping[str, str],
) -> str:
    """One line: why no runner has taken this queued job yet, from the planners' answers."""
    routing, origin = settings.routing, origin_of(job)
    route = routing.route(job.labels, origin)
    if not route:
        if routing.route(job.labels):
            refusal = routing.get(job.pool).refusal(origin) if job.pool in settings.pools else None
            return f"no pool admits its repository {job.repo or '(unknown)'}" + (f": {refusal}" if refusal else "")
        return "no pool serves its labels"
    if job.pool not in route:
        refusal = routing.get(job.pool).refusal(origin) if job.pool in settings.pools else "it is not in the job's route"
        return f"pool {job.pool} may not take it ({refusal}); the reconciler moves it to {route[0]}"
    pool = settings.pools[job.pool]
    if pool.capacity_type == "capacity-block":
        if pool.name not in blocks:
            return "its capacity blocks were not read"
        return _block_wait(blocks[pool.name])
    order, view = orders.get(pool.name), views[pool.name]
    if order is None:
        return "its pool is not scaled here"
    if order.reason.startswith("capped"):
        return f"{order.reason} ({view.booting + view.idle + view.busy} live): capped"
    if order.count > 0:
        if pool.name in failures:
            return f"no capacity: the last launch failed: {failures[pool.name]}"
        return f"launch pending: {order.count} host(s) wanted; the next scale-up or reconcile (each minute) launches them"
    if view.booting:
        return f"waiting for {view.booting} booting host(s) of the pool"
    if view.idle:
        return f"{view.idle} idle runner(s) of the pool: GitHub has not given it one yet"
    return order.reason


def _block_wait(reports: Mapping[str, Mapping[str, Any]]) -> str:
    if not reports:
        return "no capacity: the pool holds no capacity block (name one in reservation_ids, or buy one)"
    accepting = {bid: r for bid, r in reports.items() if r["phase"] == "accepting"}
    if not accepting:
        phases = ", ".join(f"{bid} {r['phase']} ({r['hours_left']} h left)" for bid, r in sorted(reports.items()))
        return f"block not active: {phases}"
    free = sum(int(r.get("idle_slots", 0)) for r in accepting.values())
    if free:
        return f"{free} free slot(s) in an accepting block: their runners should take it (GitHub has not assigned it yet)"
    unlaunched = sum(int(r["capacity"]) - int(r["nodes"]) for r in accepting.values())
    if unlaunched:
        return f"nodes launching: the block has room for {unlaunched} more node(s)"
    busy = sum(int(r.get("busy_slots", 0)) for r in accepting.values())
    faulty = sum(int(r.get("faulty_slots", 0)) for r in accepting.values())
    return f"no capacity: every slot is busy ({busy} busy" + (f", {faulty} faulty" if faulty else "") + ")"
