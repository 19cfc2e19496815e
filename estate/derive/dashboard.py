"""The environment's CloudWatch dashboard, as the JSON body PutDashboard takes: pure, from the pools.

One widget per question, a line per pool: are jobs waiting (queued, oldest wait, wait p50/p95),
are hosts coming (launches, failures, hosts by state, pools at their cap), capacity blocks
(slots busy / idle / faulty, hours left, jobs still running as a block ends), money (idle paid
GPU-hours, the spend rate against the budget's alarm), and the plumbing (DLQ depths, Lambda
errors, throttles and duration, GitHub's rate-limit headroom). The metrics are those of
lambda_src/core/metric_catalog.py; AWS/SQS and AWS/Lambda are AWS's own (free).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from estate.config.loader import Estate
from estate.config.names import dead_letter_queues, functions_of, prefix, spot_events_dead_letter_queue
from lambda_src.core.metric_catalog import NAMESPACE, pool_kind

WIDTH, HEIGHT = 12, 6  # a widget: half the grid's 24 columns


@dataclass(frozen=True)
class DashboardPool:
    name: str
    kind: str  # metric_catalog.pool_kind: cpu | gpu | capacity-block
    dlqs: tuple[str, ...]  # its dead-letter queues' names
    capacity_type: str = "on-demand"  # spot | on-demand | capacity-block: which functions and queues it brings


def dashboard_pools(environment: str, estate: Estate) -> list[DashboardPool]:
    return [
        DashboardPool(
            p.name,
            pool_kind(p.capacity_type, max(t.gpu_count for t in p.instance_types)),
            tuple(dead_letter_queues(environment, p)),
            p.capacity_type,
        )
        for p in estate.pools
    ]


def dashboard_name(environment: str) -> str:
    return prefix(environment)


def function_names(environment: str, pools: Sequence[DashboardPool]) -> list[str]:
    return [f"{prefix(environment)}-{fn.replace('_', '-')}" for fn in functions_of(p.capacity_type for p in pools)]


def dead_letter_queue_names(environment: str, pools: Sequence[DashboardPool]) -> list[str]:
    spot = [spot_events_dead_letter_queue(environment)] if any(p.capacity_type == "spot" for p in pools) else []
    return [q for p in pools for q in p.dlqs] + spot


def _pool_metric(env: str, metric: str, pool: str, **options: Any) -> list[Any]:
    return [NAMESPACE, metric, "environment", env, "pool", pool, {"label": pool, **options}]


def _graph(title: str, region: str, metrics: list[list[Any]], stat: str, period: int = 60, **extra: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "properties": {"title": title, "region": region, "view": "timeSeries", "stat": stat, "period": period, "metrics": metrics, **extra},
    }


def dashboard_body(
    environment: str, region: str, pools: Sequence[DashboardPool], spend_alarm_usd_per_hour: float | None = None
) -> dict[str, Any]:
    env = environment
    every = [p.name for p in pools]
    hosts = [p.name for p in pools if p.kind != "capacity-block"]
    blocks = [p.name for p in pools if p.kind == "capacity-block"]
    gpus = [p.name for p in pools if p.kind != "cpu"]
    widgets: list[dict[str, Any]] = [
        {
            "type": "text",
            "width": 24,
            "height": 2,
            "properties": {
                "markdown": f"# runner-estate {env}\nEvery metric is an estimate the control plane emits each minute"
                " (docs/observability.md); alarms and what to do: docs/runbook.md. `python -m estate status --stack <stack>`"
                " shows the same estate with the reason the oldest job waits."
            },
        },
        _graph("Jobs queued", region, [_pool_metric(env, "queued_jobs", p) for p in every], "Maximum"),
        _graph("Oldest queued job (seconds)", region, [_pool_metric(env, "oldest_wait", p) for p in every], "Maximum"),
        _graph("Job wait p50 (seconds, queued to started)", region, [_pool_metric(env, "job_wait", p) for p in every], "p50", 300),
        _graph("Job wait p95 (seconds)", region, [_pool_metric(env, "job_wait", p) for p in every], "p95", 300),
        _graph("Hosts launched", region, [_pool_metric(env, "launched", p) for p in every], "Sum", 300),
        _graph("Launch failures", region, [_pool_metric(env, "launch_failures", p) for p in every], "Sum", 300),
    ]
    for state in ("booting", "idle", "busy"):
        metrics = [_pool_metric(env, f"hosts_{state}", p) for p in hosts]
        widgets.append(_graph(f"Hosts {state}", region, metrics, "Average", 60, stacked=True))
    widgets.append(_graph("Pools at their cap (1: jobs held back)", region, [_pool_metric(env, "at_cap", p) for p in hosts], "Maximum"))
    if blocks:
        slots = [_pool_metric(env, f"slots_{state}", p, label=f"{p} {state}") for p in blocks for state in ("busy", "idle", "faulty")]
        widgets.append(_graph("Capacity-block slots busy / idle / faulty", region, slots, "Average", 60, stacked=True))
        widgets.append(_graph("Capacity block: hours left", region, [_pool_metric(env, "block_hours_left", p) for p in blocks], "Minimum"))
        widgets.append(
            _graph(
                "Slots still busy as a block's nodes must go", region, [_pool_metric(env, "block_overran", p) for p in blocks], "Maximum"
            )
        )
    idle: list[list[Any]] = []
    for i, pool in enumerate(gpus):
        # A gauge sampled once a minute: its hourly sum is GPU-minutes, so /60 is GPU-hours in the hour.
        idle.append([{"expression": f"m{i}/60", "label": pool, "id": f"e{i}"}])
        idle.append(_pool_metric(env, "idle_gpus", pool, id=f"m{i}", visible=False, stat="Sum"))
    if idle:
        widgets.append(_graph("Idle paid GPU-hours (per hour)", region, idle, "Sum", 3600))
    spend: list[list[Any]] = [
        [{"expression": "FILL(hosts, 0) + FILL(blocks, 0)", "label": "USD per hour", "id": "spend"}],
        [NAMESPACE, "spend_rate", "environment", env, "function", "reconcile", {"id": "hosts", "visible": False}],
        [NAMESPACE, "spend_rate", "environment", env, "function", "cb_manager", {"id": "blocks", "visible": False}],
    ]
    annotations = {"horizontal": [{"label": "spend-rate alarm", "value": spend_alarm_usd_per_hour}]} if spend_alarm_usd_per_hour else None
    widgets.append(
        _graph("Spend rate (USD/hour, estimate)", region, spend, "Average", 300, **({"annotations": annotations} if annotations else {}))
    )
    dlqs = [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q, {"label": q}] for q in dead_letter_queue_names(env, pools)]
    widgets.append(_graph("Dead-letter queue depths", region, dlqs, "Maximum", 300))
    functions = function_names(env, pools)
    for metric, stat in (("Errors", "Sum"), ("Throttles", "Sum"), ("Duration", "p95")):
        lines = [["AWS/Lambda", metric, "FunctionName", fn, {"label": fn.removeprefix(f"{prefix(env)}-")}] for fn in functions]
        widgets.append(_graph(f"Lambda {metric.lower()}" + (" p95 (ms)" if metric == "Duration" else ""), region, lines, stat, 300))
    headroom = [
        [NAMESPACE, "github_rate_remaining", "environment", env, "function", fn, {"label": fn}]
        for fn in ("reconcile", "scale_down", *(("cb_manager",) if blocks else ()))
    ]
    widgets.append(_graph("GitHub API rate-limit headroom (requests left this hour)", region, headroom, "Minimum", 300))
    return {"widgets": _laid_out(widgets)}


def _laid_out(widgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Left to right, two to a row; a full-width widget takes its own row."""
    x = y = 0
    row_height = 0
    out = []
    for widget in widgets:
        width, height = widget.get("width", WIDTH), widget.get("height", HEIGHT)
        if x + width > 24:
            x, y = 0, y + row_height
            row_height = 0
        out.append({**widget, "x": x, "y": y, "width": width, "height": height})
        x += width
        row_height = max(row_height, height)
    return out
