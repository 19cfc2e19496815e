"""The scaling decisions, pure: plain data in (jobs, instances, runners, a clock), plans out.

The Lambdas, `estate serve` and the simulator all run these functions, so what is measured
offline is what runs in production. No I/O here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from lambda_src.core import cron
from lambda_src.core.fleet_state import QUEUED, GithubRunner, Instance, Job, owning_pool, runner_name
from lambda_src.core.settings import PoolSettings

# GitHub's `busy` flag can read false for up to a minute after a job starts: a runner is idle
# only when two listings at least this far apart both say so.
IDLE_CONFIRM_S = 60.0
# How long EC2's eventually consistent listing may lag a launch before the ledger's record wins.
LISTING_GRACE_S = 120.0
# How long after a reusable host's runner finished the scaler may still give it a next config;
# the host waits a little longer (estate/derive/host_user_data.py), then powers off.
REUSE_WINDOW_S = 60.0

T = TypeVar("T")


def scaled_pools(pools: Mapping[str, PoolSettings]) -> dict[str, PoolSettings]:
    """The pools the scaler launches hosts for: capacity-block nodes live for their block and
    belong to the capacity-block manager."""
    return {name: p for name, p in pools.items() if p.capacity_type != "capacity-block"}


def warm_target(pool: PoolSettings, now: float) -> tuple[int, str]:
    """Idle runners `idle_config` keeps from scale-down in the window active at `now` (first
    match wins). As upstream: it keeps runners that demand created, it never creates one."""
    when = datetime.fromtimestamp(now, UTC)
    for window in pool.idle_windows:
        if cron.matches(window.cron, when, window.time_zone):
            return window.idle_count, window.eviction
    return 0, "oldest_first"


def pool_top_up(pool: PoolSettings, now: float) -> int:
    """Unassigned runners `pool_config` asks for at `now`: the largest size of a schedule that
    fired this minute or the one before. Topping up is idempotent, so a fire seen by two
    cycles launches once, and a cycle that ran late does not miss it."""
    when = datetime.fromtimestamp(now, UTC)
    return max((w.size for w in pool.pool_windows if cron.fired_within(w.schedule, when, w.time_zone)), default=0)


def least_recently_done(items: Iterable[tuple[T, float | None]], limit: int) -> list[T]:
    """Up to `limit` items, never-done first, then the longest ago (ties in the given order).
    The reconciler's bounded per-cycle budgets (GitHub job checks, repository scans) go round
    with this: of n items, every one is done within ceil(n / limit) cycles, whatever their
    names, and one that always fails cannot starve the others."""
    ranked = sorted(enumerate(items), key=lambda pair: (pair[1][1] is not None, pair[1][1] or 0.0, pair[0]))
    return [item for _, (item, _) in ranked[:limit]]


def is_stale_boot(pool: PoolSettings, instance: Instance, now: float) -> bool:
    """A host whose runner never came online within the pool's boot time: no longer supply."""
    return instance.registered_at is None and now - instance.runner_since > pool.boot_timeout_s


def past_lifetime(pool: PoolSettings, instance: Instance, now: float, ahead_s: float = 0.0) -> bool:
    """Whether the host has lived (or, `ahead_s` from now, will have lived) past the pool's
    maximum lifetime: it takes no new work then, and is retired once it has."""
    return pool.max_lifetime_s > 0 and now + ahead_s - instance.launched_at >= pool.max_lifetime_s


# ---- scale-up ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchOrder:
    pool: str
    count: int
    queued: int
    top_up: int  # unassigned runners pool_config asks for now
    supply: int  # unassigned runners: booting in time, or registered and idle
    shortfall: int  # runners wanted beyond the supply, before the caps (<= 0: none)
    room: int  # instances the caps still allow
    reason: str
    on_demand: int = 0  # of `count`, hosts to launch on-demand: for the retries of spot-interrupted jobs


