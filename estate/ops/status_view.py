"""`estate status`, pure: what the ledger, EC2 and GitHub said, as one screen.

Every count and reason comes from lambda_src/core/observe.py (the reconciler's metrics read the
same function) and from the planners' own answers it reads back; nothing here decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lambda_src.core.fleet_state import GithubRunner, Instance, Job
from lambda_src.core.metric_catalog import pool_kind
from lambda_src.core.observe import oldest_waits, pool_views
from lambda_src.core.settings import ControlPlaneSettings


@dataclass
class StatusFacts:
    """What `gather` read; a source it could not read is named in `unread` and left empty."""

    settings: ControlPlaneSettings
    now: float
    where: str  # "stack prod (us-east-1)", "serve at http://..."
    queued: list[Job] = field(default_factory=list)
    hosts: list[Instance] = field(default_factory=list)  # the ledger's live hosts of pools that launch per job
    runners: list[GithubRunner] | None = None  # one listing of the org's runners (None: not read)
    ec2_running: dict[str, int] | None = None  # pending or running instances per pool, as EC2 lists them
    blocks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # pool -> block id -> block planner's report
    failures: list[dict[str, Any]] = field(default_factory=list)  # the ledger's last failure per pool
    dlq: dict[str, int] = field(default_factory=dict)  # messages in each pool's dead-letter queue(s)
    unread: list[str] = field(default_factory=list)


def build_status(facts: StatusFacts) -> dict[str, Any]:
    s, now = facts.settings, facts.now
    runners = None if facts.runners is None else {r.name: r for r in facts.runners}
    views = pool_views(s.pools, facts.queued, facts.hosts, now, runners)
    recent = {str(f["pool"]): str(f.get("message", "")) for f in facts.failures if now - float(f.get("at", 0)) < 15 * 60}
    waits = oldest_waits(s, facts.queued, facts.hosts, now, runners=runners, blocks=facts.blocks, failures=recent)
    pools: dict[str, Any] = {}
    for name, view in views.items():
        pool = s.pools[name]
        wait = waits.get(name)
        pools[name] = {
            "kind": pool_kind(pool.capacity_type, pool.host_gpus),
            "queued": view.queued,
            "booting": view.booting,
            "idle": view.idle,
            "busy": view.busy,
            "max_instances": pool.max_instances,
            "at_cap": view.at_cap,
            "ec2_running": None if facts.ec2_running is None else facts.ec2_running.get(name, 0),
            "spend_usd_per_hour": view.spend_usd_per_hour,
            "oldest": None if wait is None else _wait(wait.job, wait.waited_s, wait.reason),
            "dlq": facts.dlq.get(name, 0),
        }
    oldest = min(waits.values(), key=lambda w: (w.job.queued_at, w.job.id), default=None)
    return {
        "where": facts.where,
        "environment": s.environment,
        "at": _iso(now),
        "pools": pools,
        "oldest": None if oldest is None else {"pool": oldest.job.pool, **_wait(oldest.job, oldest.waited_s, oldest.reason)},
        "blocks": {pool: {bid: _block(r) for bid, r in sorted(found.items())} for pool, found in sorted(facts.blocks.items())},
        "failures": [
            {"pool": f["pool"], "message": f.get("message", ""), "at": _iso(float(f.get("at", 0))), "count": int(f.get("count", 1))}
            for f in facts.failures
        ],
        "dead_letters": {pool: n for pool, n in sorted(facts.dlq.items()) if n},
        "unread": list(facts.unread),
    }


def _wait(job: Job, waited_s: float, reason: str) -> dict[str, Any]:
    return {"job": job.id, "repo": job.repo, "labels": list(job.labels), "waited_s": round(waited_s, 1), "why": reason}


def _block(report: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("phase", "hours_left", "nodes", "capacity", "busy_slots", "idle_slots", "faulty_slots", "busy_gpus", "idle_gpus")
    return {k: report[k] for k in keys if k in report}


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """12s, 4m10s, 2h05m, 3d04h."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def render_status(status: Mapping[str, Any]) -> str:
    lines = [f"estate {status['environment']}: {status['where']}, {status['at']}"]
    width = max([len("pool"), *(len(p) for p in status["pools"])])
    lines.append(f"{'pool':<{width}}  queued  booting  idle  busy  max  oldest wait  why it waits")
    for name, p in status["pools"].items():
        oldest = p["oldest"]
        hosts = ("-", "-", "-") if p["kind"] == "capacity-block" else (p["booting"], p["idle"], p["busy"])
        cap = "CAP" if p["at_cap"] else str(p["max_instances"])
        wait = duration(oldest["waited_s"]) if oldest else "-"
        why = oldest["why"] if oldest else ""
        lines.append(f"{name:<{width}}  {p['queued']:>6}  {hosts[0]:>7}  {hosts[1]:>4}  {hosts[2]:>4}  {cap:>3}  {wait:>11}  {why}")
    oldest = status["oldest"]
    if oldest is not None:
        lines.append(
            f"oldest waiting job: {oldest['job']} of {oldest['repo'] or '(unknown repository)'} [{', '.join(oldest['labels'])}]"
            f" on {oldest['pool']}, {duration(oldest['waited_s'])}: {oldest['why']}"
        )
    else:
        lines.append("no job waits")
    if status["blocks"]:
        lines.append("capacity blocks:")
        for pool, blocks in status["blocks"].items():
            if not blocks:
                lines.append(f"  {pool}: none held")
            for bid, b in blocks.items():
                lines.append(
                    f"  {pool} {bid}: {b['phase']}, {b['hours_left']} h left, nodes {b['nodes']}/{b['capacity']},"
                    f" slots {b.get('busy_slots', 0)} busy / {b.get('idle_slots', 0)} idle / {b.get('faulty_slots', 0)} faulty"
                )
    problems = [f"  {f['pool']}: {f['message']} (last at {f['at']}, {f['count']}x in the last day)" for f in status["failures"]]
    problems += [f"  {pool}: {n} message(s) in its dead-letter queue" for pool, n in status["dead_letters"].items()]
    lines.append("recent failures:" if problems else "recent failures: none")
    lines += problems
    lines += [f"not read: {u}" for u in status["unread"]]
    return "\n".join(lines)
