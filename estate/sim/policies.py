"""Scaling policies for `estate simulate`. `estate` runs our planners (lambda_src/core/planner.py),
with the settings the deploy compiles (estate/derive/control_config.py); the others model what their
projects document, cited at each class."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

from estate.derive.control_config import pool_settings
from estate.sim.simulator import QUEUE_PREFIX, Host, SimJob, Simulation, Slot
from lambda_src.core import cron
from lambda_src.core.fleet_state import QUEUED, GithubRunner, Instance, Job, runner_name
from lambda_src.core.interruptions import breaker_open_until, on_demand_sibling
from lambda_src.core.overflow import plan_overflow
from lambda_src.core.planner import LaunchOrder, plan_launches, plan_reuse, plan_scale_down, scaled_pools, warm_target
from lambda_src.core.settings import PoolSettings

ENVIRONMENT = "sim"
CONTROL_PLANE_LATENCY_S = 1.0  # webhook -> SQS -> scale-up decision (bench/control_plane_bench.py measures ~0.1 s locally)
# A reused host's next runner: tidy, read its config, start and register. Ours, not measured on AWS.
NEXT_RUNNER_S = 20.0


def _scaled(sim: Simulation) -> list[str]:
    return [n for n, p in sim.pools.items() if p.capacity_type != "capacity-block"]


class EstatePolicy:
    """Ours: decide when the event arrives (no fixed delay), one ephemeral runner per job,
    a reconciler and a scale-down every minute — the planners the Lambdas run. A pool with
    `estate.reuse_hosts` gives a host a next one-job runner when the planner says so. Jobs a
    capped pool cannot launch for move to the next pool that serves them (core/overflow.py),
    as scale-up and the reconciler move them."""

    name = "estate"

    def start(self, sim: Simulation) -> None:
        # The same settings the deploy compiles, and the planner's own choice of pools to scale.
        self.settings: dict[str, PoolSettings] = scaled_pools({n: pool_settings(p) for n, p in sim.pools.items()})
        self.assigned: dict[str, int] = {}  # host -> job its runner took (the in_progress webhook)
        self.registered: dict[str, float] = {}
        self.idle_marks: dict[str, float] = {}
        self.reused: dict[str, Instance] = {}  # a reused host as the ledger records it
        # Spot interruptions, as the control plane handles them (core/interruptions.py): a job lost
        # with its host fails; the reconciler re-runs it once, when its run has completed, and
        # steers the retry to on-demand; a pool interrupted twice in 15 minutes goes on-demand.
        self.to_rerun: list[SimJob] = []
        self.retries: dict[SimJob, SimJob] = {}  # retry -> the interrupted job
        self.on_demand_jobs: set[int] = set()  # retries its own pool launches on-demand for (no sibling)
        self.lost_again = 0  # retries interrupted too: not re-run twice
        self.extra_cost_usd = 0.0  # interrupted attempts' and retries' instance time
        self.warnings: dict[str, list[float]] = {}
        self.off_spot: dict[str, float] = {}
        self.breaker_opened = 0
        sim.provision_blocks()
        sim.every(60.0, self.cycle)

    def on_job_lost(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        """GitHub fails the job of a reclaimed host; the control plane re-runs it once."""
        self.extra_cost_usd += slot.host.price_per_hour * (sim.now - (job.started_at or sim.now)) / 3600
        pool = slot.host.pool
        if slot.host.market == "spot" and pool in self.settings:
            self.warnings.setdefault(pool, []).append(sim.now)
            until = breaker_open_until(self.warnings[pool], sim.now)
            if until is not None and self.off_spot.get(pool, 0.0) <= sim.now:
                self.breaker_opened += 1
            if until is not None:
                self.off_spot[pool] = until
        if job in self.retries:
            self.lost_again += 1  # a run is re-run for an interruption once
        else:
            self.to_rerun.append(job)

    def _rerun_interrupted(self, sim: Simulation) -> None:
        """GitHub re-runs a job of a completed run: each cycle, those whose run has ended."""
        for job in list(self.to_rerun):
            run = [j for j in sim.jobs if job.trace.run is not None and j.trace.run == job.trace.run] or [job]
            if any(j.finished_at is None and j.cancelled_at is None and j.expired_at is None for j in run):
                continue
            self.to_rerun.remove(job)
            retry = SimJob(job.trace, len(sim.jobs), job.labels, job.pool, sim.now)
            view = Job(retry.index, job.pool or "", QUEUED, sim.now, labels=tuple(job.labels))
            sibling = on_demand_sibling(sim.routing, self.settings, view) if job.pool in self.settings else None
            if sibling is not None:
                retry.pool = sibling
            elif job.pool in self.settings:
                self.on_demand_jobs.add(retry.index)
            sim.jobs.append(retry)
            self.retries[retry] = job
            sim.queue.append(retry)
            self.on_job_queued(sim, retry)
        sim.assign()

    def counts(self, sim: Simulation) -> dict[str, object]:
        """What interruptions cost under the control plane's handling: re-runs, their extra cost
        (the lost attempts' and the retries' instance time) and extra wait (failure to retry start)."""
        waits = sorted(r.started_at - (o.finished_at or r.queued_at) for r, o in self.retries.items() if r.started_at is not None)
        hosts = {h.id: h for h in sim.hosts}
        extra = self.extra_cost_usd
        for retry in self.retries:
            if retry.started_at is not None and retry.runs:
                host = hosts[retry.runs[-1][0]]
                end = retry.finished_at or host.ended_at or sim.end
                extra += host.price_per_hour * (end - retry.started_at) / 3600
        return {
            "reruns": len(self.retries),
            "reruns_interrupted_again": self.lost_again,
            "rerun_extra_cost_usd": round(extra, 2),
            "rerun_extra_wait_s": {"mean": round(sum(waits) / len(waits), 1) if waits else 0.0, "max": round(max(waits, default=0.0), 1)},
            "spot_breaker_opened": self.breaker_opened,
        }

    def on_job_queued(self, sim: Simulation, job: SimJob) -> None:
        if job.pool in self.settings:
            sim.at(sim.now + CONTROL_PLANE_LATENCY_S, self.scale_up, sim, job.pool)

    def on_job_cancelled(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        host = slot.host
        if host.pool not in self.settings:
            return
        pool = self.settings[host.pool]
        if pool.max_jobs_per_host > 1:
            # The `completed` webhook: the ledger marks the host spent, scale-up decides.
            before = self._instance(host)
            spent = replace(before, job_id=job.index, jobs_done=before.jobs_done + 1, finished_at=sim.now)
            others = [i for i in self._instances(sim) if i.id != host.id]
            if plan_reuse(pool, spent, self._jobs(sim), others, sim.now):
                name = runner_name(pool.name_prefix, ENVIRONMENT, pool.name, host.id, spent.generation + 1)
                self.reused[host.id] = spent.given_next_runner(name, sim.now)
                for marks in (self.assigned, self.registered, self.idle_marks):
                    marks.pop(host.id, None)
                slot.free_from = sim.now + NEXT_RUNNER_S
                sim.at(slot.free_from, sim.assign)
                return
        self.reused.pop(host.id, None)
        sim.terminate(host)  # ephemeral: the host powers off after its (last) job

    def _jobs(self, sim: Simulation) -> list[Job]:
        return [
            Job(j.index, j.pool, QUEUED, j.queued_at, labels=tuple(j.labels), on_demand=j.index in self.on_demand_jobs)
            for j in sim.queue
            if j.pool in self.settings
        ]

    def _launch(self, sim: Simulation, order: LaunchOrder) -> None:
        """The order's on-demand part (retries) on-demand, all of it while the pool's breaker is open."""
        on_demand = order.count if self.off_spot.get(order.pool, 0.0) > sim.now else order.on_demand
        if on_demand and self.settings[order.pool].capacity_type == "spot":
            sim.launch(order.pool, on_demand, market="on-demand")
            sim.launch(order.pool, order.count - on_demand)
        else:
            sim.launch(order.pool, order.count)

    def _orders(self, sim: Simulation) -> list[LaunchOrder]:
        """Every scaled pool's launch order, after the jobs capped pools cannot launch for have
        moved on (the moved jobs' pool changes, as the ledger's does)."""
        jobs, instances = self._jobs(sim), self._instances(sim)
        orders = plan_launches(self.settings, jobs, instances, sim.now)
        moves = plan_overflow(sim.routing, orders, jobs)
        if not moves:
            return orders
        waiting = {j.index: j for j in sim.queue}
        for move in moves:
            waiting[move.job.id].pool = move.to
        return plan_launches(self.settings, self._jobs(sim), instances, sim.now)

    def _instance(self, h: Host) -> Instance:
        if h.slots[0].job is not None:
            self.assigned[h.id] = h.slots[0].job.index
        marks = (self.assigned.get(h.id), self.registered.get(h.id), self.idle_marks.get(h.id))
        if (reused := self.reused.get(h.id)) is None:
            return Instance(h.id, h.pool, h.launched_at, *marks)
        return replace(reused, job_id=marks[0], registered_at=marks[1], idle_since=marks[2])

    def _instances(self, sim: Simulation) -> list[Instance]:
        return [self._instance(h) for h in sim.live_hosts() if h.pool in self.settings]

    def _first_name(self, h: Host) -> str:
        return runner_name(self.settings[h.pool].name_prefix, ENVIRONMENT, h.pool, h.id)

    def scale_up(self, sim: Simulation, pool: str) -> None:
        orders = {o.pool: o for o in plan_launches(self.settings, self._jobs(sim), self._instances(sim), sim.now, only=[pool])}
        if orders[pool].count < orders[pool].shortfall:  # capped: what it cannot launch for moves on now
            orders = {o.pool: o for o in self._orders(sim) if o.pool == pool or o.count}
        for order in orders.values():
            self._launch(sim, order)

    def cycle(self, sim: Simulation) -> None:
        # Reconcile: interrupted jobs re-run, then what is queued and not covered, for every pool.
        self._rerun_interrupted(sim)
        for order in self._orders(sim):
            self._launch(sim, order)
        # Scale-down, from one runner listing.
        instances = self._instances(sim)
        named = {i.id: i.runner_name for i in instances}
        runners = [
            GithubRunner(i, named[h.id] or self._first_name(h), True, h.slots[0].job is not None)
            for i, h in enumerate(sim.live_hosts())
            if h.pool in self.settings and h.ready(sim.now) and sim.now >= h.slots[0].free_from
        ]
        plan = plan_scale_down(self.settings, ENVIRONMENT, instances, runners, self._jobs(sim), sim.now)
        for iid in plan.registered:
            self.registered[iid] = sim.now
        for iid in plan.first_idle:
            self.idle_marks[iid] = sim.now
        for iid in plan.not_idle:
            self.idle_marks.pop(iid, None)
        by_id = {h.id: h for h in sim.live_hosts()}
        for retire in plan.retire:
            host = by_id.get(retire.instance_id or "")
            if host is not None and host.slots[0].job is None:
                sim.terminate(host)


class PhilipsPolicy:
    """terraform-aws-github-runner (github-aws-runners/terraform-aws-github-runner, docs
    "Scale up" / "Scale down" and the multi-runner module's variables): the webhook is queued
    with `delay_webhook_event` (default 30 s); scale-up then checks the job is still queued
    (`enable_job_queued_check`) and creates one runner for it if the pool is under
    `runners_maximum_count`. Runners are ephemeral only with `enable_ephemeral_runners`;
    otherwise they take further jobs. Scale-down runs on `scale_down_schedule_expression`
    (every 5 minutes) and removes idle runners older than `minimum_running_time_in_minutes`
    (default 5), keeping `idle_config`'s `idleCount` idle. Its pool function runs on each
    `pool_config` schedule and adjusts the pool to `size` idle runners."""

    name = "philips"
    SCALE_DOWN_EVERY_S = 300.0

    def start(self, sim: Simulation) -> None:
        self.settings = {n: pool_settings(sim.pools[n]) for n in _scaled(sim)}  # for the idle and pool windows
        sim.provision_blocks()
        sim.every(self.SCALE_DOWN_EVERY_S, self.scale_down)
        if any(s.pool_windows for s in self.settings.values()):
            sim.every(60.0, self.adjust_pools, start=0.0)

    def adjust_pools(self, sim: Simulation) -> None:
        when = datetime.fromtimestamp(sim.now, UTC)
        for name, settings in self.settings.items():
            size = max((w.size for w in settings.pool_windows if cron.fires(w.schedule, when, w.time_zone)), default=0)
            hosts = sim.live_hosts(name)
            idle = sum(1 for h in hosts if h.slots[0].job is None)
            room = sim.pools[name].runner.runners_maximum_count - len(hosts)
            sim.launch(name, max(0, min(size - idle, room)))

    def on_job_queued(self, sim: Simulation, job: SimJob) -> None:
        if job.pool is not None and job.pool in _scaled(sim):
            delay = sim.pools[job.pool].runner.delay_webhook_event
            sim.at(sim.now + delay, self.scale_up, sim, job)

    def scale_up(self, sim: Simulation, job: SimJob) -> None:
        assert job.pool is not None
        if job in sim.queue and len(sim.live_hosts(job.pool)) < sim.pools[job.pool].runner.runners_maximum_count:
            sim.launch(job.pool, 1)

    def on_job_cancelled(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        pool = sim.pools[slot.host.pool]
        if pool.capacity_type != "capacity-block" and pool.runner.enable_ephemeral_runners:
            sim.terminate(slot.host)

    def scale_down(self, sim: Simulation) -> None:
        for name in _scaled(sim):
            rc = sim.pools[name].runner
            minimum = 60 * (5 if rc.minimum_running_time_in_minutes is None else rc.minimum_running_time_in_minutes)
            keep, _ = warm_target(self.settings[name], sim.now)
            idle = [h for h in sim.live_hosts(name) if h.ready(sim.now) and h.slots[0].job is None]
            idle.sort(key=lambda h: h.launched_at)
            for host in [h for h in idle if sim.now - h.launched_at >= minimum][: max(0, len(idle) - keep)]:
                sim.terminate(host)


class BuildkitePolicy:
    """Buildkite Elastic CI Stack for AWS (buildkite/elastic-ci-stack-for-aws, parameters
    `MinSize`, `MaxSize`, `AgentsPerInstance`, `ScaleInIdlePeriod` default 600 s; its
    buildkite-agent-scaler polls the queue's scheduled and running jobs and sets the Auto
    Scaling group's desired count to ceil((scheduled + running) / AgentsPerInstance)). Agents
    are long-lived; an instance whose agents sat idle for ScaleInIdlePeriod shuts down. One
    queue per pool here."""

    name = "buildkite"
    uses_buildkite_queues = True  # jobs labelled queue=<name> go to that queue file's settings
    POLL_EVERY_S = 10.0
    SCALE_IN_IDLE_S = 600.0
    AGENTS_PER_INSTANCE = 1

    def start(self, sim: Simulation) -> None:
        sim.provision_blocks()
        sim.every(self.POLL_EVERY_S, self.poll)

    def on_job_queued(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_cancelled(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        queue = sim.queues.get(slot.host.pool.removeprefix(QUEUE_PREFIX))
        if slot.host.pool.startswith(QUEUE_PREFIX) and queue is not None and queue.settings.terminate_after_job:
            sim.terminate(slot.host)  # BuildkiteTerminateInstanceAfterJob

    def poll(self, sim: Simulation) -> None:
        scheduled = Counter(j.pool for j in sim.queue)
        self._poll_queues(sim, scheduled)
        for name in _scaled(sim):
            hosts = sim.live_hosts(name)
            running = sum(1 for h in hosts for s in h.slots if s.job is not None)
            desired = min(sim.pools[name].runner.runners_maximum_count, math.ceil((scheduled[name] + running) / self.AGENTS_PER_INSTANCE))
            if desired > len(hosts):
                sim.launch(name, desired - len(hosts))
            for host in hosts:
                slot = host.slots[0]
                if host.ready(sim.now) and slot.job is None and sim.now - slot.idle_since >= self.SCALE_IN_IDLE_S:
                    sim.terminate(host)

    def _poll_queues(self, sim: Simulation, scheduled: Counter[str | None]) -> None:
        """Queues from buildkite_queue files, with their own MinSize, MaxSize, AgentsPerInstance
        and ScaleInIdlePeriod."""
        for queue in sim.queues.values():
            key, q = f"{QUEUE_PREFIX}{queue.settings.queue.lower()}", queue.settings
            hosts = sim.live_hosts(key)
            running = sum(1 for h in hosts for s in h.slots if s.job is not None)
            desired = min(q.max_size, max(q.min_size, math.ceil((scheduled[key] + running) / q.agents_per_instance)))
            if desired > len(hosts):
                sim.launch_queue_hosts(key, desired - len(hosts))
            spare = len(hosts) - q.min_size
            for host in hosts:
                idle = all(s.job is None and sim.now - s.idle_since >= q.scale_in_idle_seconds for s in host.slots)
                if spare > 0 and host.ready(sim.now) and idle:
                    sim.terminate(host)
                    spare -= 1


class StaticPolicy:
    """A fixed pool per config, sized for the trace's peak concurrent jobs, up all the time."""

    name = "static"

    def start(self, sim: Simulation) -> None:
        sim.provision_blocks()
        for name in _scaled(sim):
            events = sorted(
                [(j.trace.t, 1) for j in sim.jobs if j.pool == name]
                + [(j.trace.t + j.trace.duration_s, -1) for j in sim.jobs if j.pool == name]
            )
            peak = level = 0
            for _, step in events:
                level += step
                peak = max(peak, level)
            sim.launch(name, peak)

    def on_job_queued(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_cancelled(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        return


class IdealPolicy:
    """The lower bound: a runner exists exactly while a job runs, with no boot and no idle. A
    capacity-block job pays the block's per-GPU rate for its slot only."""

    name = "ideal"

    def start(self, sim: Simulation) -> None:
        return

    def on_job_queued(self, sim: Simulation, job: SimJob) -> None:
        if job.pool is None:
            return
        pool = sim.pools[job.pool]
        if pool.capacity_type == "capacity-block" and pool.slot_layout is not None:
            size = min(g.gpus for g in pool.slot_layout.groups)
            host = sim.launch(job.pool, 1, boot_s=0.0)[0]
            host.price_per_hour *= size / pool.gpus_per_node
            host.slots[0].gpus = size
            host.slots[0].labels = host.slots[0].labels | job.labels
        else:
            sim.launch(job.pool, 1, boot_s=0.0)

    def on_job_cancelled(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        sim.terminate(slot.host)


POLICIES = {p.name: p for p in (EstatePolicy, PhilipsPolicy, BuildkitePolicy, StaticPolicy, IdealPolicy)}
