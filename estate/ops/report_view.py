"""`estate report`, pure: what the estate cost over a window, and what sat idle, from the ledger.

Inputs are the ledger's items as stored (lambda_src/aws/ledger.py): finished jobs with their
cost (lambda_src/core/costs.py), hosts with their launch and end, and the capacity blocks'
GPU time per hour. Costs are estimates at the compiled prices (PoolSettings.hourly_usd); the
bill itself is in Cost Explorer, by the cost-allocation tags.

- A pool's cost: every host's time in the window at its price (launch per job), or the GPU
  time of its active capacity blocks (paid whether used or not).
- Of that, what jobs were charged (per job: host time from its runner's start to its end, or a
  slot's share of a node while it ran), and the rest: idle (booting, waiting, unused slots).
- Idle paid GPU-hours: GPUs of hosts running no job, and of blocks' slots running none.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from lambda_src.core.fleet_state import COMPLETED, instance_id_of
from lambda_src.core.settings import PoolSettings

HOUR_S = 3600.0
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """`90m`, `24h`, `7d`, `2w` as seconds; ValueError otherwise."""
    found = _DURATION_RE.match(text.strip())
    if found is None or float(found[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration like 90m, 24h, 7d or 2w")
    return float(found[1]) * _UNIT_S[found[2]]


def _overlap(start: float, end: float, since: float, until: float) -> float:
    return max(0.0, min(end, until) - max(start, since))


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))], 1)


def build_report(
    items: Iterable[Mapping[str, Any]], pools: Mapping[str, PoolSettings], since: float, until: float, prices: str = ""
) -> dict[str, Any]:
    jobs: list[Mapping[str, Any]] = []
    hosts: list[Mapping[str, Any]] = []
    usage: list[Mapping[str, Any]] = []
    for item in items:
        kind = str(item.get("pk", "")).split("#", 1)[0]
        (jobs if kind == "job" else hosts if kind == "instance" else usage if kind == "usage" else []).append(item)

    finished = [j for j in jobs if j.get("state") == COMPLETED and since <= float(j.get("completed_at") or -1) <= until]
    per_pool: dict[str, dict[str, Any]] = defaultdict(_pool_row)
    per_repo: dict[str, dict[str, float]] = defaultdict(_row)
    per_workflow: dict[str, dict[str, float]] = defaultdict(_row)
    waits: dict[str, list[float]] = defaultdict(list)
    busy_on_host: dict[str, float] = defaultdict(float)
    for job in finished:
        pool = str(job.get("cost_pool") or job.get("pool") or "")
        usd, host_s = float(job.get("cost_usd", 0.0)), float(job.get("host_s", 0.0))
        repo = str(job.get("repo") or "(unknown)")
        workflow = f"{repo} / {job.get('workflow') or '(unnamed)'}"
        for row in (per_pool[pool], per_repo[repo], per_workflow[workflow]):
            row["jobs"] += 1
            row["job_cost_usd"] += usd
            row["job_host_hours"] += host_s / HOUR_S
        if job.get("started_at") is not None:
            waits[pool].append(max(0.0, float(job["started_at"]) - float(job.get("queued_at", job["started_at"]))))
            iid = instance_id_of(str(job.get("runner_name") or ""))
            end = float(job.get("completed_at") or until)
            if iid is not None:
                busy_on_host[iid] += _overlap(float(job["started_at"]), end, since, until)

    for host in hosts:
        ps = pools.get(str(host.get("pool", "")))
        if ps is None or ps.capacity_type == "capacity-block" or host.get("block"):
            continue
        iid = str(host["pk"]).split("#", 1)[1]
        life = _overlap(float(host["launched_at"]), float(host.get("gone_at") or until), since, until)
        if life <= 0:
            continue
        line = per_pool[ps.name]
        line["host_hours"] += life / HOUR_S
        line["cost_usd"] += life / HOUR_S * ps.hourly_usd
        idle = max(0.0, life - busy_on_host.get(iid, 0.0))
        line["idle_gpu_hours"] += idle / HOUR_S * ps.host_gpus

    blocks: dict[str, dict[str, float]] = {}
    for item in usage:
        ps = pools.get(str(item.get("pool", "")))
        if ps is None or not since - HOUR_S < float(item.get("hour", 0)) <= until:
            continue
        found = blocks.setdefault(ps.name, {"paid_gpu_hours": 0.0, "busy_gpu_hours": 0.0})
        found["paid_gpu_hours"] += float(item.get("paid_gpu_s", 0)) / HOUR_S
        found["busy_gpu_hours"] += float(item.get("busy_gpu_s", 0)) / HOUR_S
    for name, found in blocks.items():
        ps = pools[name]
        per_gpu = ps.hourly_usd / ps.gpus_per_node if ps.gpus_per_node else 0.0
        found["idle_gpu_hours"] = max(0.0, found["paid_gpu_hours"] - found["busy_gpu_hours"])
        found["use"] = round(found["busy_gpu_hours"] / found["paid_gpu_hours"], 3) if found["paid_gpu_hours"] else 0.0
        found["cost_usd"] = found["paid_gpu_hours"] * per_gpu
        found["idle_cost_usd"] = found["idle_gpu_hours"] * per_gpu
        line = per_pool[name]
        line["cost_usd"] += found["cost_usd"]
        line["idle_gpu_hours"] += found["idle_gpu_hours"]

    for name, line in per_pool.items():
        line["idle_cost_usd"] = max(0.0, line["cost_usd"] - line["job_cost_usd"])
        line["wait_s"] = {"p50": _percentile(waits[name], 0.5), "p95": _percentile(waits[name], 0.95)}
    rounded = {name: _rounded(row) for name, row in sorted(per_pool.items()) if name}
    gpu_pools = [name for name, p in pools.items() if p.host_gpus or p.gpus_per_node]
    return {
        "since": _iso(since),
        "until": _iso(until),
        "jobs": len(finished),
        "total_cost_usd": round(sum(r["cost_usd"] for r in rounded.values()), 2),
        "job_cost_usd": round(sum(r["job_cost_usd"] for r in rounded.values()), 2),
        "idle_gpu_hours": round(sum(rounded[p]["idle_gpu_hours"] for p in gpu_pools if p in rounded), 2),
        "pools": rounded,
        "repositories": _top(per_repo),
        "workflows": _top(per_workflow),
        "capacity_blocks": {name: _rounded(found) for name, found in sorted(blocks.items())},
        "prices": prices,
    }


def _row() -> dict[str, float]:
    return {"jobs": 0, "job_cost_usd": 0.0, "job_host_hours": 0.0}


def _pool_row() -> dict[str, Any]:
    return {**_row(), "cost_usd": 0.0, "host_hours": 0.0, "idle_gpu_hours": 0.0}


def _rounded(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4 if k == "use" else 2) if isinstance(v, float) else v for k, v in row.items()}


def _top(rows: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Dearest first."""
    return {name: _rounded(row) for name, row in sorted(rows.items(), key=lambda kv: (-kv[1]["job_cost_usd"], kv[0]))}


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_report(report: Mapping[str, Any], top: int = 15) -> str:
    lines = [
        f"{report['since']} .. {report['until']}: {report['jobs']} jobs finished; estimated cost ${report['total_cost_usd']:,.2f}"
        f" (${report['job_cost_usd']:,.2f} charged to jobs); idle paid GPU-hours {report['idle_gpu_hours']:,.1f}",
    ]
    if report.get("prices"):
        lines.append(f"prices: {report['prices']}")
    pools = report["pools"]
    width = max([len("pool"), *(len(p) for p in pools)])
    lines += [
        "",
        f"{'pool':<{width}}  {'jobs':>6}  {'cost $':>10}  {'jobs $':>10}  {'idle $':>10}  {'host-h':>8}  {'idle GPU-h':>10}  wait p50/p95",
    ]
    for name, r in pools.items():
        lines.append(
            f"{name:<{width}}  {r['jobs']:>6}  {r['cost_usd']:>10,.2f}  {r['job_cost_usd']:>10,.2f}  {r['idle_cost_usd']:>10,.2f}"
            f"  {r['host_hours']:>8,.1f}  {r['idle_gpu_hours']:>10,.1f}  {r['wait_s']['p50']:.0f}s/{r['wait_s']['p95']:.0f}s"
        )
    for title, rows in (("repository", report["repositories"]), ("workflow", report["workflows"])):
        shown = list(rows.items())[:top]
        width = max([len(title), *(len(n) for n, _ in shown)])
        lines += ["", f"{title:<{width}}  {'jobs':>6}  {'jobs $':>10}  {'host-h':>8}"]
        lines += [f"{n:<{width}}  {r['jobs']:>6}  {r['job_cost_usd']:>10,.2f}  {r['job_host_hours']:>8,.1f}" for n, r in shown]
        if len(rows) > top:
            lines.append(f"... {len(rows) - top} more (--json lists all)")
    if report["capacity_blocks"]:
        lines += ["", "capacity blocks  paid GPU-h  busy GPU-h  idle GPU-h  use    cost $  idle $"]
        for name, b in report["capacity_blocks"].items():
            lines.append(
                f"{name:<15}  {b['paid_gpu_hours']:>10,.1f}  {b['busy_gpu_hours']:>10,.1f}  {b['idle_gpu_hours']:>10,.1f}"
                f"  {b['use']:>4.0%}  {b['cost_usd']:>8,.2f}  {b['idle_cost_usd']:>6,.2f}"
            )
    return "\n".join(lines)
