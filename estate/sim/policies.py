"""Scaling policies for `estate simulate`. `estate` runs our planners (lambda_src/core/planner.py),
with the settings the deploy compiles (estate/derive/control_config.py), on what its webhooks and
listings tell it. The others model their projects' own code, each rule cited as
`file:line @commit` of the snapshot read for issue 23:
- terraform-aws-github-runner = github-aws-runners/terraform-aws-github-runner @4475534;
- buildkite-agent-scaler = buildkite/buildkite-agent-scaler @49c4145;
- elastic-ci-stack = buildkite/elastic-ci-stack-for-aws @b4948d8.
Times and their sources are in estate/sim/timings.py.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from estate.config.pool import Pool
from estate.config.prices import PriceError
from estate.config.stack_config import DEFAULT_BUILD_INSTANCE_TYPES, RootVolumes
from estate.derive.control_config import pool_settings
from estate.sim import timings
from estate.sim.simulator import QUEUE_PREFIX, Host, SimJob, Simulation, Slot
from lambda_src.core import cron
from lambda_src.core.fleet_state import QUEUED, GithubRunner, Instance, Job, runner_name
from lambda_src.core.interruptions import breaker_open_until, on_demand_sibling
from lambda_src.core.overflow import plan_overflow
from lambda_src.core.planner import REUSE_WINDOW_S, LaunchOrder, plan_launches, plan_reuse, plan_scale_down, scaled_pools, warm_target
from lambda_src.core.settings import PoolSettings
from lambda_src.core.warm_pools import OFF, WarmInstance, demand_bucket, held_size, launch_size, pick_warm, plan_warm_pool, within_budget

ENVIRONMENT = "sim"
# A reused host's next runner: tidy, read its config, start and register. Ours, not measured on AWS.
NEXT_RUNNER_S = 20.0
# How long a reusable host waits for a next runner config before it powers off: the scaler's
# window and half a minute (estate/derive/host_user_data.py, `--reuse-wait`).
REUSE_WAIT_S = REUSE_WINDOW_S + 30.0


def _scaled(sim: Simulation) -> list[str]:
    return [n for n, p in sim.pools.items() if p.capacity_type != "capacity-block"]


class BasePolicy:
    """Hears nothing; each policy overrides what it listens to."""

    name = "base"

    def start(self, sim: Simulation) -> None:
        return

    def on_job_queued(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_started(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        return

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        return

    def on_job_cancelled(self, sim: Simulation, job: SimJob) -> None:
        return

    def on_job_lost(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        """The job's host went away under it (GitHub fails it; `on_job_cancelled` was told too)."""
        return


