"""The SQS message for one queued job: written by the webhook, read by scale-up. A wake-up
call only; the ledger holds the state. Kept apart so the webhook's cold start imports neither
the scaler nor the GitHub client."""

from __future__ import annotations

import json
from collections.abc import Mapping

from lambda_src.fleet_state import QUEUED, Job
from lambda_src.settings import PoolSettings


def job_message(job: Job, delivery: str) -> str:
    """The SQS body for one queued job: a wake-up call, since the ledger holds the state."""
    return json.dumps({"job_id": job.id, "pool": job.pool, "repo": job.repo, "labels": list(job.labels), "delivery": delivery})


def job_from_message(body: str, pools: Mapping[str, PoolSettings], now: float) -> Job:
    """Raises ValueError for a message no retry can fix (it ends in the DLQ)."""
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("job_id"), int) or data.get("pool") not in pools:
        raise ValueError(f"not a job message for a known pool: {body[:200]!r}")
    return Job(int(data["job_id"]), str(data["pool"]), QUEUED, now, str(data.get("repo", "")), tuple(data.get("labels", [])))
