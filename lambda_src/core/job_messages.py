"""The SQS message for one queued job (or a finished one whose reusable host may take a
waiting job): written by the webhook, read by scale-up. A wake-up call only; the ledger holds
the state. Kept apart so the webhook's cold start imports neither
the scaler nor the GitHub client."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from lambda_src.core.fleet_state import QUEUED, Job
from lambda_src.core.settings import PoolSettings

log = logging.getLogger("runner_estate.jobs")


def job_message(job: Job, delivery: str) -> str:
    """The SQS body for one queued job: a wake-up call, since the ledger holds the state."""
    body = {"job_id": job.id, "pool": job.pool, "repo": job.repo, "labels": list(job.labels), "delivery": delivery}
    return json.dumps({**body, "run_id": job.run_id, "run_attempt": job.run_attempt, "public": job.public})


def job_from_message(body: str, pools: Mapping[str, PoolSettings], now: float) -> Job:
    """Raises ValueError for a message no retry can fix (it ends in the DLQ)."""
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("job_id"), int) or data.get("pool") not in pools:
        raise ValueError(f"not a job message for a known pool: {body[:200]!r}")
    run_id = data.get("run_id")
    attempt = data.get("run_attempt")
    return Job(
        int(data["job_id"]),
        str(data["pool"]),
        QUEUED,
        now,
        str(data.get("repo", "")),
        tuple(data.get("labels", [])),
        run_id=run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else None,
        public=data.get("public") is True,
        run_attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
    )


def jobs_by_pool(
    records: Iterable[Mapping[str, Any]], pools: Mapping[str, PoolSettings], now: float
) -> tuple[dict[str, list[tuple[str, Job]]], list[str]]:
    """An SQS batch as (message id, job) per pool, and the ids of poison messages (logged;
    SQS retries them until they reach the DLQ)."""
    by_pool: dict[str, list[tuple[str, Job]]] = {}
    poison: list[str] = []
    for record in records:
        message_id = str(record.get("messageId", ""))
        try:
            job = job_from_message(str(record.get("body", "")), pools, now)
        except ValueError as exc:
            log.error("poison message %s: %s", message_id, exc)
            poison.append(message_id)
            continue
        by_pool.setdefault(job.pool, []).append((message_id, job))
    return by_pool, poison
