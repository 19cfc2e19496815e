"""The custom metrics the functions emit (as CloudWatch EMF log lines), in one list that the
emitters, the dashboard, the alarms and docs/observability.md all read. Pure constants.

CloudWatch bills each distinct metric (namespace, name and dimension values) by the month, so
the list is short and every per-pool metric has the same two dimensions, `environment` and
`pool`: no per-host, per-job or per-repository dimension (those are in the ledger, where
`estate report` reads them). A pool emits the metrics of its kind only.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "runner-estate"
POOL_DIMENSIONS = ("environment", "pool")
FUNCTION_DIMENSIONS = ("environment", "function")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # a CloudWatch unit
    kinds: tuple[str, ...]  # the pools that emit it: "cpu", "gpu" (hosts with GPUs), "capacity-block"
    source: str  # which function emits it, and when
    meaning: str


EVERY = ("cpu", "gpu", "capacity-block")
HOSTS = ("cpu", "gpu")

POOL_METRICS: tuple[Metric, ...] = (
    Metric("queued_jobs", "Count", EVERY, "reconcile, every minute", "jobs queued for the pool"),
    Metric("oldest_wait", "Seconds", EVERY, "reconcile, every minute", "how long the pool's oldest queued job has waited"),
    Metric("job_wait", "Seconds", EVERY, "webhook, per job that starts", "queued to started, one value per job (p50/p95)"),
    Metric("launched", "Count", EVERY, "scale-up, reconcile, cb-manager", "hosts (nodes) launched"),
    Metric("launch_failures", "Count", EVERY, "scale-up, reconcile, cb-manager", "planning or launching for the pool failed"),
    Metric("hosts_booting", "Count", HOSTS, "reconcile, every minute", "hosts whose runner is not online yet"),
    Metric("hosts_idle", "Count", HOSTS, "reconcile, every minute", "hosts whose runner waits for a job"),
    Metric("hosts_busy", "Count", HOSTS, "reconcile, every minute", "hosts running a job"),
    Metric("at_cap", "Count", HOSTS, "reconcile, every minute", "1 while the pool's caps leave queued jobs without a runner"),
    Metric("idle_gpus", "Count", ("gpu", "capacity-block"), "reconcile / cb-manager, every minute", "paid GPUs running no job"),
    Metric("slots_busy", "Count", ("capacity-block",), "cb-manager, every minute", "slots running a job"),
    Metric("slots_idle", "Count", ("capacity-block",), "cb-manager, every minute", "slots of live nodes with no job"),
    Metric("slots_faulty", "Count", ("capacity-block",), "cb-manager, every minute", "slots out of rotation (an unhealthy GPU)"),
    Metric("block_hours_left", "None", ("capacity-block",), "cb-manager, every minute", "hours until the pool's last active block ends"),
    Metric("block_overran", "Count", ("capacity-block",), "cb-manager, every minute", "slots still busy when the nodes must go"),
)
# Dimensions environment and function, beside the functions' own counters.
FUNCTION_METRICS: tuple[Metric, ...] = (
    Metric("spend_rate", "None", ("reconcile", "cb_manager"), "every minute", "USD per hour: live hosts, or active blocks"),
    Metric(
        "github_rate_remaining",
        "Count",
        ("reconcile", "scale_down", "cb_manager"),
        "every minute",
        "GitHub API requests left this hour (x-ratelimit-remaining)",
    ),
)
UNITS = {m.name: m.unit for m in (*POOL_METRICS, *FUNCTION_METRICS)}


def pool_kind(capacity_type: str, host_gpus: int) -> str:
    if capacity_type == "capacity-block":
        return "capacity-block"
    return "gpu" if host_gpus > 0 else "cpu"


def metrics_of(kind: str) -> list[Metric]:
    """The per-pool metrics a pool of this kind emits."""
    return [m for m in POOL_METRICS if kind in m.kinds]
