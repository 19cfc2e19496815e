"""A discrete-event simulation of a runner estate: a virtual clock, a simulated EC2 (boot time
per family, spot interruptions, capacity errors), a simulated GitHub (a job queue; a job goes to
an idle registered runner whose labels include all of its labels; fail-fast and
cancel-in-progress cancel a run's jobs), capacity-block nodes split into slots. Scaling
policies (estate/sim/policies.py) drive it; the `estate` policy calls the same planners the
Lambdas run.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from estate.config.loader import Estate
from estate.config.pool import Pool
from estate.config.prices import PriceTable
from estate.sim import timings
from estate.sim.parameter_store import runner_config_cost_usd
from estate.sim.workload import TraceJob
from lambda_src.core.gpu_slots import slot_label
from lambda_src.core.instance_catalog import parse_instance_type
from lambda_src.core.routing import normalise

QUEUE_PREFIX = "buildkite:"  # a job's `pool` when it is routed to a Buildkite queue
# GitHub's usage limits for self-hosted runners: a job no runner starts within 24 hours fails.
QUEUE_LIMIT_S = 24 * 3600.0


@dataclass(eq=False)
class SimJob:
    trace: TraceJob
    index: int
    labels: frozenset[str]
    pool: str | None
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    cancelled_at: float | None = None
    expired_at: float | None = None
    interruptions: int = 0
    lost_at: float | None = None  # failed with its spot-interrupted host; nothing re-runs it
    runs: list[tuple[str, int, float]] = field(default_factory=list)  # (host, slot index, start) of each attempt


@dataclass(eq=False)
class Slot:
    host: Host
    labels: frozenset[str]
    gpus: int
    job: SimJob | None = None
    idle_since: float = 0.0
    busy_s: float = 0.0
    jobs_run: int = 0
    free_from: float = 0.0  # a reused host's next runner takes jobs from then on

    def takes_jobs(self, now: float) -> bool:
        return self.job is None and self.host.ready(now) and now >= self.free_from


@dataclass(eq=False)
class Host:
    id: str
    pool: str
    market: str
    price_per_hour: float
    launched_at: float
    ready_at: float
    slots: list[Slot] = field(default_factory=list)
    ended_at: float | None = None
    leaving_at: float | None = None  # its runner is gone; billed until its shutdown ends

    @property
    def alive(self) -> bool:
        return self.ended_at is None

    def ready(self, now: float) -> bool:
        return self.alive and self.leaving_at is None and now >= self.ready_at

    @property
    def gpus(self) -> int:
        return sum(s.gpus for s in self.slots)


class Policy(Protocol):
    """What a scaler hears of GitHub: a job queued, started on a slot, done on a slot (finished,
    failed or cancelled there), or gone from the queue unstarted (cancelled, expired, or lost
    with a spot-interrupted host: then `on_job_lost` follows, with the slot it ran on)."""

    name: str

    def start(self, sim: Simulation) -> None: ...
    def on_job_queued(self, sim: Simulation, job: SimJob) -> None: ...
    def on_job_started(self, sim: Simulation, job: SimJob, slot: Slot) -> None: ...
    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None: ...
    def on_job_cancelled(self, sim: Simulation, job: SimJob) -> None: ...
    def on_job_lost(self, sim: Simulation, job: SimJob, slot: Slot) -> None: ...


@dataclass
class Simulation:
    estate: Estate
    trace: list[TraceJob]
    policy: Policy
    prices: PriceTable
    seed: int = 0
    spot_interruptions_per_hour: float = 0.0
    capacity_error_rate: float = 0.0
    boot_override_s: float | None = None  # every host boots this long (`--sensitivity boot`)
    # The estate's launches per pool and demand bucket before time 0 (the ledger's history that
    # adaptive warm pools are sized from: lambda_src/core/warm_pools.py); empty: none.
    launch_history: dict[str, dict[int, int]] = field(default_factory=dict)
    now: float = 0.0
    jobs: list[SimJob] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    queue: list[SimJob] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, queued, live hosts)
    runner_configs: int = 0  # one-job runner configs written to SSM (estate/sim/parameter_store.py)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - a reproducible simulation
        self.pools = {p.name: p for p in self.estate.pools}
        self.queues = {q.settings.queue.lower(): q for q in self.estate.queues}
        self.routing = self.estate.routing_table()
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._host_ids = itertools.count(1)
        self._runs: dict[str, list[SimJob]] = {}
        self._run_began: dict[str, float] = {}
        self._groups: dict[str, list[SimJob]] = {}
        self._live: dict[str, Host] = {}  # in launch order: GitHub's pick of an idle runner stays the same
        self._slot_of: dict[SimJob, Slot] = {}
        last = max((j.t for j in self.trace), default=0.0)
        self.horizon = max(1.0, math.ceil(last / 86400)) * 86400  # blocks and static pools are paid by the day

    # ---- the clock ----------------------------------------------------------------------
    def at(self, t: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._events, (max(t, self.now), next(self._seq), action, args))

    def every(self, period: float, action: Callable[[Simulation], None], start: float | None = None) -> None:
        def tick() -> None:
            action(self)
            if self.work_left(self.now + period):
                self.at(self.now + period, tick)

        self.at(period if start is None else start, tick)

    def work_left(self, t: float) -> bool:
        """Keep the clock going until the horizon, then while routable jobs wait or run (a day at most)."""
        if t < self.horizon:
            return True
        if t > self.horizon + 86400:
            return False
        return any(j.pool is not None for j in self.queue) or any(s.job for h in self.live_hosts() for s in h.slots)

    def run(self) -> Simulation:
        for i, tj in enumerate(self.trace):
            labels = normalise(tj.labels)
            # A `queue=<name>` label names a Buildkite queue; GitHub routing ignores it, so one
            # trace compares a team's Buildkite queues with GitHub runner pools.
            wanted = next((label.split("=", 1)[1] for label in labels if label.startswith("queue=")), None)
            github_labels = frozenset(label for label in labels if not label.startswith("queue="))
            if getattr(self.policy, "uses_buildkite_queues", False) and wanted in self.queues:
                job = SimJob(tj, i, frozenset({f"queue={wanted}"}), f"{QUEUE_PREFIX}{wanted}", tj.t)
            else:
                routes = self.routing.route(github_labels)
                job = SimJob(tj, i, github_labels, routes[0] if routes else None, tj.t)
            self.jobs.append(job)
            if tj.run is not None:
                self._runs.setdefault(tj.run, []).append(job)
                self._run_began[tj.run] = min(tj.t, self._run_began.get(tj.run, tj.t))
            if tj.group is not None:
                self._groups.setdefault(tj.group, []).append(job)
            self.at(tj.t, self._arrive, job)
        self.policy.start(self)
        while self._events:
            t, _, action, args = heapq.heappop(self._events)
            self.now = t
            action(*args)
        end = max(self.horizon, self.now)
        for host in self.hosts:
            if host.alive:
                self._end_host(host, end)
        self.end = end
        return self

    # ---- GitHub -------------------------------------------------------------------------
    def _arrive(self, job: SimJob) -> None:
        if job.cancelled_at is not None:  # its run was cancelled before GitHub queued it
            return
        if job.trace.group is not None:  # cancel-in-progress: this run ends the group's earlier runs
            for other in self._groups[job.trace.group]:
                if self._began(other) < self._began(job):
                    self._cancel(other)
        self.queue.append(job)
        self.policy.on_job_queued(self, job)
        self.assign()

    def _expire_old_jobs(self) -> None:
        """Checked as GitHub assigns, not scheduled: an event of its own would run the clock on."""
        for job in [j for j in self.queue if not j.runs and self.now - j.queued_at >= QUEUE_LIMIT_S]:
            self.queue.remove(job)
            job.expired_at = self.now
            self.policy.on_job_cancelled(self, job)

    def assign(self) -> None:
        """GitHub's side: each queued job, oldest first, to an idle registered runner whose
        labels include all of the job's."""
        self._expire_old_jobs()
        free = [s for h in self._live.values() for s in h.slots if s.takes_jobs(self.now)]
        no_match: set[frozenset[str]] = set()  # free slots only shrink during one pass
        for job in list(self.queue):
            if not free:
                break
            if job.labels in no_match:
                continue
            slot = next((s for s in free if job.labels <= s.labels), None)
            if slot is None:
                no_match.add(job.labels)
                continue
            free.remove(slot)
            self._start(job, slot)
        # Queue depth counts the jobs some pool serves: an unroutable job waits for no runner.
        self.samples.append((self.now, sum(1 for j in self.queue if j.pool is not None), len(self.live_hosts())))

    def _start(self, job: SimJob, slot: Slot) -> None:
        self.queue.remove(job)
        slot.job, job.started_at = job, self.now
        self._slot_of[job] = slot
        job.runs.append((slot.host.id, slot.host.slots.index(slot), self.now))
        run_for = min(job.trace.duration_s, job.trace.timeout_s or math.inf)
        self.at(self.now + run_for, self._finish, job, slot)
        self.policy.on_job_started(self, job, slot)

    def _began(self, job: SimJob) -> float:
        return job.trace.t if job.trace.run is None else self._run_began[job.trace.run]

    def _finish(self, job: SimJob, slot: Slot) -> None:
        if slot.job is not job:  # interrupted or cancelled meanwhile
            return
        self._release(job, slot)
        if job.trace.fails:
            self._fail_fast(job)
        self.assign()

    def _fail_fast(self, job: SimJob) -> None:
        """A job of a fail-fast matrix failed: GitHub cancels the run's other jobs."""
        for sibling in self._runs.get(job.trace.run or "", []):
            self._cancel(sibling)

    def _release(self, job: SimJob, slot: Slot) -> None:
        job.finished_at = self.now
        self._slot_of.pop(job, None)
        slot.busy_s += self.now - _started(job)
        slot.job, slot.idle_since = None, self.now
        slot.jobs_run += 1
        self.policy.on_job_done(self, job, slot)
        pool = self.pools.get(slot.host.pool)  # None for a Buildkite queue's host: no JIT config
        if pool is not None and slot.host.alive and (slot.free_from > self.now or pool.capacity_type == "capacity-block"):
            self.runner_configs += 1  # a reused host's next runner, a capacity-block slot's refill

    def _cancel(self, job: SimJob) -> None:
        """GitHub cancels a job: a queued one leaves the queue (its `completed` event), a running
        one ends on its runner now, one not yet queued never is."""
        if job.cancelled_at is not None or job.finished_at is not None or job.expired_at is not None:
            return  # an expired job has already failed: cancelling its run leaves it so
        job.cancelled_at = self.now
        if job in self.queue:
            self.queue.remove(job)
            self.policy.on_job_cancelled(self, job)
            return
        slot = self._slot_of.get(job)
        if slot is not None and slot.job is job:
            self._release(job, slot)
            self.assign()

    # ---- EC2 ----------------------------------------------------------------------------
    def live_hosts(self, pool: str | None = None) -> list[Host]:
        return [h for h in self._live.values() if pool is None or h.pool == pool]

    def launch(self, pool_name: str, count: int, boot_s: float | None = None, market: str | None = None) -> list[Host]:
        """Launch up to `count` hosts; a spot launch refused for capacity (`capacity_error_rate`)
        fails over to on-demand where the pool says so, else it is missing from the result."""
        pool = self.pools[pool_name]
        market = market or pool.capacity_type
        made = []
        for _ in range(count):
            if market == "spot" and self.rng.random() < self.capacity_error_rate:
                if "InsufficientInstanceCapacity" not in pool.runner.enable_on_demand_failover_for_errors:
                    continue
                market = "on-demand"
            made.append(self._new_host(pool, market, self.runner_boot_s(pool) if boot_s is None else boot_s))
        return made

    def _new_host(self, pool: Pool, market: str, boot_s: float, slots: list[tuple[frozenset[str], int]] | None = None) -> Host:
        itype = pool.instance_types[0].name
        host = Host(f"i-{next(self._host_ids):017x}", pool.name, market, self.prices.hourly(itype, market), self.now, self.now + boot_s)
        for labels, gpus in slots or [(pool.runner_label_sets[0], pool.gpus_per_node)]:
            host.slots.append(Slot(host, labels, gpus, idle_since=host.ready_at))
        self.runner_configs += len(host.slots)  # each slot's first runner, written at launch
        return self._register(host)

    def _register(self, host: Host) -> Host:
        self.hosts.append(host)
        self._live[host.id] = host
        self.at(host.ready_at, self.assign)
        if host.market == "spot" and self.spot_interruptions_per_hour > 0:
            self.at(self.now + self.rng.expovariate(self.spot_interruptions_per_hour / 3600), self._interrupt, host)
        return host

    def launch_queue_hosts(self, key: str, count: int) -> list[Host]:
        """Instances of a Buildkite queue (`key` = QUEUE_PREFIX + queue name): AgentsPerInstance agents each."""
        q = self.queues[key.removeprefix(QUEUE_PREFIX)].settings
        itype = parse_instance_type(q.instance_types[0])
        assert itype is not None  # checked when the queue file was loaded
        market = "on-demand" if q.capacity == "on-demand" else "spot"
        made = []
        for _ in range(count):
            if market == "spot" and self.rng.random() < self.capacity_error_rate:
                continue  # the Auto Scaling group tries again (the policy's next look)
            ready_at = self.now + self.boot(timings.BUILDKITE_BOOT_S)
            host = Host(f"i-{next(self._host_ids):017x}", key, market, self.prices.hourly(itype.name, market), self.now, ready_at)
            gpus = itype.gpu_count // q.agents_per_instance
            labels = frozenset({f"queue={q.queue.lower()}"})
            host.slots = [Slot(host, labels, gpus, idle_since=ready_at) for _ in range(q.agents_per_instance)]
            made.append(self._register(host))
        return made

    def boot(self, default_s: float) -> float:
        """A host's boot: `default_s`, unless the run sweeps boots (`--sensitivity boot`)."""
        return default_s if self.boot_override_s is None else self.boot_override_s

    def runner_boot_s(self, pool: Pool) -> float:
        """A GitHub runner host of `pool`: its image path's boot (estate/sim/timings.py): the
        estate's image for a policy that boots it (`boots_estate_image`), else the pool file's AMI."""
        estate_image = getattr(self.policy, "boots_estate_image", False)
        return self.boot(timings.BOOT_S[timings.image_path(pool) if estate_image else timings.ami_path(pool)])

    def launch_warm(self, pool_name: str, run_s: float) -> Host | None:
        """A warm instance's one boot: an instance that takes no job, billed `run_s` until it
        powers itself off (then it is stopped: its EBS is the policy's to count). On-demand in
        every pool, as the control plane launches it (a stopped spot instance cannot simply be
        started again: lambda_src/aws/ec2_fleet.launch_warm)."""
        pool = self.pools[pool_name]
        itype = pool.instance_types[0].name
        price = self.prices.hourly(itype, "on-demand")
        host = Host(f"i-{next(self._host_ids):017x}", pool.name, "on-demand", price, self.now, self.now + run_s)
        self.hosts.append(host)
        self._live[host.id] = host
        self.at(host.ready_at, self._leave, host)
        return host

    def start_warm(self, pool_name: str, boot_s: float) -> Host | None:
        """A stopped warm instance started for a job: a host of the pool booting `boot_s` (EC2
        bills each start anew), on-demand as it was launched, even in a spot pool, so never
        interrupted. This model refuses only spot capacity, so a start is never refused (None)."""
        return self._new_host(self.pools[pool_name], "on-demand", boot_s)

    def _interrupt(self, host: Host) -> None:
        if not host.alive:
            return
        for slot in host.slots:
            if slot.job is not None:
                # Lost with its host. GitHub fails the job (and fail-fast cancels its run); the
                # estate's control plane re-runs it once (its policy's on_job_lost), upstream's does not.
                job, slot.job = slot.job, None
                self._slot_of.pop(job, None)
                slot.busy_s += self.now - _started(job)
                job.interruptions += 1
                job.lost_at = job.finished_at = self.now
                self.policy.on_job_cancelled(self, job)
                self.policy.on_job_lost(self, job, slot)
                self._fail_fast(job)
        self._end_host(host, self.now)
        self.assign()

    def terminate(self, host: Host) -> None:
        """Terminate a host now (a scale-down's TerminateInstances); a job on it is lost."""
        self._interrupt(host)

    def shut_down(self, host: Host, tail_s: float) -> None:
        """The host's runner is gone: it takes no job from now on and is billed `tail_s` more
        (its shutdown) before EC2 stops billing it. It still counts as a running instance."""
        if not host.alive or host.leaving_at is not None:
            return
        host.leaving_at = self.now
        if tail_s <= 0:
            self._end_host(host, self.now)
        else:
            self.at(self.now + tail_s, self._leave, host)

    def _leave(self, host: Host) -> None:
        if host.alive:
            self._end_host(host, self.now)

    def _end_host(self, host: Host, t: float) -> None:
        for slot in host.slots:
            if slot.job is not None and slot.job.started_at is not None:
                slot.busy_s += t - slot.job.started_at
        host.ended_at = t
        self._live.pop(host.id, None)
        self.samples.append((t, len(self.queue), len(self._live)))  # the plot's instance count drops now

    def provision_blocks(self) -> None:
        """Capacity-block nodes: bought for the whole horizon, split per the pool's layout."""
        for pool in self.pools.values():
            if pool.capacity_type != "capacity-block" or pool.slot_layout is None:
                continue
            block = pool.spec.estate.capacity_block
            nodes = block.instance_count if block is not None else 1
            base = normalise(pool.base_labels)
            slots = [(base | {slot_label(g.gpus)}, g.gpus) for g in pool.slot_layout.groups for _ in range(g.count)]
            for _ in range(nodes):
                host = self._new_host(pool, "capacity-block", 0.0, slots)
                host.ready_at = 0.0

    # ---- results ------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        served = [j for j in self.jobs if j.started_at is not None]
        cancelled = [j for j in self.jobs if j.cancelled_at is not None]
        waits = sorted(j.started_at - j.queued_at for j in served if j.started_at is not None)
        hosts_by_id = {h.id: h for h in self.hosts}
        by_pool: dict[str, list[float]] = {}
        by_kind: dict[str, list[float]] = {"cpu": [], "gpu": []}
        for j in served:
            host_id, slot, _ = j.runs[-1]
            wait = _started(j) - j.queued_at
            by_pool.setdefault(j.pool or "", []).append(wait)
            by_kind["gpu" if hosts_by_id[host_id].slots[slot].gpus else "cpu"].append(wait)
        alive_s = {h.id: (h.ended_at or self.end) - h.launched_at for h in self.hosts}
        cost_by_pool: dict[str, float] = {}
        hours_by_pool: dict[str, float] = {}
        billed_s = 0.0
        for h in self.hosts:
            billed_s += timings.billed_seconds(alive_s[h.id], h.market)
            cost_by_pool[h.pool] = cost_by_pool.get(h.pool, 0.0) + self.host_cost(h, alive_s[h.id])
            hours_by_pool[h.pool] = hours_by_pool.get(h.pool, 0.0) + alive_s[h.id] / 3600
        boot_by_pool: dict[str, float] = {}
        for h in self.hosts:
            boot_by_pool[h.pool] = boot_by_pool.get(h.pool, 0.0) + max(0.0, min(h.ended_at or self.end, h.ready_at) - h.launched_at)
        boot_s = sum(boot_by_pool.values())
        extra = extra_costs(self) if (extra_costs := getattr(self.policy, "extra_costs", None)) is not None else {}
        extra_usd = sum(sum(by.values()) for by in extra.values())
        slot_alive = sum(alive_s[s.host.id] for h in self.hosts for s in h.slots)
        busy = sum(s.busy_s for h in self.hosts for s in h.slots)
        idle_gpu_s = sum(s.gpus * max(0.0, alive_s[h.id] - s.busy_s) for h in self.hosts for s in h.slots)
        return {
            # served + unserved + cancelled before start = jobs_total; expired jobs are unserved ones.
            "jobs_total": len(self.jobs),
            "jobs_served": len(served),
            "jobs_unserved": sum(1 for j in self.jobs if j.started_at is None and j.cancelled_at is None),
            "jobs_cancelled": len(cancelled),
            "jobs_cancelled_before_start": sum(1 for j in cancelled if j.started_at is None),
            "jobs_expired": sum(1 for j in self.jobs if j.expired_at is not None),
            "jobs_unroutable": sum(1 for j in self.jobs if j.pool is None),
            "jobs_interrupted": sum(j.interruptions for j in self.jobs),
            "jobs_lost": sum(1 for j in self.jobs if j.lost_at is not None),  # failed with their interrupted host
            "wait_s": {
                "p50": _pct(waits, 0.50),
                "p95": _pct(waits, 0.95),
                "p99": _pct(waits, 0.99),
                "max": max(waits, default=0.0),
                "mean": statistics.fmean(waits) if waits else 0.0,
            },
            # Served jobs by the slot they ran on: with GPUs or without.
            "wait_s_by_kind": {kind: _waits(w) for kind, w in by_kind.items()},
            # Instance time, runner configs in SSM, and the policy's costs beyond instances (the
            # estate's stopped warm instances' EBS and its image builds: `extra_costs`).
            "cost_usd": round(sum(cost_by_pool.values()) + runner_config_cost_usd(self.runner_configs) + extra_usd, 2),
            "runner_configs": self.runner_configs,
            "ssm_cost_usd": round(runner_config_cost_usd(self.runner_configs), 4),  # part of cost_usd
            "instance_hours": round(sum(hours_by_pool.values()), 2),
            "billed_hours": round(billed_s / 3600, 2),  # instance hours with EC2's 60 s minimum per instance
            "boot_hours": round(boot_s / 3600, 2),  # paid while hosts booted: part of instance_hours
            "idle_gpu_hours": round(idle_gpu_s / 3600, 2),
            "utilisation": round(busy / slot_alive, 4) if slot_alive else 0.0,
            "hosts_launched": len(self.hosts),
            **(counts(self) if (counts := getattr(self.policy, "counts", None)) is not None else {}),
            **{key: {k: round(v, 2) for k, v in sorted(by.items())} for key, by in extra.items()},
            "pools": {
                p: {
                    "cost_usd": round(cost_by_pool.get(p, 0.0) + sum(by.get(p, 0.0) for by in extra.values()), 2),
                    "instance_hours": round(hours_by_pool.get(p, 0.0), 2),
                    "boot_hours": round(boot_by_pool.get(p, 0.0) / 3600, 2),
                    **({"wait_s": _waits(by_pool[p])} if p in by_pool else {}),
                    **{key: round(by[p], 2) for key, by in extra.items() if p in by},
                }
                for p in sorted(set(cost_by_pool) | set(by_pool) - {""})
            },
        }

    def host_cost(self, host: Host, alive_s: float) -> float:
        """What one host costs: its billed time at its price, plus what each launch costs
        besides (the one place per-launch costs are added)."""
        return timings.billed_seconds(alive_s, host.market) / 3600 * host.price_per_hour + self.launch_cost(host)

    def launch_cost(self, host: Host) -> float:
        """Costs of a launch beyond instance time; none modelled yet."""
        return 0.0


def _started(job: SimJob) -> float:
    assert job.started_at is not None  # only a running job is finished or interrupted
    return job.started_at


def _waits(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": _pct(ordered, 0.50), "p95": _pct(ordered, 0.95), "p99": _pct(ordered, 0.99), "jobs": len(ordered)}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return round(values[min(len(values) - 1, math.ceil(q * len(values)) - 1)], 1)