def plan_launches(
    pools: Mapping[str, PoolSettings], jobs: Iterable[Job], instances: Iterable[Instance], now: float, only: Iterable[str] | None = None
) -> list[LaunchOrder]:
    """How many hosts to launch per pool: queued jobs plus `pool_config`'s top-up, minus
    unassigned runners, within `max_instances`. A job another runner already took is no longer queued,
    and the runner it did not take stays unassigned supply, so nothing is counted twice."""
    queued: dict[str, int] = defaultdict(int)
    steered: dict[str, int] = defaultdict(int)
    for job in jobs:
        if job.state == QUEUED:
            queued[job.pool] += 1
            steered[job.pool] += job.on_demand
    live: dict[str, int] = defaultdict(int)
    supply: dict[str, int] = defaultdict(int)
    for inst in instances:
        live[inst.pool] += 1
        pool = pools.get(inst.pool)
        if pool is None or inst.assigned or inst.spent or inst.leaving:
            continue  # a host EC2 warned about takes no new work
        if not is_stale_boot(pool, inst, now) and not past_lifetime(pool, inst, now):
            supply[inst.pool] += 1
    orders = []
    for name in sorted(only if only is not None else pools):
        pool = pools[name]
        top_up = pool_top_up(pool, now)
        want = queued[name] + top_up
        deficit = want - supply[name]
        room = max(0, pool.max_instances - live[name])
        cap = f"capped at {pool.max_instances} instances"
        if pool.max_hourly_usd is not None and pool.host_hourly_usd > 0:
            affordable = max(0, math.floor(pool.max_hourly_usd / pool.host_hourly_usd) - live[name])
            if affordable < room:
                room, cap = affordable, f"capped at ${pool.max_hourly_usd:g}/hour"
        count = max(0, min(deficit, room))
        if deficit <= 0:
            reason = "enough unassigned runners"
        elif count < deficit:
            reason = cap
        else:
            reason = "launch for queued jobs" if queued[name] else "top up the pool (pool_config)"
        on_demand = min(count, steered[name]) if pool.capacity_type == "spot" else 0
        orders.append(LaunchOrder(name, count, queued[name], top_up, supply[name], deficit, room, reason, on_demand))
    return orders


def plan_reuse(pool: PoolSettings, host: Instance, jobs: Iterable[Job], instances: Iterable[Instance], now: float) -> bool:
    """Whether a host whose runner just finished a job gets a fresh one-job runner config
    instead of powering off: only where the pool allows it (`estate.reuse_hosts`), within its
    job limit and while the host still waits, and only when a queued job (or `pool_config`)
    wants a runner that no other unassigned one covers. So a kept host skips a boot for a
    job that is already waiting, and no host is kept on speculation."""
    if not may_take_next_runner(pool, host, now):
        return False
    (order,) = plan_launches({pool.name: pool}, jobs, [i for i in instances if i.id != host.id], now)
    return order.shortfall > 0


def may_take_next_runner(pool: PoolSettings, host: Instance, now: float) -> bool:
    """A spent host of a reusing pool, within its job limit, that still waits for a config, and
    that a job of the pool's longest would not carry past its maximum lifetime (drained)."""
    return (
        host.spent
        and not host.leaving
        and host.jobs_done < pool.max_jobs_per_host
        and now - (host.finished_at or 0.0) <= REUSE_WINDOW_S
        and not past_lifetime(pool, host, now, ahead_s=pool.job_timeout_s)
    )


def reuse_pending(pool: PoolSettings, order: LaunchOrder, instances: Iterable[Instance], now: float) -> bool:
    """Whether planning the pool may reuse a host even where it launches nothing (a cap)."""
    return order.shortfall > 0 and any(i.pool == pool.name and may_take_next_runner(pool, i, now) for i in instances)


# ---- ledger and EC2 in agreement -------------------------------------------------------


@dataclass
class HostSync:
    adopt: list[str] = field(default_factory=list)  # EC2 has it, the ledger not (a crash after CreateFleet): finish it
    terminate_unknown: list[str] = field(default_factory=list)  # the same, but too old to finish: undo it
    undo: list[str] = field(default_factory=list)  # recorded, yet no runner config past the grace period
    gone: list[str] = field(default_factory=list)  # recorded, but EC2 no longer lists it
    live: list[str] = field(default_factory=list)  # recorded and fine


def plan_host_sync(
    pools: Mapping[str, PoolSettings], known: Mapping[str, Instance], listed: Mapping[str, tuple[str, float]], now: float
) -> HostSync:
    """What to do so the ledger (`known`) and EC2's listing (`listed`: id -> (pool, launch
    time)) agree, finishing or undoing whatever a crashed invocation left half done.

    Only hosts of `pools` are ours to judge: a capacity-block node (another controller's, with
    no host runner config of its own) or an unknown pool's instance is never adopted or undone."""
    plan = HostSync()
    for iid, (pool, launched_at) in listed.items():
        if iid in known or pool not in pools:
            continue
        (plan.adopt if now - launched_at < pools[pool].boot_timeout_s else plan.terminate_unknown).append(iid)
    for inst in known.values():
        if inst.pool not in pools or inst.block is not None:
            continue
        age = now - inst.launched_at
        if inst.id not in listed and age > LISTING_GRACE_S:
            plan.gone.append(inst.id)
        elif inst.jit_at is None and age > LISTING_GRACE_S:
            plan.undo.append(inst.id)
        else:
            plan.live.append(inst.id)
    return plan


# ---- scale-down -------------------------------------------------------------------------


@dataclass(frozen=True)
class Retirement:
    pool: str
    instance_id: str | None
    runner_id: int | None
    reason: str
    # Decided from the runner's absence in one listing, which proves nothing (a paged listing
    # shifts as ephemeral runners are deleted): the shell asks GitHub for this runner by name
    # first and keeps the host if it is there.
    confirm_absence: str | None = None
    # Past the pool's maximum lifetime: terminated even if its runner is busy (its job has run
    # longer than the pool's longest job may), and counted.
    overdue: bool = False


