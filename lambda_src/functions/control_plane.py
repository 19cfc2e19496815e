"""The control plane's shell: read state, ask the planners, apply their plans.

One object serves the scale-up, reconcile and scale-down handlers, `estate serve` and the
end-to-end tests; only the adapters it is built with differ (AWS or moto, GitHub or our fake).
Every step is safe to repeat: a crashed invocation's half-done work is finished or undone by
the next one (see `sync_hosts`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from lambda_src.aws.ec2_fleet import START_LATER_CODES, Ec2Fleet, LaunchResult
from lambda_src.aws.jit_parameters import JitParameters
from lambda_src.aws.ledger import BOOTING, READY, STARTED, STARTING, Ledger, WarmRecord, planning_lock
from lambda_src.core.fleet_state import COMPLETED, IN_PROGRESS, QUEUED, Instance, Job, runner_name
from lambda_src.core.interruptions import STEER_S, decide_rerun, job_from_github, on_demand_sibling
from lambda_src.core.job_messages import jobs_by_pool
from lambda_src.core.observe import PoolView, pool_views
from lambda_src.core.overflow import apply_moves, origin_of, plan_overflow
from lambda_src.core.planner import (
    LaunchOrder,
    least_recently_done,
    plan_host_sync,
    plan_launches,
    plan_reuse,
    plan_scale_down,
    reuse_pending,
    scaled_pools,
)
from lambda_src.core.settings import ControlPlaneSettings, PoolSettings
from lambda_src.core.tags import WARM_CONFIG
from lambda_src.core.warm_pools import (
    OFF,
    demand_bucket,
    held_size,
    history_buckets,
    launch_size,
    pick_warm,
    plan_warm_pool,
    warm_launch_token,
    within_budget,
)
from lambda_src.functions.run_workflows import name_run_workflows
from lambda_src.github.client import GithubClient, GithubError, RateLimitedError

log = logging.getLogger("runner_estate.control_plane")

STALE_JOB_S = 120.0  # a queued job this old is checked against GitHub (its later webhooks may be lost)
# Per-cycle budgets of GitHub calls, spent least recently done first (planner.least_recently_done):
# of n stale jobs every one is checked within ceil(n / 30) cycles, of n active repositories every
# one is scanned within ceil(n / 10) cycles (docs/runbook.md states the bound).
MAX_JOB_CHECKS = 30
MAX_REPO_SCANS = 10
MAX_RERUN_CHECKS = 10  # warned hosts whose job is judged per cycle (each may cost a GitHub call or two)
REPO_SCAN_WINDOW_S = 3600.0  # repositories with a job this recently are scanned for jobs we never heard of


@dataclass
class Report:
    launched: dict[str, list[str]] = field(default_factory=dict)
    orders: dict[str, LaunchOrder] = field(default_factory=dict)  # the last decision per pool
    retired: list[dict[str, Any]] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # spent hosts given their next runner config
    undone: list[str] = field(default_factory=list)
    closed_jobs: list[int] = field(default_factory=list)
    found_jobs: list[int] = field(default_factory=list)
    failed_pools: dict[str, str] = field(default_factory=dict)
    repo_errors: dict[str, str] = field(default_factory=dict)  # repositories GitHub would not show us this cycle
    rerouted: list[dict[str, Any]] = field(default_factory=list)  # queued jobs moved on (core/overflow.py)
    overdue: list[str] = field(default_factory=list)  # hosts retired past their pool's maximum lifetime
    reruns: list[int] = field(default_factory=list)  # spot-interrupted jobs re-run (GitHub's single-job re-run)
    rerun_skipped: list[int] = field(default_factory=list)  # jobs of warned hosts that ended on their own
    steered: list[int] = field(default_factory=list)  # retries of re-run jobs sent to on-demand capacity
    off_spot: dict[str, float] = field(default_factory=dict)  # pools the breaker keeps off spot, until when
    views: dict[str, PoolView] = field(default_factory=dict)  # each pool as the cycle left it (metrics; core/observe.py)
    # Stopped warm pools (core/warm_pools.py): started for a job, whose start EC2 refused (a fresh
    # host was launched instead), launched into a warm pool, terminated out of one.
    warm_started: list[str] = field(default_factory=list)
    warm_start_failed: list[str] = field(default_factory=list)
    warm_launched: list[str] = field(default_factory=list)
    warm_retired: list[str] = field(default_factory=list)
    warm_ended: list[str] = field(default_factory=list)  # started for a job, stopped after it, then terminated
    warm_targets: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "launched": {p: len(ids) for p, ids in self.launched.items() if ids},
            "retired": len(self.retired),
            "adopted": len(self.adopted),
            "reused": len(self.reused),
            "undone": len(self.undone),
            "closed_jobs": len(self.closed_jobs),
            "found_jobs": len(self.found_jobs),
            "failed_pools": self.failed_pools,
            "repo_errors": len(self.repo_errors),
            "rerouted": len(self.rerouted),
            "lifetime_exceeded": len(self.overdue),
            "reruns": len(self.reruns),
            "reruns_skipped": len(self.rerun_skipped),
            "steered_on_demand": len(self.steered),
            "off_spot": len(self.off_spot),
            "warm_started": len(self.warm_started),
            "warm_start_failed": len(self.warm_start_failed),
            "warm_launched": len(self.warm_launched),
            "warm_retired": len(self.warm_retired),
            "warm_ended": len(self.warm_ended),
            "capped": {pool: o.reason for pool, o in sorted(self.orders.items()) if o.reason.startswith("capped")},
        }


@dataclass
class ControlPlane:
    settings: ControlPlaneSettings
    ledger: Ledger
    fleet: Ec2Fleet
    jit: JitParameters
    github: GithubClient
    clock: Callable[[], float]
    sleep: Callable[[float], None] = time.sleep
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)
    last_report: Report | None = field(default=None, init=False)  # scale-up's, for the handler's metrics

    def planning(self, pool: str) -> AbstractContextManager[list[tuple[str, float]]]:
        return planning_lock(self.ledger, pool, self.holder, self.sleep)

    @cached_property
    def scaled_pools(self) -> dict[str, PoolSettings]:
        return scaled_pools(self.settings.pools)

    # ---- scale-up (SQS batch) ---------------------------------------------------------
    def scale_up(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Launch for the pools these messages name. Returns the ids of messages to retry."""
        now = self.clock()
        by_pool, failures = jobs_by_pool(records, self.settings.pools, now)
        if not by_pool:
            return failures
        report = self.last_report = Report()
        live = self.sync_hosts(now, report)
        by_pool = self._steer_retries(by_pool, now, report)
        refused = self._refused_by_workflow(by_pool)
        if refused:  # moved to a pool whose group admits them, or dropped, before anything launches
            queued = {j.id: j for j in self.ledger.queued_jobs()} | refused  # the index may not show the workflows yet
            self._overflow(list(queued.values()), live, now, report, plan_targets=True)
        for pool, items in sorted(by_pool.items()):
            if pool not in self.scaled_pools:
                continue
            items = [(m, j) for m, j in items if j.id not in refused]
            token = hashlib.sha256("|".join(sorted(m for m, _ in items)).encode()).hexdigest()[:24]
            try:
                self._scale_pool(pool, [j for _, j in items], live, token, report, now)
            except Exception as exc:  # reported per message, retried by SQS, logged
                log.exception("scale-up of pool %s failed; its %d messages will be retried", pool, len(items))
                report.failed_pools[pool] = str(exc)[:200]
                failures += [m for m, _ in items]
        if any(o.count < o.shortfall for o in report.orders.values()):  # a capped pool: its extra jobs move on now
            self._overflow(self.ledger.queued_jobs(), live, now, report, plan_targets=True)
        log.info("scale-up: %s", json.dumps(report.summary()))
        return failures

    def _steer_retries(self, by_pool: dict[str, list[tuple[str, Job]]], now: float, report: Report) -> dict[str, list[tuple[str, Job]]]:
        """The retry of a job re-run after a spot interruption goes to on-demand capacity: moved
        to the pool's on-demand sibling, or marked for an on-demand launch of its own pool."""
        steering = self.ledger.steering(now)
        steered: dict[str, list[tuple[str, Job]]] = {}
        for items in by_pool.values():
            for message, job in items:
                target, job = self._steer(job, steering, report)
                steered.setdefault(target, []).append((message, job))
        return steered

    def _steer(self, job: Job, steering: Mapping[tuple[str, int], int], report: Report) -> tuple[str, Job]:
        if job.run_id is None or job.on_demand or job.pool not in self.scaled_pools:
            return job.pool, job
        after = steering.get((job.repo, job.run_id))
        if after is None or (job.run_attempt or 1) <= after:
            return job.pool, job
        sibling = on_demand_sibling(self.settings.routing, self.scaled_pools, job)
        if sibling is not None and sibling != job.pool and self.ledger.move_job(job.id, job.pool, sibling):
            log.info("job %s, the retry of a spot-interrupted job, goes to on-demand pool %s", job.id, sibling)
            report.steered.append(job.id)
            return sibling, replace(job, pool=sibling)
        if sibling is None and self.scaled_pools[job.pool].capacity_type == "spot":
            self.ledger.job_on_demand(job.id)
            log.info("job %s, the retry of a spot-interrupted job, gets an on-demand host of pool %s", job.id, job.pool)
            report.steered.append(job.id)
            return job.pool, replace(job, on_demand=True)
        return job.pool, job

    def _refused_by_workflow(self, by_pool: Mapping[str, list[tuple[str, Job]]]) -> dict[int, Job]:
        """The message jobs whose pool's runner group does not admit any workflow of their run
        (asked of GitHub for restricted pools only), with what is now known of them."""
        jobs = [j for items in by_pool.values() for _, j in items if j.pool in self.scaled_pools]
        named = name_run_workflows(jobs, self.settings.routing, self.github, self.ledger)
        return {j.id: j for j in named if self.settings.routing.get(j.pool).refusal(origin_of(j)) is not None}

    def _scale_pool(self, pool: str, message_jobs: list[Job], live: list[Instance], token: str, report: Report, now: float) -> None:
        with self.planning(pool) as recent:
            # Hosts another invocation launched while we waited count as supply, whether or
            # not the ledger's index shows them yet.
            mine = {i.id: i for i in [*live, *self.ledger.live_instances(pool)] if i.pool == pool}
            for iid, _ in recent:
                if iid not in mine and (found := self.ledger.instance(iid, live_only=True)) is not None:
                    mine[iid] = found
            pool_live = [i for i in mine.values() if i.id not in report.undone]
            before = set(report.launched.get(pool, []))
            try:
                self._plan_pool(pool, message_jobs, pool_live, token, report, now)
            finally:
                recent += [(iid, now) for iid in report.launched.get(pool, []) if iid not in before]

    def _plan_pool(self, pool: str, message_jobs: list[Job], live: list[Instance], token: str, report: Report, now: float) -> None:
        # Jobs this invocation moved off the pool or dropped: the index may still list them here.
        gone = {int(r["job"]) for r in report.rerouted if r["from"] == pool}
        ledger_jobs = {j.id: j for j in self.ledger.queued_jobs(pool) if j.id not in gone}
        for job in message_jobs:
            # The index behind queued_jobs is eventually consistent: trust the message unless
            # the ledger (read consistently) says the job has moved on.
            if job.id not in ledger_jobs:
                stored = self.ledger.job(job.id)
                if stored is None or stored.state == QUEUED:
                    ledger_jobs[job.id] = job
            elif job.on_demand:  # just steered: the index may not show it yet
                ledger_jobs[job.id] = replace(ledger_jobs[job.id], on_demand=True)
        if self.settings.pools[pool].max_jobs_per_host > 1:
            live = self._reuse_spent_hosts(self.settings.pools[pool], list(ledger_jobs.values()), live, report, now)
        (order,) = plan_launches(self.settings.pools, ledger_jobs.values(), live, now, only=[pool])
        report.orders[pool] = order
        if order.count:
            # Same messages and same shortfall -> same token: EC2 answers a retry with the first launch.
            self._launch(self.settings.pools[pool], order.count, f"{token}-{order.count}", report, now, order.on_demand)

    def _reuse_spent_hosts(self, pool: PoolSettings, jobs: list[Job], live: list[Instance], report: Report, now: float) -> list[Instance]:
        """Give spent hosts their next one-job config where the planner says a waiting job
        wants them; returns `live` as it stands afterwards."""
        hosts = {i.id: i for i in live}
        for spent in sorted((i for i in live if i.spent), key=lambda i: i.finished_at or 0.0):
            if not plan_reuse(pool, spent, jobs, hosts.values(), now):
                continue
            generation = spent.generation + 1
            name = runner_name(pool.name_prefix, self.settings.environment, pool.name, spent.id, generation)
            if not self.ledger.reuse(spent.id, generation, name, now):
                continue  # another invocation reused it first
            try:
                _, config = self.github.fresh_jitconfig(name, pool.runner_group, list(pool.labels))
                if not self.jit.put(spent.id, config):
                    raise RuntimeError(f"an unread runner config is still stored for {spent.id}")
            except (GithubError, RuntimeError) as exc:
                # It would count as a booting runner that never comes: retire it now instead.
                log.error("pool %s: no next runner config for %s (%s); terminating it", pool.name, spent.id, exc)
                self._terminate(spent.id)
                del hosts[spent.id]
                continue
            hosts[spent.id] = spent.given_next_runner(name, now)
            report.reused.append(spent.id)
        return list(hosts.values())

    # ---- reconcile (schedule, every minute) -------------------------------------------
    def reconcile(self) -> Report:
        """Make GitHub's queue and our fleet agree, whatever webhooks were lost or reordered."""
        now = self.clock()
        report = Report()
        self._refresh_stale_jobs(now, report)
        self._rerun_interrupted(now, report)
        self._find_unheard_jobs(now, report)
        live = self.sync_hosts(now, report)
        queued = name_run_workflows(self.ledger.queued_jobs(), self.settings.routing, self.github, self.ledger)
        if steering := self.ledger.steering(now):  # retries whose webhook scale-up has not handled yet
            queued = [self._steer(j, steering, report)[1] for j in queued]
        jobs = self._overflow(queued, live, now, report)
        for order in plan_launches(self.scaled_pools, jobs, live, now):
            report.orders[order.pool] = order
            if order.count or reuse_pending(self.scaled_pools[order.pool], order, live, now):
                token = f"reconcile-{order.pool}-{int(now // 60)}"
                try:
                    # Re-plan under the pool's lock: a scale-up may have launched meanwhile.
                    self._scale_pool(order.pool, [], live, token, report, now)
                except Exception as exc:  # one pool's failure must not starve the others
                    log.exception("reconcile launch for pool %s failed", order.pool)
                    report.failed_pools[order.pool] = str(exc)[:200]
        self._keep_warm_pools(now, report)
        for name, pool in sorted(self.scaled_pools.items()):
            if pool.capacity_type == "spot" and (until := self.ledger.off_spot_until(name)) > now:
                report.off_spot[name] = until
                log.info("pool %s is off spot for %.0f more min (circuit breaker)", name, (until - now) / 60)
        known = {i.id for i in live}  # hosts launched this cycle are booting already
        launched = [Instance(iid, pool, now) for pool, ids in report.launched.items() for iid in ids if iid not in known]
        report.views = pool_views(self.settings.pools, jobs, [*live, *launched], now)
        log.info("reconcile: %s", json.dumps(report.summary()))
        return report

    def _rerun_interrupted(self, now: float, report: Report) -> None:
        """Judge the jobs of hosts EC2 warned it would reclaim: re-run (once) the one that failed
        because its host went away, never one that ended on its own (core/interruptions.py)."""
        pending = self.ledger.interruptions()
        for interruption in least_recently_done(((i, i.checked_at) for i in pending), MAX_RERUN_CHECKS):
            iid = interruption.instance_id
            host = self.ledger.instance(iid)
            job = self.ledger.job(host.job_id) if host is not None and host.job_id is not None else None
            rerun_before = job is not None and job.run_id is not None and self.ledger.was_rerun(job.repo, job.run_id)
            decision = decide_rerun(interruption, job, now, rerun_before)
            self.ledger.interruption_checked(iid, now)  # the next cycle's budget goes to the others first
            if decision.action == "ask" and job is not None:  # its `completed` webhook may be lost
                try:
                    found = self.github.job(job.repo, job.id)
                except GithubError as exc:
                    if self._github_unusable(job.repo, exc, report):
                        return
                    continue
                job = None if found is None else job_from_github(found, job)
                decision = decide_rerun(interruption, job, now, rerun_before)
            if decision.action in {"wait", "ask"}:
                continue
            if decision.action == "skip":
                if self.ledger.close_interruption(iid, "skipped", decision.reason) and job is not None:
                    report.rerun_skipped.append(job.id)
                log.info("job %s of interrupted host %s is not re-run: %s", job.id if job else "-", iid, decision.reason)
                continue
            assert job is not None
            if not self.ledger.close_interruption(iid, "rerun", decision.reason):
                continue  # another invocation judged it
            if job.run_id is not None:  # before asking, so the retry's webhook finds it
                self.ledger.steer(job.repo, job.run_id, job.run_attempt or 1, interruption.pool, now + STEER_S)
            try:
                self.github.rerun_job(job.repo, job.id)
            except GithubError as exc:  # e.g. its run is still going: GitHub re-runs jobs of completed runs
                self.ledger.reopen_interruption(iid)
                log.info("re-run of job %s (interrupted host %s) refused for now: %s", job.id, iid, exc)
                if isinstance(exc, RateLimitedError) or exc.status == 0 or exc.status >= 500:
                    return
                continue
            if job.run_id is not None:
                self.ledger.steered_rerun(job.repo, job.run_id)
            report.reruns.append(job.id)
            log.warning("re-ran job %s of %s: %s (its host %s was a spot interruption); the retry goes on-demand", job.id, job.repo,
                        decision.reason, iid, extra={"rerun": 1, "pool": interruption.pool})  # fmt: skip

    def _overflow(self, jobs: list[Job], live: list[Instance], now: float, report: Report, plan_targets: bool = False) -> list[Job]:
        """Move queued jobs a pool cannot take now to the next pool that serves them, or stop
        counting those no pool may take (core/overflow.py decides); returns the queued jobs as
        they stand after. With `plan_targets`, the pools given jobs are planned at once."""
        orders = plan_launches(self.scaled_pools, jobs, live, now)
        done = []
        for move in plan_overflow(self.settings.routing, orders, jobs):
            job = move.job
            moved = (
                self.ledger.drop_job(job.id, job.pool, move.reason) if move.to is None else self.ledger.move_job(job.id, job.pool, move.to)
            )
            if moved:  # else the job started or moved meanwhile: the ledger's condition kept it
                done.append(move)
                report.rerouted.append({"job": job.id, "from": job.pool, "to": move.to, "reason": move.reason})
        jobs = apply_moves(jobs, done)
        targets = {m.to for m in done if m.to is not None and m.to in self.scaled_pools} if plan_targets else set()
        for pool in sorted(targets):
            try:
                token = hashlib.sha256("|".join(str(m.job.id) for m in done if m.to == pool).encode()).hexdigest()[:24]
                self._scale_pool(pool, [j for j in jobs if j.pool == pool], live, f"overflow-{token}", report, now)
            except Exception as exc:  # the jobs are in the ledger under their new pool: the reconciler plans them
                log.exception("planning pool %s for jobs moved to it failed", pool)
                report.failed_pools[pool] = str(exc)[:200]
        return jobs

    def _refresh_stale_jobs(self, now: float, report: Report) -> None:
        stale = sorted((j for j in self.ledger.queued_jobs() if now - j.queued_at > STALE_JOB_S and j.repo), key=lambda j: j.queued_at)
        for job in least_recently_done(((j, j.checked_at) for j in stale), MAX_JOB_CHECKS):
            self.ledger.job_checked(job.id, now)
            try:
                found = self.github.job(job.repo, job.id)
            except GithubError as exc:
                if self._github_unusable(job.repo, exc, report):
                    return
                continue
            status = None if found is None else found.get("status")
            if status in {"queued", "waiting", "pending", "requested"}:
                continue
            state = IN_PROGRESS if status == "in_progress" else COMPLETED
            runner = None if found is None else found.get("runner_name")
            self.ledger.record_job(Job(job.id, job.pool, state, job.queued_at, job.repo, job.labels, runner or None))
            report.closed_jobs.append(job.id)

    def _find_unheard_jobs(self, now: float, report: Report) -> None:
        for repo in least_recently_done(self.ledger.recent_repos(now - REPO_SCAN_WINDOW_S), MAX_REPO_SCANS):
            self.ledger.repo_scanned(repo, now)
            try:
                queued = self.github.queued_jobs(repo)
            except GithubError as exc:
                if self._github_unusable(repo, exc, report):
                    return
                continue
            for found in queued:
                if self.ledger.job(int(found["id"])) is not None:
                    continue
                pools = self.settings.routing.route(found.get("labels", []))
                if pools:
                    job = Job(int(found["id"]), pools[0], QUEUED, now, repo, tuple(found.get("labels", [])))
                    if self.ledger.record_job(job):
                        report.found_jobs.append(job.id)

    def _github_unusable(self, repo: str, exc: GithubError, report: Report) -> bool:
        """One repository GitHub will not show us (deleted, renamed, outside the installation:
        404/403/410) is logged, counted and skipped; a rate limit or an outage (5xx, unreachable)
        ends this phase of the cycle, since every further call would fail the same way."""
        report.repo_errors[repo] = str(exc)[:200]
        whole = isinstance(exc, RateLimitedError) or exc.status == 0 or exc.status >= 500
        log.warning("repository %s: %s%s", repo, exc, "; GitHub unusable, skipping the rest of this phase" if whole else "; skipped")
        return whole

    # ---- scale-down (schedule) --------------------------------------------------------
    def scale_down(self) -> Report:
        now = self.clock()
        report = Report()
        live = self.sync_hosts(now, report)
        runners = self.github.list_runners()  # one listing for every pool
        plan = plan_scale_down(self.scaled_pools, self.settings.environment, live, runners, self.ledger.queued_jobs(), now)
        for iid in plan.registered:
            self.ledger.mark(iid, registered_at=now)
        for iid in plan.first_idle:
            self.ledger.mark(iid, idle_since=now)
        for iid in plan.not_idle:
            self.ledger.mark(iid, idle_since=None)
        for retire in plan.retire:
            if retire.confirm_absence is not None and (found := self.github.find_runner(retire.confirm_absence)) is not None:
                if found.online or found.busy:
                    log.info("runner %s of %s was missing from the listing, yet is there: kept", found.name, retire.instance_id)
                    continue
                retire = replace(retire, runner_id=found.id)  # there but offline: deregister it as well
            if retire.runner_id is not None and not self.github.delete_runner(retire.runner_id):
                if retire.overdue:
                    log.warning(
                        "runner %s of %s is busy past the pool's maximum lifetime: terminating it", retire.runner_id, retire.instance_id
                    )
                else:
                    log.info("runner %s of %s took a job as we retired it; kept", retire.runner_id, retire.instance_id)
                    if retire.instance_id:
                        self.ledger.mark(retire.instance_id, idle_since=None)
                    continue
            if retire.instance_id is not None:
                self._terminate(retire.instance_id)
                if retire.overdue:
                    report.overdue.append(retire.instance_id)
            report.retired.append(
                {"pool": retire.pool, "instance": retire.instance_id, "runner": retire.runner_id, "reason": retire.reason}
            )
            log.info("retired %s / runner %s of pool %s: %s", retire.instance_id, retire.runner_id, retire.pool, retire.reason)
        log.info("scale-down: %s", json.dumps(report.summary()))
        return report

    # ---- shared steps -----------------------------------------------------------------
    def sync_hosts(self, now: float, report: Report) -> list[Instance]:
        """Our live hosts, with the ledger and EC2 made to agree first:
        - a host EC2 has but the ledger lacks (a launch that crashed before recording it) is
          adopted and given its runner config while young, terminated once too old;
        - a recorded host with no runner config past the grace period is undone;
        - a recorded host EC2 no longer lists is marked gone, and its unread config deleted."""
        owned = sorted(self.scaled_pools)  # capacity-block nodes belong to the block manager
        hosts = {h.id: h for h in self.fleet.hosts(owned)}
        known = {i.id: i for pool in owned for i in self.ledger.live_instances(pool)}
        for h in [h for h in hosts.values() if h.warm and h.id not in known]:
            # A warm instance preparing (or one whose record a crash lost) is the warm pool's, never
            # a host with a job; one being started, or started, is an ordinary host from then on.
            record = self.ledger.warm_record(h.id)
            if record is None or record.state not in {STARTING, STARTED}:
                del hosts[h.id]
        plan = plan_host_sync(self.scaled_pools, known, {h.id: (h.pool, h.launched_at) for h in hosts.values()}, now)
        live = [known[iid] for iid in plan.live]
        for iid in plan.adopt:
            pool = self.settings.pools[hosts[iid].pool]
            inst = Instance(iid, pool.name, hosts[iid].launched_at, runner_name=self._runner_name(pool, iid))
            self.ledger.add_instance(inst)
            self._deliver_jit(pool, iid, now)
            live.append(inst)
            report.adopted.append(iid)
        for iid in [*plan.terminate_unknown, *plan.undo]:
            self._terminate(iid)
            report.undone.append(iid)
        for iid in plan.gone:
            self.ledger.instance_gone(iid)
            self.jit.delete(iid)
        return live

    def _launch(self, pool: PoolSettings, count: int, token: str, report: Report, now: float, on_demand: int = 0) -> None:
        """Launch `count` hosts of the pool, `on_demand` of them on-demand (retries of interrupted
        jobs), all of them while the pool's circuit breaker keeps it off spot."""
        report.launched.setdefault(pool.name, [])
        started, failed = self._start_warm(pool, count, report, now) if self._warm_on(pool) else ([], None)
        count, on_demand = count - len(started), max(0, on_demand - len(started))
        if count <= 0:
            self.ledger.count_launches(pool.name, demand_bucket(now), len(started), pool.warm.weeks)
            if failed is not None:
                raise failed
            return
        if pool.capacity_type == "spot" and (until := self.ledger.off_spot_until(pool.name)) > now:
            on_demand = count
            report.off_spot[pool.name] = until
            log.warning("pool %s is off spot until %.0f (repeated interruptions): launching %d on-demand", pool.name, until, count)
        result = LaunchResult()
        for part, n, part_token in (
            (replace(pool, capacity_type="on-demand"), min(on_demand, count), f"{token}-od"),
            (pool, count - min(on_demand, count), token),
        ):
            if n > 0:
                got = self.fleet.launch(part, n, part_token)
                result.instance_ids += got.instance_ids
                result.errors += got.errors
        log.info("pool %s: asked %d (%d on-demand), got %s (errors %s)", pool.name, count, on_demand, result.instance_ids, result.errors)
        self.ledger.count_launches(pool.name, demand_bucket(now), len(started) + len(result.instance_ids), pool.warm.weeks)
        for iid in result.instance_ids:
            refused = self._host_with_runner(pool, iid, now)
            if refused is not None:
                failed = refused
                continue
            report.launched[pool.name].append(iid)
        if failed is not None:
            raise failed
        if len(result.instance_ids) < count:
            raise RuntimeError(
                f"EC2 launched {len(result.instance_ids)} of {count} for pool {pool.name}: {', '.join(result.errors) or 'no error given'}"
            )

    def _host_with_runner(self, pool: PoolSettings, iid: str, now: float) -> GithubError | None:
        """Record a launched (or started) host and give it its one-job runner config; where
        GitHub refuses the config, end the host (without one it would only burn money) and
        return the refusal."""
        self.ledger.add_instance(Instance(iid, pool.name, now, runner_name=self._runner_name(pool, iid)))
        try:
            self._deliver_jit(pool, iid, now)
        except GithubError as exc:
            log.error("pool %s: no runner config for %s (%s); terminating it", pool.name, iid, exc)
            self._terminate(iid)
            return exc
        return None

    # ---- stopped warm pools (core/warm_pools.py) ---------------------------------------
    def _may_keep_warm(self, pool: PoolSettings) -> bool:
        """Whether the pool launches its own hosts, so it may have warm instances (now or from before)."""
        return pool.capacity_type != "capacity-block" and bool(pool.launch_template_id)

    def _warm_on(self, pool: PoolSettings) -> bool:
        return pool.warm.mode != OFF and pool.warm.maximum > 0 and self._may_keep_warm(pool)

    def _start_warm(self, pool: PoolSettings, count: int, report: Report, now: float) -> tuple[list[str], Exception | None]:
        """Start up to `count` ready warm instances of the pool (under its planning lock), each
        then given its one-job config exactly as a fresh host is. A start EC2 refuses is counted
        and left to the fresh launch that follows; the instance stays warm when the refusal is
        for now (capacity, throttling), else it is retired. Returns (started, a GitHub failure)."""
        ready = [r.warm() for r in self.ledger.warm_instances(pool.name) if r.state == READY]
        picked = pick_warm(ready, pool.name, count, self._newest_image(pool)) if ready else []
        started: list[str] = []
        failed: Exception | None = None
        for iid in picked:
            if not self.ledger.warm_moved(iid, STARTING, (READY,)):
                continue
            code = self.fleet.start(iid)
            if code is not None:
                report.warm_start_failed.append(iid)
                if code in START_LATER_CODES:
                    self.ledger.warm_moved(iid, READY, (STARTING,))
                else:
                    self._retire_warm(iid, (STARTING,), report)
                log.warning("pool %s: warm instance %s did not start (%s); a fresh host is launched instead", pool.name, iid, code)
                continue
            # From here it is an ordinary host: its record is closed, and it never returns to the warm pool.
            self.ledger.warm_moved(iid, STARTED, (STARTING,))
            refused = self._host_with_runner(pool, iid, now)
            if refused is not None:
                failed = refused
                continue
            started.append(iid)
            report.warm_started.append(iid)
            report.launched[pool.name].append(iid)
        if started:
            log.info("pool %s: started warm instances %s", pool.name, started)
        return started, failed

    def _retire_warm(self, instance_id: str, from_states: tuple[str, ...], report: Report) -> bool:
        if not self.ledger.warm_moved(instance_id, "gone", from_states):
            return False  # started (or retired) meanwhile
        self.fleet.terminate([instance_id])
        self.jit.delete(instance_id)
        report.warm_retired.append(instance_id)
        return True

    def _newest_image(self, pool: PoolSettings) -> str:
        """The image the pool's launch template resolves now (its SSM parameter); "" where the pool
        has none or it cannot be read (then no warm instance counts as superseded)."""
        if not pool.image_parameter:
            return ""
        try:
            found = self.jit.ssm.call("GetParameters", {"Names": [pool.image_parameter]}).get("Parameters", [])
        except Exception:
            log.exception("pool %s: cannot read its image parameter %s", pool.name, pool.image_parameter)
            return ""
        return str(found[0]["Value"]) if found else ""

    def _warm_sizes(self, pools: Mapping[str, PoolSettings], now: float) -> tuple[dict[str, int], dict[str, int]]:
        """Each pool's warm size now (its launches at this weekday and time over the last weeks,
        or its schedule) and the most it keeps (what the target wants within the hold), both
        trimmed to the estate's EBS budget."""
        targets, held = {}, {}
        for name, pool in pools.items():
            buckets = history_buckets(pool.warm, now)
            history = self.ledger.launch_history(name, buckets) if buckets else {}
            targets[name] = launch_size(pool.warm, history, now)
            held[name] = held_size(pool.warm, history, now)
        volumes = {name: pool.warm.volume_gib for name, pool in pools.items()}
        budget = self.settings.warm_ebs_budget_gib
        return within_budget(targets, volumes, budget), within_budget(held, volumes, budget)

    def _keep_warm_pools(self, now: float, report: Report) -> None:
        """Bring each pool's warm pool to its target: note the instances that have powered
        themselves off (ready), retire the superseded, the too old and the extra, launch the
        missing; end the warm-tagged instances that are no longer warm and have stopped (a started
        host whose job is done powers off into `stopped`)."""
        # A pool whose warm pool was switched off (or cut to 0) keeps none: its warm instances
        # are retired as any beyond a target of 0 would be, once EC2 shows it still has some.
        able = {name: pool for name, pool in self.scaled_pools.items() if self._may_keep_warm(pool)}
        pools = {name: pool for name, pool in able.items() if self._warm_on(pool)}
        if not able:
            return
        ec2 = {h.id: h for h in self.fleet.warm_hosts(sorted(able))}
        switched_off = {h.pool for h in ec2.values()} - set(pools)
        targets, held = self._warm_sizes(pools, now)
        report.warm_targets = targets
        for name, pool in sorted({**pools, **{n: able[n] for n in switched_off if n in able}}.items()):
            try:
                with self.planning(name):  # scale-up starts this pool's warm instances under the same lock
                    self._keep_warm_pool(pool, ec2, targets.get(name, 0), held.get(name, 0), now, report)
            except Exception as exc:  # one pool's failure must not starve the others
                log.exception("keeping the warm pool of %s failed", name)
                report.failed_pools[name] = str(exc)[:200]

    def _keep_warm_pool(self, pool: PoolSettings, ec2: Mapping[str, Any], target: int, keep: int, now: float, report: Report) -> None:
        records = {r.id: r for r in self.ledger.warm_instances(pool.name)}
        for host in (h for h in ec2.values() if h.pool == pool.name and h.id not in records):
            found = self.ledger.warm_record(host.id)
            if found is None and host.state in {"pending", "running"}:  # a launch whose record was lost: it joins the pool
                if self.ledger.add_warm(host.id, pool.name, host.launched_at, host.image_id, pool.warm.max_age_s):
                    self.jit.put(host.id, WARM_CONFIG)
                    records[host.id] = WarmRecord(host.id, pool.name, host.launched_at, host.image_id, BOOTING)
            elif host.state == "stopped":  # started and done (or unknown): no longer warm, never started again
                self._terminate(host.id)
                report.warm_ended.append(host.id)
        warm = []
        for record in records.values():
            host = ec2.get(record.id)
            if host is None:  # terminated outside our hands
                self.ledger.warm_moved(record.id, "gone", (BOOTING, READY, STARTING))
                self.jit.delete(record.id)
                continue
            state = record.state
            if state == STARTING:  # a scale-up that crashed mid-start (we hold the pool's lock)
                if host.state == "stopped":
                    self.jit.delete(record.id)
                    state = READY if self.ledger.warm_moved(record.id, READY, (STARTING,)) else state
                else:
                    self.ledger.warm_moved(record.id, STARTED, (STARTING,))  # running: sync_hosts adopts it as a host
                    continue
            if state == BOOTING and host.state == "stopped" and self.ledger.warm_moved(record.id, READY, (BOOTING,)):
                state = READY
            if state in {BOOTING, READY}:
                warm.append(replace(record, state=state).warm())
        plan = plan_warm_pool(
            pool.name, pool.warm, warm, target, self._newest_image(pool), now, keep=keep, boot_timeout_s=pool.boot_timeout_s
        )
        if plan.failed_boots:
            log.warning("pool %s: warm instances %s never powered themselves off; retiring them", pool.name, list(plan.failed_boots))
        for iid in plan.retire:
            self._retire_warm(iid, (BOOTING, READY), report)
        if plan.launch <= 0:
            return
        hosts, errors = self.fleet.launch_warm(pool, plan.launch, warm_launch_token(pool.name, warm, plan.launch, now))
        for host in hosts:
            if not self.ledger.add_warm(host.id, pool.name, now, host.image_id, pool.warm.max_age_s):
                continue  # EC2 answered a repeated request with the instances it launched before
            self.jit.put(host.id, WARM_CONFIG)  # read as its config: prepare and power off
            report.warm_launched.append(host.id)
        log.info(
            "pool %s: warm target %d, launched %s, retired %s (errors %s)",
            pool.name,
            target,
            [h.id for h in hosts],
            list(plan.retire),
            errors,
        )

    def _deliver_jit(self, pool: PoolSettings, instance_id: str, now: float) -> None:
        _, config = self.github.fresh_jitconfig(self._runner_name(pool, instance_id), pool.runner_group, list(pool.labels))
        self.jit.put(instance_id, config)
        self.ledger.mark(instance_id, jit_at=now)

    def _runner_name(self, pool: PoolSettings, instance_id: str) -> str:
        return runner_name(pool.name_prefix, self.settings.environment, pool.name, instance_id)

    def _terminate(self, instance_id: str) -> None:
        self.fleet.terminate([instance_id])
        self.ledger.instance_gone(instance_id)
        self.jit.delete(instance_id)