class EstatePolicy(BasePolicy):
    """Ours: one ephemeral runner per job, decided when the `queued` webhook reaches scale-up
    (timings.CONTROL_PLANE_LATENCY_S after GitHub queues the job), a reconciler and a
    scale-down every minute — the planners the Lambdas run, fed only by what the webhooks
    (`queued`, `in_progress`, `completed`, each that latency late) and one runner listing per
    cycle tell the ledger. A host powers off after its runner exits (billed through its
    shutdown); one of a pool with `estate.reuse_hosts` first waits a little for a next one-job
    runner, which scale-up gives it when the planner says so. Jobs a capped pool cannot launch
    for move to the next pool that serves them (core/overflow.py)."""

    name = "estate"
    boots_estate_image = True  # a pool boots the estate's baked image unless it says `source: ami`

    def start(self, sim: Simulation) -> None:
        # The same settings the deploy compiles, and the planner's own choice of pools to scale.
        self.settings: dict[str, PoolSettings] = scaled_pools({n: pool_settings(p) for n, p in sim.pools.items()})
        self._start_warm_pools(sim)
        self.queued: dict[int, Job] = {}  # the ledger's queued jobs, as the webhooks told it
        self.moved_on: set[int] = set()  # jobs an in_progress or completed webhook has closed
        self.hosts: dict[str, Instance] = {}  # the ledger's hosts
        self.waiting: dict[str, float] = {}  # reusable host -> when it powers off unless given a runner
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
            "warm_instances": self.warm_counts(),
        }

    # ---- webhooks, each CONTROL_PLANE_LATENCY_S after GitHub sent it ------------------------
    def on_job_queued(self, sim: Simulation, job: SimJob) -> None:
        if job.pool in self.settings:
            sim.at(sim.now + timings.CONTROL_PLANE_LATENCY_S, self._queued, sim, job)

    def _queued(self, sim: Simulation, job: SimJob) -> None:
        if job.index in self.moved_on or job.pool is None:  # a late `queued` never undoes a later state
            return
        on_demand = job.index in self.on_demand_jobs  # a re-run its own pool launches on-demand for
        self.queued[job.index] = Job(job.index, job.pool, QUEUED, job.queued_at, labels=tuple(job.labels), on_demand=on_demand)
        self.scale_up(sim, job.pool)

    def on_job_started(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        sim.at(sim.now + timings.CONTROL_PLANE_LATENCY_S, self._in_progress, job, slot.host.id)

    def _in_progress(self, job: SimJob, host_id: str) -> None:
        self.moved_on.add(job.index)
        self.queued.pop(job.index, None)
        if (record := self.hosts.get(host_id)) is not None and record.job_id is None:
            self.hosts[host_id] = replace(record, job_id=job.index)

    def on_job_cancelled(self, sim: Simulation, job: SimJob) -> None:
        sim.at(sim.now + timings.CONTROL_PLANE_LATENCY_S, self._completed, sim, job, None, sim.now)

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        host = slot.host
        pool = self.settings.get(host.pool)
        if pool is not None and host.id in self.hosts:
            ran = self.hosts[host.id].jobs_done + 1
            if pool.max_jobs_per_host > 1 and ran < pool.max_jobs_per_host:
                # The host program waits for a next config (lambda_src/host/bootstrap.py serve_jobs).
                slot.free_from = math.inf
                self.waiting[host.id] = sim.now + REUSE_WAIT_S
                sim.at(self.waiting[host.id], self._no_next_runner, sim, host, self.waiting[host.id])
            else:
                sim.shut_down(host, timings.ESTATE_SHUTDOWN_TAIL_S)
        sim.at(sim.now + timings.CONTROL_PLANE_LATENCY_S, self._completed, sim, job, host.id, sim.now)

    def _completed(self, sim: Simulation, job: SimJob, host_id: str | None, finished_at: float) -> None:
        self.moved_on.add(job.index)
        self.queued.pop(job.index, None)
        record = self.hosts.get(host_id or "")
        if record is None or record.spent:
            return
        self.hosts[record.id] = replace(record, job_id=job.index, jobs_done=record.jobs_done + 1, finished_at=finished_at)
        if self.settings[record.pool].max_jobs_per_host > 1:  # a spent host may take a waiting job
            self.scale_up(sim, record.pool)

    def _no_next_runner(self, sim: Simulation, host: Host, deadline: float) -> None:
        if self.waiting.get(host.id) == deadline:
            del self.waiting[host.id]
            sim.shut_down(host, timings.ESTATE_SHUTDOWN_TAIL_S)

    # ---- the ledger as the planners read it --------------------------------------------------
    def _jobs(self) -> list[Job]:
        return list(self.queued.values())

    def _instances(self, sim: Simulation) -> list[Instance]:
        return [self.hosts[h.id] for h in sim.live_hosts() if h.id in self.hosts]

    def _launch(self, sim: Simulation, order: LaunchOrder) -> None:
        """The order's on-demand part (retries) on-demand, all of it while the pool's breaker is
        open; the rest from the pool's ready warm instances first (`pick_warm`), fresh hosts for
        what they do not cover or fail to start; each host recorded in the ledger with its first
        runner's name, each launch counted in the ledger's demand history."""
        if order.count <= 0:
            return
        on_demand = order.count if self.off_spot.get(order.pool, 0.0) > sim.now else order.on_demand
        if not (on_demand and self.settings[order.pool].capacity_type == "spot"):
            on_demand = 0
        made = self._start_warm(sim, order.pool, order.count - on_demand)
        if on_demand:
            made += sim.launch(order.pool, on_demand, market="on-demand")
        made += sim.launch(order.pool, order.count - on_demand - len(made))
        history = self.launches.setdefault(order.pool, {})
        history[demand_bucket(sim.now)] = history.get(demand_bucket(sim.now), 0) + order.count
        prefix = self.settings[order.pool].name_prefix
        for host in made:
            name = runner_name(prefix, ENVIRONMENT, order.pool, host.id)
            self.hosts[host.id] = Instance(host.id, order.pool, host.launched_at, jit_at=sim.now, runner_name=name)

    def _orders(self, sim: Simulation) -> list[LaunchOrder]:
        """Every scaled pool's launch order, after the jobs capped pools cannot launch for have
        moved on (the moved jobs' pool changes, as the ledger's does)."""
        jobs, instances = self._jobs(), self._instances(sim)
        orders = plan_launches(self.settings, jobs, instances, sim.now)
        moves = plan_overflow(sim.routing, orders, jobs)
        if not moves:
            return orders
        for move in moves:
            if move.to is None:  # no pool may take it: it stops counting as demand
                del self.queued[move.job.id]
            else:
                self.queued[move.job.id] = replace(self.queued[move.job.id], pool=move.to)
            sim.jobs[move.job.id].pool = move.to
        return plan_launches(self.settings, self._jobs(), instances, sim.now)

    def scale_up(self, sim: Simulation, pool: str) -> None:
        if self.settings[pool].max_jobs_per_host > 1:
            self._reuse_spent_hosts(sim, self.settings[pool])
        orders = {o.pool: o for o in plan_launches(self.settings, self._jobs(), self._instances(sim), sim.now, only=[pool])}
        if orders[pool].count < orders[pool].shortfall:  # capped: what it cannot launch for moves on now
            orders = {o.pool: o for o in self._orders(sim) if o.pool == pool or o.count}
        for order in orders.values():
            self._launch(sim, order)

    def _reuse_spent_hosts(self, sim: Simulation, pool: PoolSettings) -> None:
        """As control_plane._reuse_spent_hosts: a waiting spent host gets a next runner config
        where the planner says a queued job wants it."""
        live = {h.id: h for h in sim.live_hosts(pool.name)}
        jobs = self._jobs()
        spent = sorted((i for i in self._instances(sim) if i.pool == pool.name and i.spent), key=lambda i: i.finished_at or 0.0)
        for record in spent:
            if record.id not in self.waiting or not plan_reuse(pool, record, jobs, self._instances(sim), sim.now):
                continue
            name = runner_name(pool.name_prefix, ENVIRONMENT, pool.name, record.id, record.generation + 1)
            self.hosts[record.id] = record.given_next_runner(name, sim.now)
            del self.waiting[record.id]
            slot = live[record.id].slots[0]
            slot.free_from = sim.now + NEXT_RUNNER_S
            sim.at(slot.free_from, sim.assign)

    def cycle(self, sim: Simulation) -> None:
        # Reconcile: interrupted jobs re-run, then what is queued and not covered, for every pool.
        self._rerun_interrupted(sim)
        for order in self._orders(sim):
            self._launch(sim, order)
        self._plan_warm_pools(sim)
        # Scale-down, from one runner listing: the runners that are online (registered, not
        # yet exited), busy as GitHub says.
        instances = self._instances(sim)
        hosts = {h.id: h for h in sim.live_hosts()}
        runners = [
            GithubRunner(i, self.hosts[h.id].runner_name, True, h.slots[0].job is not None)
            for i, h in enumerate(hosts.values())
            if h.id in self.hosts and h.ready(sim.now) and sim.now >= h.slots[0].free_from
        ]
        plan = plan_scale_down(self.settings, ENVIRONMENT, instances, runners, self._jobs(), sim.now)
        for iid in plan.registered:
            self.hosts[iid] = replace(self.hosts[iid], registered_at=sim.now)
        for iid in plan.first_idle:
            self.hosts[iid] = replace(self.hosts[iid], idle_since=sim.now)
        for iid in plan.not_idle:
            self.hosts[iid] = replace(self.hosts[iid], idle_since=None)
        for retire in plan.retire:
            host = hosts.get(retire.instance_id or "")
            if host is not None and host.slots[0].job is None:  # deleting a busy runner fails (422): the host stays
                self.waiting.pop(host.id, None)
                sim.terminate(host)

    # ---- stopped warm pools (lambda_src/core/warm_pools.py) ----------------------------------
    def _start_warm_pools(self, sim: Simulation) -> None:
        """Each scaled pool's `PoolSettings.warm` (estate.warm_pool; adaptive by default on the
        baked image), the ledger's launch history before time 0 (`sim.launch_history`), and the
        warm instances the estate had at time 0: each pool's target then, ready, their one boot
        paid before the simulated time (as this run's last warm instances' boots serve the next)."""
        self.warm_pools = {n: s.warm for n, s in self.settings.items() if s.warm.mode != OFF and s.warm.maximum > 0}
        self.launches: dict[str, dict[int, int]] = {p: dict(b) for p, b in sim.launch_history.items()}
        self.warm: dict[str, WarmInstance] = {}
        self.warm_hosts: dict[str, Host] = {}  # warm instances booting once
        self.stopped_since: dict[str, float] = {}
        self.ebs_gib_s: dict[str, float] = {}
        self.warm_ids = itertools.count(1)
        self.warm_stats = Counter[str]()
        self.volume_gib = {n: warm_volume_gib(sim.pools[n]) for n in self.warm_pools}
        for pool, target in self._warm_targets(sim).items():
            for _ in range(target):
                self._add_warm(sim, pool, sim.now, ready=True)

    def _image(self, sim: Simulation, pool: str) -> str:
        """The pool's newest image: its family's, rebuilt on the image schedule."""
        built = math.floor((sim.now - timings.IMAGE_FIRST_BUILD_S) / timings.IMAGE_BUILD_PERIOD_S)
        return f"{sim.pools[pool].image_family}-{built}"

    def _warm_targets(self, sim: Simulation) -> dict[str, int]:
        """`launch_size` per pool from the ledger's history, then the EBS budget (`within_budget`;
        the estate sets none yet)."""
        targets = {p: launch_size(w, self.launches.get(p, {}), sim.now) for p, w in self.warm_pools.items()}
        return within_budget(targets, self.volume_gib, None)

    def _add_warm(self, sim: Simulation, pool: str, launched_at: float, ready: bool) -> str:
        wid = f"w-{next(self.warm_ids)}"
        self.warm[wid] = WarmInstance(wid, pool, launched_at, self._image(sim, pool), ready)
        if ready:
            self.stopped_since[wid] = sim.now
        return wid

    def _plan_warm_pools(self, sim: Simulation) -> None:
        """The reconciler's warm-pool step: retire and launch as `plan_warm_pool` says, keeping
        what the target wants again within the hold (`held_size`)."""
        held = {p: held_size(w, self.launches.get(p, {}), sim.now) for p, w in self.warm_pools.items()}
        keep = within_budget(held, self.volume_gib, None)
        for pool, target in self._warm_targets(sim).items():
            image = self._image(sim, pool)
            boot_timeout_s = 60 * sim.pools[pool].runner.runner_boot_time_in_minutes
            plan = plan_warm_pool(pool, self.warm_pools[pool], self.warm.values(), target, image, sim.now, keep[pool], boot_timeout_s)
            for wid in plan.retire:
                self._drop_warm(sim, wid)
                self.warm_stats["retired"] += 1
            for _ in range(plan.launch):
                once = timings.boot_once_s(sim.pools[pool])
                host = sim.launch_warm(pool, once)
                if host is None:
                    continue  # refused for capacity: the next cycle tries again
                wid = self._add_warm(sim, pool, sim.now, ready=False)
                self.warm_hosts[wid] = host
                self.warm_stats["launched"] += 1
                sim.at(host.ready_at, self._warm_stopped, sim, wid)

    def _warm_stopped(self, sim: Simulation, wid: str) -> None:
        """The warm instance has booted once and powered off: ready to be started."""
        if wid in self.warm:
            self.warm[wid] = replace(self.warm[wid], ready=True)
            self.warm_hosts.pop(wid, None)
            self.stopped_since[wid] = sim.now

    def _drop_warm(self, sim: Simulation, wid: str) -> None:
        """Out of the warm pool (started or terminated): its stopped EBS time is counted."""
        instance = self.warm.pop(wid)
        since = self.stopped_since.pop(wid, None)
        if since is not None:
            self.ebs_gib_s[instance.pool] = self.ebs_gib_s.get(instance.pool, 0.0) + self.volume_gib[instance.pool] * (sim.now - since)
        host = self.warm_hosts.pop(wid, None)
        if host is not None and host.alive:  # retired while booting once
            sim.terminate(host)

    def _start_warm(self, sim: Simulation, pool: str, count: int) -> list[Host]:
        """Start up to `count` of the pool's ready warm instances for a launch; one whose start is
        refused for capacity stays stopped, and the launch boots a fresh host instead."""
        if pool not in self.warm_pools or count <= 0:
            return []
        started = []
        boot = timings.BOOT_S[timings.stopped_start_path(sim.pools[pool])]
        for wid in pick_warm(self.warm.values(), pool, count, self._image(sim, pool)):
            host = sim.start_warm(pool, boot)
            if host is None:
                self.warm_stats["start_failures"] += 1
                continue
            self._drop_warm(sim, wid)
            self.warm_stats["starts"] += 1
            started.append(host)
        return started

    def extra_costs(self, sim: Simulation) -> dict[str, dict[str, float]]:
        """What the estate pays beyond instance time: its warm instances' EBS while stopped (per
        pool) and its image builds (per family, the weekly build and the image's snapshot spread
        over the simulated time)."""
        gib_s = dict(self.ebs_gib_s)
        for wid, since in self.stopped_since.items():
            pool = self.warm[wid].pool
            gib_s[pool] = gib_s.get(pool, 0.0) + self.volume_gib[pool] * (sim.end - since)
        return {
            "warm_ebs_usd": {p: timings.ebs_usd(v) for p, v in gib_s.items()},
            "image_builds_usd": image_builds_usd(sim),
        }

    def warm_counts(self) -> dict[str, int]:
        return {key: self.warm_stats[key] for key in ("launched", "starts", "start_failures", "retired")}


def warm_volume_gib(pool: Pool) -> float:
    """A warm instance's EBS: the pool's disks, the root at least the image's (as the launch
    template sizes it: estate/derive/images.py launch_disks)."""
    disks = pool.runner.block_device_mappings
    root = float(getattr(RootVolumes(), pool.accelerator))
    if "block_device_mappings" not in pool.runner.model_fields_set:
        return max(float(disks[0].volume_size), root)
    return float(sum(d.volume_size for d in disks))


def image_builds_usd(sim: Simulation) -> dict[str, float]:
    """Per image family the estate's pools boot: each build's instance time on the family's
    first build instance type, on-demand (timings.IMAGE_BUILD_MINUTES), one per
    IMAGE_BUILD_PERIOD_S, and its snapshot's storage, over the simulated time."""
    out: dict[str, float] = {}
    for pool in sim.pools.values():
        family = pool.image_family
        if family is None or family in out:
            continue
        accelerator, _, architecture = family.partition("-")
        try:
            hourly = sim.prices.hourly(DEFAULT_BUILD_INSTANCE_TYPES[architecture][0], "on-demand")  # type: ignore[index]
        except PriceError:
            hourly = 0.0
        build = timings.IMAGE_BUILD_MINUTES[accelerator] / 60 * hourly
        snapshot_month = getattr(RootVolumes(), accelerator) * timings.SNAPSHOT_USD_PER_GB_MONTH
        out[family] = sim.end / timings.IMAGE_BUILD_PERIOD_S * build + sim.end / 3600 / timings.HOURS_PER_MONTH * snapshot_month
    return out


class PhilipsPolicy(BasePolicy):
    """terraform-aws-github-runner's multi-runner module, as each pool file configures it.

    Scale-up, one SQS message per `queued` webhook, delayed `delay_webhook_event`
    (modules/multi-runner/queues.tf:32) and seen timings.CONTROL_PLANE_LATENCY_S after GitHub sent it:
    - the job-queued check: on by default, off by default for ephemeral runners
      (modules/runners/main.tf:57); when on, a job GitHub no longer lists as queued launches
      nothing (lambdas/functions/control-plane/src/scale-runners/scale-up.ts:227-247);
    - one runner per message while the pool's instances are under `runners_maximum_count`
      (scale-up.ts:259-278). A message the cap refused is retried only for ephemeral runners
      (scale-up.ts:282-292); retried messages and those of failed launches (InsufficientInstance-
      Capacity is in the default `scale_errors`, modules/multi-runner/variables.tf:114-124;
      scale-up.ts:360-363) go back to SQS and return after the queue's visibility timeout,
      `runners_scale_up_lambda_timeout` (modules/multi-runner/queues.tf:33, default 30 s at
      modules/multi-runner/variables.tf:335-338; lambdas/functions/control-plane/src/lambda.ts:51-70),
      until `job_queue_retention_in_seconds` (queues.tf:34) or the redrive policy's
      `maxReceiveCount` (queues.tf:36-39) ends them. The job-retry module is off by default
      (modules/runners/variables.tf:837) and not modelled.
    Runners take further jobs unless `enable_ephemeral_runners`; an ephemeral one's instance is
    terminated 10 s after its job (timings.PHILIPS_EPHEMERAL_TAIL_S). Scale-down runs on each
    pool's `scale_down_schedule_expression` (modules/runners/scale-down.tf:76), and for each
    registered runner older than `minimum_running_time_in_minutes` (default 5 on Linux,
    modules/runners/scale-down.tf:5-9), newest first under the default `oldest_first` eviction,
    keeps `idle_config`'s idleCount (busy runners use it up too) and removes the rest that are
    not busy (lambdas/functions/control-plane/src/scale-runners/scale-down.ts:226-263, 187-194).
    The pool function adjusts the pool to `pool_config`'s `size` idle runners on its schedule."""

    name = "philips"
    EPHEMERAL: bool | None = None  # None: as each pool file says
    DELAY_S: float | None = None  # None: each pool's delay_webhook_event
    VISIBILITY_TIMEOUT_S = 30.0  # runners_scale_up_lambda_timeout's default

    def start(self, sim: Simulation) -> None:
        self.settings = {n: pool_settings(sim.pools[n]) for n in _scaled(sim)}  # for the idle and pool windows
        sim.provision_blocks()
        sim.every(60.0, self.tick, start=0.0)

    def ephemeral(self, sim: Simulation, pool: str) -> bool:
        return sim.pools[pool].runner.enable_ephemeral_runners if self.EPHEMERAL is None else self.EPHEMERAL

    def queued_check(self, sim: Simulation, pool: str) -> bool:
        configured = sim.pools[pool].runner.enable_job_queued_check
        return not self.ephemeral(sim, pool) if configured is None else configured

    def tick(self, sim: Simulation) -> None:
        """Every minute, as EventBridge fires schedules: the pool function, then each pool's scale-down."""
        when = datetime.fromtimestamp(sim.now, UTC)
        if any(s.pool_windows for s in self.settings.values()):
            self.adjust_pools(sim, when)
        for name in self.settings:
            if cron.fires(sim.pools[name].runner.scale_down_schedule_expression, when):
                self.scale_down(sim, name)

    def adjust_pools(self, sim: Simulation, when: datetime) -> None:
        for name, settings in self.settings.items():
            size = max((w.size for w in settings.pool_windows if cron.fires(w.schedule, when, w.time_zone)), default=0)
            hosts = [h for h in sim.live_hosts(name) if h.leaving_at is None]
            idle = sum(1 for h in hosts if h.slots[0].job is None)
            room = sim.pools[name].runner.runners_maximum_count - len(sim.live_hosts(name))
            sim.launch(name, max(0, min(size - idle, room)))

    def on_job_queued(self, sim: Simulation, job: SimJob) -> None:
        if job.pool is not None and job.pool in self.settings:
            delay = sim.pools[job.pool].runner.delay_webhook_event if self.DELAY_S is None else self.DELAY_S
            sim.at(sim.now + timings.CONTROL_PLANE_LATENCY_S + delay, self.scale_up, sim, job, job.pool, sim.now, 1)

    def scale_up(self, sim: Simulation, job: SimJob, pool: str, sent_at: float, receives: int) -> None:
        if self.queued_check(sim, pool) and job not in sim.queue:
            return  # GitHub says the job is no longer queued: the message is dropped
        if len(sim.live_hosts(pool)) >= sim.pools[pool].runner.runners_maximum_count:
            if self.ephemeral(sim, pool):
                self._retry(sim, job, pool, sent_at, receives)
            return
        if not sim.launch(pool, 1):  # refused for capacity, no failover: a retryable error
            self._retry(sim, job, pool, sent_at, receives)

    def _retry(self, sim: Simulation, job: SimJob, pool: str, sent_at: float, receives: int) -> None:
        rc = sim.pools[pool].runner
        back = sim.now + self.VISIBILITY_TIMEOUT_S
        if back - sent_at > rc.job_queue_retention_in_seconds or not sim.work_left(back):
            return  # expired (or past the trace with nothing left to serve)
        redrive = sim.pools[pool].spec.redrive_build_queue
        if redrive is not None and redrive.enabled and redrive.maxReceiveCount is not None and receives >= redrive.maxReceiveCount:
            return  # moved to the dead-letter queue
        sim.at(back, self.scale_up, sim, job, pool, sent_at, receives + 1)

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        if slot.host.pool in self.settings and self.ephemeral(sim, slot.host.pool):
            sim.shut_down(slot.host, timings.PHILIPS_EPHEMERAL_TAIL_S)

    def scale_down(self, sim: Simulation, name: str) -> None:
        rc = sim.pools[name].runner
        minimum = 60 * (5 if rc.minimum_running_time_in_minutes is None else rc.minimum_running_time_in_minutes)
        keep, eviction = warm_target(self.settings[name], sim.now)
        registered = [h for h in sim.live_hosts(name) if h.ready(sim.now)]
        registered.sort(key=lambda h: h.launched_at, reverse=eviction != "newest_first")
        for host in registered:
            if sim.now - host.launched_at <= minimum:
                continue
            if keep > 0:
                keep -= 1
            elif host.slots[0].job is None:
                sim.terminate(host)


class PhilipsEphemeralPolicy(PhilipsPolicy):
    """terraform-aws-github-runner as its ephemeral example runs it: the same pool files with
    `enable_ephemeral_runners: true` and `delay_webhook_event: 0` (examples/ephemeral/main.tf:55,
    63); the job-queued check is left at the module's default for ephemeral runners, off
    (modules/runners/main.tf:57), unless a pool file sets it."""

    name = "philips-ephemeral"
    EPHEMERAL = True
    DELAY_S = 0.0


@dataclass
class _Group:
    """One Elastic CI Stack: its Auto Scaling group and the state its scaler keeps."""

    key: str  # the hosts' pool: a GitHub pool's name or QUEUE_PREFIX + queue
    min_size: int
    max_size: int
    agents_per_instance: int
    idle_s: float
    terminate_after_job: bool
    desired: int = 0
    last_scale_out: float | None = None


class BuildkitePolicy(BasePolicy):
    """The Buildkite Elastic CI Stack for AWS and its buildkite-agent-scaler, defaults as the
    stack sets them. One stack per `buildkite_queue` file (its MinSize, MaxSize,
    AgentsPerInstance, ScaleInIdlePeriod, BuildkiteTerminateInstanceAfterJob) and, for jobs
    with no `queue=` label, one per GitHub pool (MinSize 0, MaxSize its runners_maximum_count,
    one agent per instance, ScaleInIdlePeriod 600 s: elastic-ci-stack templates/aws-stack.yml:756-762).

    - Polls: EventBridge invokes the scaler once a minute (buildkite-agent-scaler
      template.yaml:47-51, 359-361); each run polls every 10 s (template.yaml:134-137,
      lambda/main.go:51, 208-236) until its 50 s timeout (template.yaml:348): at 0, 10, 20, 30
      and 40 s past each minute.
    - Desired instances: ceil((scheduled + running jobs) / AgentsPerInstance)
      (scaler/scaling_calculator.go:99-115), raised to the group's desired + 1 while fewer than
      half the expected agents are connected, jobs wait and the group's InService count equals
      its desired count (availability boost, scaling_calculator.go:117-152; threshold 0.5,
      template.yaml:78-82; InService counted in scaler/asg.go:404-428), within MinSize..MaxSize.
    - Scale-out when that exceeds the InService count (or the desired count while none is
      InService) and the desired count (scaler/scaler.go:238-250), at most once per
      ScaleOutCooldownPeriod, 300 s (scaler/scaler.go:580-599; aws-stack.yml:343-346).
      Scale-in is off (DisableScaleIn true, aws-stack.yml:288-294; scaler/scaler.go:311-315).
    - Instances boot in timings.BUILDKITE_BOOT_S. An agent leaves after ScaleInIdlePeriod idle
      or, with BuildkiteTerminateInstanceAfterJob, after its job (bk-install-elastic-stack.sh:
      493-494); the instance then terminates itself 10 s later, decrementing the desired count,
      or, at MinSize, without decrementing it, so the group launches a replacement
      (buildkite-agent/systemd/buildkite-agent.service:18, scripts/terminate-instance:83-116).
    """

    name = "buildkite"
    uses_buildkite_queues = True  # jobs labelled queue=<name> go to that queue file's settings
    POLL_OFFSETS_S = (0.0, 10.0, 20.0, 30.0, 40.0)
    SCALE_OUT_COOLDOWN_S = 300.0
    AVAILABILITY_THRESHOLD = 0.5
    SCALE_IN_IDLE_S = 600.0

    def start(self, sim: Simulation) -> None:
        sim.provision_blocks()
        self.groups: dict[str, _Group] = {}
        for queue in sim.queues.values():
            q = queue.settings
            key = f"{QUEUE_PREFIX}{q.queue.lower()}"
            idle = float(q.scale_in_idle_seconds)
            self.groups[key] = _Group(key, q.min_size, q.max_size, q.agents_per_instance, idle, q.terminate_after_job)
        for name in _scaled(sim):
            self.groups[name] = _Group(name, 0, sim.pools[name].runner.runners_maximum_count, 1, self.SCALE_IN_IDLE_S, False)
        for group in self.groups.values():  # the group starts with MinSize instances
            group.desired = group.min_size
            sim.at(0.0, self._asg, sim, group)
        sim.every(60.0, self._invoke, start=0.0)

    def _invoke(self, sim: Simulation) -> None:
        for offset in self.POLL_OFFSETS_S:
            sim.at(sim.now + offset, self._poll, sim)

    def _poll(self, sim: Simulation) -> None:
        scheduled = Counter(j.pool for j in sim.queue)
        for group in self.groups.values():
            self._scale(sim, group, scheduled[group.key])

    def _scale(self, sim: Simulation, group: _Group, scheduled: int) -> None:
        hosts = sim.live_hosts(group.key)  # in the group until their terminate call
        running = sum(1 for h in hosts for s in h.slots if s.job is not None)
        agents = sum(len(h.slots) for h in hosts if h.ready(sim.now))
        in_service = sum(1 for h in hosts if sim.now - h.launched_at >= timings.EC2_PENDING_S)
        required = scheduled + running
        desired = math.ceil(required / group.agents_per_instance) if required else 0
        count = in_service or group.desired
        expected = group.agents_per_instance * count
        if required and expected and agents / expected < self.AVAILABILITY_THRESHOLD and in_service == group.desired:
            desired = max(desired, group.desired + 1 if group.desired else 1)
        desired = min(max(desired, group.min_size), group.max_size)
        if desired > count and desired > group.desired:
            if group.last_scale_out is not None and sim.now - group.last_scale_out < self.SCALE_OUT_COOLDOWN_S:
                return
            group.desired, group.last_scale_out = desired, sim.now
        self._asg(sim, group)

    def _asg(self, sim: Simulation, group: _Group) -> None:
        """The Auto Scaling group launches what its desired count lacks (and retries a launch
        refused for capacity at the scaler's next look)."""
        missing = group.desired - len(sim.live_hosts(group.key))
        if missing <= 0:
            return
        if group.key.startswith(QUEUE_PREFIX):
            made = sim.launch_queue_hosts(group.key, missing)
        else:
            made = sim.launch(group.key, missing, boot_s=sim.boot(timings.BUILDKITE_BOOT_S))
        for host in made:
            sim.at(host.ready_at + group.idle_s, self._idle_check, sim, group, host)

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        group = self.groups.get(slot.host.pool)
        if group is None:
            return
        if group.terminate_after_job:
            self._leave(sim, group, slot.host)
        else:
            sim.at(sim.now + group.idle_s, self._idle_check, sim, group, slot.host)

    def _idle_check(self, sim: Simulation, group: _Group, host: Host) -> None:
        if host.ready(sim.now) and all(s.job is None and sim.now - s.idle_since >= group.idle_s for s in host.slots):
            self._leave(sim, group, host)

    def _leave(self, sim: Simulation, group: _Group, host: Host) -> None:
        """The agent has disconnected; 10 s later the instance asks the group to terminate it."""
        sim.shut_down(host, timings.BUILDKITE_TERMINATE_TAIL_S)
        sim.at(sim.now + timings.BUILDKITE_TERMINATE_TAIL_S, self._terminated, sim, group)

    def _terminated(self, sim: Simulation, group: _Group) -> None:
        if group.desired > group.min_size:
            group.desired -= 1  # --should-decrement-desired-capacity
        elif sim.work_left(sim.now):  # at MinSize: the group replaces it (not past the trace)
            self._asg(sim, group)


class StaticPolicy(BasePolicy):
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


class IdealPolicy(BasePolicy):
    """The lower bound: a runner exists exactly while a job runs, with no boot and no idle (EC2
    still bills a minute at least). A capacity-block job pays the block's per-GPU rate for its
    slot only."""

    name = "ideal"

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

    def on_job_done(self, sim: Simulation, job: SimJob, slot: Slot) -> None:
        sim.terminate(slot.host)


POLICIES: dict[str, type[BasePolicy]] = {
    p.name: p for p in (EstatePolicy, PhilipsPolicy, PhilipsEphemeralPolicy, BuildkitePolicy, StaticPolicy, IdealPolicy)
}