@dataclass
class ScaleDownPlan:
    retire: list[Retirement] = field(default_factory=list)  # delete the runner (if any), then terminate
    first_idle: list[str] = field(default_factory=list)  # instances seen idle for the first time
    not_idle: list[str] = field(default_factory=list)  # instances whose idle mark must be cleared
    registered: list[str] = field(default_factory=list)  # instances first seen online


def plan_scale_down(
    pools: Mapping[str, PoolSettings],
    environment: str,
    instances: Iterable[Instance],
    runners: Iterable[GithubRunner],
    queued_jobs: Iterable[Job],
    now: float,
) -> ScaleDownPlan:
    """Which hosts and runners to retire. `instances` are our live hosts; `runners` is one
    listing of the org's runners. Never retires a busy runner or a host whose job has begun
    (the ledger's `in_progress`), and a host is never retired on its runner's absence from the
    listing alone (see `Retirement.confirm_absence`) — except a host past the pool's maximum
    lifetime, which ends whatever it is doing (`Retirement.overdue`)."""
    plan = ScaleDownPlan()
    by_name = {r.name: r for r in runners}
    queued: dict[str, int] = defaultdict(int)
    for job in queued_jobs:
        if job.state == QUEUED:
            queued[job.pool] += 1
    live_names: set[str] = set()
    idle_eligible: dict[str, list[tuple[Instance, GithubRunner]]] = defaultdict(list)
    idle_count: dict[str, int] = defaultdict(int)

    for inst in instances:
        pool = pools.get(inst.pool)
        if pool is None:
            continue
        name = runner_name(pool.name_prefix, environment, pool.name, inst.id, inst.generation)
        live_names.add(name)
        runner = by_name.get(name)
        age = now - inst.launched_at
        if past_lifetime(pool, inst, now):
            # Drained and retired: its runner is deregistered so it takes no job, then it ends.
            why = f"past its maximum lifetime of {pool.max_lifetime_s // 60} min"
            plan.retire.append(Retirement(pool.name, inst.id, runner.id if runner else None, why, overdue=True))
            continue
        if inst.leaving and not (runner is not None and runner.busy) and (not inst.assigned or inst.spent):
            # EC2 is taking it back: no new work, so its idle runner goes now, not after an idle check.
            why = "spot interruption warning" if inst.interrupted_at is not None else "rebalance recommendation"
            plan.retire.append(Retirement(pool.name, inst.id, runner.id if runner else None, f"{why}: takes no new work"))
            continue
        if runner is None or (not runner.online and not runner.busy):
            if inst.assigned and not inst.spent:
                continue  # its job is running: the job's end retires the host, not a listing
            if may_take_next_runner(pool, inst, now):
                continue  # its runner finished and left; the host waits for its next config a while
            if now - inst.runner_since > pool.boot_timeout_s:
                why = "never registered" if inst.registered_at is None else "runner gone or offline"
                absent = name if runner is None else None
                plan.retire.append(Retirement(pool.name, inst.id, runner.id if runner else None, f"{why} after {age / 60:.0f} min", absent))
            continue
        if inst.registered_at is None:
            plan.registered.append(inst.id)
        if runner.busy or inst.assigned or inst.spent:
            # Busy, or its ephemeral runner took a job and will exit by itself.
            if inst.idle_since is not None:
                plan.not_idle.append(inst.id)
            continue
        idle_count[pool.name] += 1
        if inst.idle_since is None:
            plan.first_idle.append(inst.id)
        elif now - inst.idle_since >= IDLE_CONFIRM_S and age >= pool.minimum_running_s:
            idle_eligible[pool.name].append((inst, runner))

    for pool_name, candidates in sorted(idle_eligible.items()):
        pool = pools[pool_name]
        warm, eviction = warm_target(pool, now)
        # Keep the warm floor, and an idle runner for every job still waiting for this pool.
        surplus = idle_count[pool_name] - warm - queued[pool_name]
        candidates.sort(key=lambda pair: pair[0].launched_at, reverse=eviction == "newest_first")
        for inst, runner in candidates[: max(0, surplus)]:
            plan.retire.append(Retirement(pool_name, inst.id, runner.id, f"idle past {pool.minimum_running_s // 60} min"))

    for runner in by_name.values():
        if runner.name in live_names or runner.busy:
            continue
        owner = _owning_pool(pools, environment, runner.name)
        if owner is not None:
            plan.retire.append(Retirement(owner, None, runner.id, "ghost: no instance behind this runner"))
    return plan


def _owning_pool(pools: Mapping[str, PoolSettings], environment: str, name: str) -> str | None:
    return owning_pool(((p.name, p.name_prefix) for p in pools.values()), environment, name)
