"""Spot interruptions, decided purely: EC2's warnings, which job to re-run, where its retry runs,
and when a pool is taken off spot for a while.

- EC2 sends an *interruption warning* two minutes before it reclaims a spot instance, and may send
  a *rebalance recommendation* earlier, as a hint. Either way the host takes no new work: an idle
  runner is deregistered and its host retired at once, a reusing host gets no next runner, and it
  is no longer counted as supply.
- When the job a warned host was running then fails (or is cancelled) because the host went away,
  that one job is re-run once with GitHub's single-job re-run, and its retry is steered to
  on-demand capacity: the pool's on-demand sibling (the next on-demand pool of the job's route) or,
  without one, an on-demand launch of the same pool. A job that ended on its own — successfully,
  before the warning, or long after it — is never re-run: the decision reads the job's conclusion
  and completion time (from its `completed` webhook, or GitHub when that is lost) against the
  warning's time.
- A circuit breaker: BREAKER_THRESHOLD warnings in a pool within BREAKER_WINDOW_S take it off spot
  (its launches go on-demand) for BREAKER_HOLD_S.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lambda_src.core.fleet_state import COMPLETED, Job
from lambda_src.core.routing import JobOrigin, RoutingTable

WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
DETAIL_TYPES = (WARNING, REBALANCE)

BREAKER_THRESHOLD = 2  # interruption warnings in one pool ...
BREAKER_WINDOW_S = 15 * 60.0  # ... within this long ...
BREAKER_HOLD_S = 30 * 60.0  # ... take it off spot for this long (from the last warning)
BREAKER_KEEP = 20  # warnings a pool's breaker remembers

RERUN_CONCLUSIONS = frozenset({"failure", "cancelled"})
# A job that fails this long after its host's warning failed with the host (GitHub notices a lost
# runner within minutes); one that failed before the warning failed on its own.
RERUN_WINDOW_S = 30 * 60.0
ASK_AFTER_S = 10 * 60.0  # no `completed` webhook this long after the warning: ask GitHub about the job
GIVE_UP_S = 24 * 3600.0  # a re-run GitHub keeps refusing (its run still going) is tried this long
STEER_S = 6 * 3600.0  # how long the retry of a re-run job is steered to on-demand


@dataclass(frozen=True)
class SpotEvent:
    kind: str  # WARNING | REBALANCE
    instance_id: str
    at: float

    @property
    def warning(self) -> bool:
        return self.kind == WARNING


def parse_spot_event(body: str) -> SpotEvent | None:
    """An EventBridge event (an SQS message body) as a SpotEvent; None for any other event or
    shape. Only EventBridge may send to the queue, so this checks form, not origin."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("source") != "aws.ec2" or event.get("detail-type") not in DETAIL_TYPES:
        return None
    detail = event.get("detail")
    instance = detail.get("instance-id") if isinstance(detail, dict) else None
    if not isinstance(instance, str) or not instance.startswith("i-"):
        return None
    try:
        at = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return SpotEvent(str(event["detail-type"]), instance, at)


# ---- the circuit breaker --------------------------------------------------------------------


def breaker_open_until(warnings: Iterable[float], now: float) -> float | None:
    """Until when the pool is off spot, given the times of its interruption warnings; None
    when the breaker is closed."""
    recent = sorted(t for t in warnings if now - t <= BREAKER_WINDOW_S)
    for i in range(len(recent) - BREAKER_THRESHOLD + 1):
        if recent[i + BREAKER_THRESHOLD - 1] - recent[i] <= BREAKER_WINDOW_S:
            until = recent[-1] + BREAKER_HOLD_S
            return until if until > now else None
    return None


def remembered(warnings: Iterable[float], now: float) -> list[float]:
    """The warnings worth keeping: those that can still open or hold the breaker."""
    return sorted(t for t in warnings if now - t <= BREAKER_WINDOW_S + BREAKER_HOLD_S)[-BREAKER_KEEP:]


# ---- re-running the interrupted job ---------------------------------------------------------


@dataclass(frozen=True)
class Interruption:
    """A warned host whose job may need a re-run (the ledger's `interrupt#<instance>`)."""

    instance_id: str
    pool: str
    interrupted_at: float
    checked_at: float | None = None


@dataclass(frozen=True)
class RerunDecision:
    action: str  # rerun | skip | wait | ask
    reason: str


def decide_rerun(interruption: Interruption, job: Job | None, now: float, rerun_before: bool = False) -> RerunDecision:
    """What to do about the job (if any) that ran on a warned host. `job` is the ledger's (or
    GitHub's) view of the job the host's runner took; `rerun_before` says its run was already
    re-run for an interruption (a job is re-run once)."""
    since = now - interruption.interrupted_at
    if job is None:
        if since > ASK_AFTER_S:
            return RerunDecision("skip", "no job ran on the host")
        return RerunDecision("wait", "the host's job, if any, is not known yet")
    if job.state != COMPLETED:
        if since > GIVE_UP_S:
            return RerunDecision("skip", "the job never ended")
        return RerunDecision("ask" if since > ASK_AFTER_S else "wait", "the job has not ended yet")
    ended = job.completed_at
    if job.conclusion not in RERUN_CONCLUSIONS:
        return RerunDecision("skip", f"the job ended {job.conclusion or 'without a conclusion'}")
    if ended is None or ended < interruption.interrupted_at:
        return RerunDecision("skip", "the job failed before its host was warned: it failed on its own")
    if ended - interruption.interrupted_at > RERUN_WINDOW_S:
        return RerunDecision("skip", "the job failed long after its host's warning: not because of it")
    if rerun_before:
        return RerunDecision("skip", "its run was re-run for an interruption once already")
    if since > GIVE_UP_S:
        return RerunDecision("skip", "GitHub refused the re-run for a day")
    return RerunDecision("rerun", f"{job.conclusion} {ended - interruption.interrupted_at:.0f} s after its host's interruption warning")


def job_from_github(found: Mapping[str, Any], stored: Job) -> Job:
    """The ledger's job updated with GitHub's job object (status, conclusion, completed_at)."""
    status = found.get("status")
    if status != "completed":
        return stored
    try:
        ended = datetime.fromisoformat(str(found.get("completed_at")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        ended = None
    conclusion = found.get("conclusion")
    return Job(
        stored.id,
        stored.pool,
        COMPLETED,
        stored.queued_at,
        stored.repo,
        stored.labels,
        stored.runner_name,
        run_id=stored.run_id,
        run_attempt=stored.run_attempt,
        conclusion=conclusion if isinstance(conclusion, str) else None,
        completed_at=ended,
    )


def on_demand_sibling(routing: RoutingTable, scaled: Iterable[str], job: Job) -> str | None:
    """Where the retry of an interrupted job goes: the first on-demand pool of its route that
    the scaler runs and whose group admits it; None when there is none (its own pool then
    launches on-demand for it)."""
    ours = set(scaled)
    origin = JobOrigin(job.repo, public=job.public, run_workflows=job.run_workflows)
    for pool in routing.route(job.labels, origin):
        if pool in ours and routing.get(pool).capacity_type == "on-demand":
            return pool
    return None
