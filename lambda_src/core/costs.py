"""What a job and the estate cost, pure: instance-seconds times the pool's price per host-hour.

The price is `PoolSettings.hourly_usd`, compiled from estate/config/prices.py at deploy time
(spot, on-demand or the capacity block's rate, averaged over the pool's types): an estimate of
the bill, not the bill itself (Cost Explorer has that, by the cost-allocation tags).

- A host that runs one job at a time is charged to its job from the moment its runner was
  given (launch, or the previous job's end on a reused host) to the job's end: the boot and
  the wait for the job are part of what the job cost.
- A capacity-block node runs one job per slot: a job is charged the slot's share of the node
  (its GPUs over the node's) for as long as it ran. The rest of a block (idle slots, unlaunched
  nodes, unslotted GPUs) is paid whether or not a job runs: that is its idle cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lambda_src.core.fleet_state import Instance
from lambda_src.core.settings import PoolSettings

HOUR_S = 3600.0


@dataclass(frozen=True)
class JobCost:
    usd: float
    host_s: float  # host-seconds charged to the job (a slot's share of a node's for a capacity-block job)


def host_job_cost(pool: PoolSettings, runner_since: float, completed_at: float) -> JobCost:
    """A job on a host of its own: from when the host's runner was given to the job's end."""
    seconds = max(0.0, completed_at - runner_since)
    return JobCost(round(seconds / HOUR_S * pool.hourly_usd, 6), round(seconds, 3))


def slot_share(pool: PoolSettings, slot: int) -> float:
    """The part of a node a slot is: its GPUs over the node's (unslotted GPUs are the block's idle cost)."""
    if not 0 <= slot < len(pool.slot_gpus) or pool.gpus_per_node <= 0:
        return 0.0
    return pool.slot_gpus[slot] / pool.gpus_per_node


def slot_job_cost(pool: PoolSettings, slot: int, started_at: float, completed_at: float) -> JobCost:
    """A job on one slot of a capacity-block node: the slot's share of the node while it ran."""
    seconds = max(0.0, completed_at - started_at) * slot_share(pool, slot)
    return JobCost(round(seconds / HOUR_S * pool.hourly_usd, 6), round(seconds, 3))


def spend_rate(pools: Mapping[str, PoolSettings], hosts: Iterable[Instance]) -> float:
    """USD per hour the live hosts of pools that launch per job cost now (capacity blocks are
    paid by the block: see `block_spend_rate`)."""
    total = 0.0
    for host in hosts:
        pool = pools.get(host.pool)
        if pool is not None and pool.capacity_type != "capacity-block":
            total += pool.hourly_usd
    return round(total, 4)


def block_spend_rate(pool: PoolSettings, active_nodes: int) -> float:
    """USD per hour a pool's active capacity blocks cost: every node they hold, launched or not."""
    return round(active_nodes * pool.hourly_usd, 4)
