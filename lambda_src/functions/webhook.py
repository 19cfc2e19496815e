"""The webhook: verify, parse, route, record once, enqueue. Answers within milliseconds and
never 5xx on bad input: 401 bad signature, 400 malformed, 413 too large, 202 ignored.

The event is an API Gateway HTTP API (payload v2) or Lambda Function URL request. The I/O it
needs (secret, ledger, queue) comes in as a `WebhookPorts`, so tests and `estate serve` drive
the same function with other adapters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from lambda_src.core.fleet_state import COMPLETED, IN_PROGRESS, QUEUED, Job
from lambda_src.core.routing import RoutingTable

MAX_BODY_BYTES = 1024 * 1024
_ACTIONS = {"queued": QUEUED, "in_progress": IN_PROGRESS, "completed": COMPLETED}

log = logging.getLogger("runner_estate.webhook")


class LedgerPort(Protocol):
    def record_job(self, job: Job) -> bool:
        """Store the job or move it forward; False when nothing changed (duplicate, or stale)."""
        ...


class QueuePort(Protocol):
    def enqueue(self, job: Job, delivery: str) -> None: ...


@dataclass
class WebhookPorts:
    secret: Callable[[], bytes]  # one secret per line: during a rotation, the new one and the old one
    ledger: LedgerPort
    queue: QueuePort
    routing: RoutingTable
    counters: dict[str, int]
    refresh_secret: Callable[[], bool] = lambda: False  # re-read it (rate-limited); True if it did
    reusing_pool_of: Callable[[str], str | None] = lambda runner: None  # the reusing pool whose runner this is


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]
    outcome: str = ""  # what was counted: queued, duplicate, ignored, unauthorised, ...

    def to_lambda(self) -> dict[str, Any]:
        return {"statusCode": self.status, "headers": {"content-type": "application/json"}, "body": json.dumps(self.body)}


class BadRequestError(ValueError):
    pass


def secrets_of(value: bytes) -> list[bytes]:
    """The accepted secrets: one per line, so a rotation can accept the old and the new."""
    return [line.strip() for line in value.splitlines() if line.strip()]


def signed_by_any(value: bytes, body: bytes, header: str | None) -> bool:
    return any(signature_matches(secret, body, header) for secret in secrets_of(value))


def signature_matches(secret: bytes, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex HMAC>` of the raw body, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def raw_body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body") or ""
    if not isinstance(body, str):
        raise BadRequestError("body is not text")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequestError("body is not valid base64") from exc
    return body.encode("utf-8", errors="surrogateescape")


def job_from_payload(payload: Any, routing: RoutingTable) -> tuple[str, Job | None]:
    """(action, job) from a `workflow_job` payload; job None when no pool serves its labels."""
    if not isinstance(payload, dict):
        raise BadRequestError("payload is not a JSON object")
    action = payload.get("action")
    wj = payload.get("workflow_job")
    if not isinstance(action, str) or not isinstance(wj, dict):
        raise BadRequestError("missing action or workflow_job")
    job_id, labels = wj.get("id"), wj.get("labels")
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not isinstance(labels, list):
        raise BadRequestError("workflow_job needs an integer id and a list of labels")
    if not all(isinstance(label, str) for label in labels):
        raise BadRequestError("workflow_job.labels must be strings")
    if action not in _ACTIONS:
        return action, None
    pools = routing.route(labels)
    if not pools:
        return action, None
    repo = payload.get("repository")
    repo_name = repo.get("full_name") if isinstance(repo, dict) else None
    runner = wj.get("runner_name")
    return action, Job(
        id=job_id,
        pool=pools[0],
        state=_ACTIONS[action],
        queued_at=0.0,
        repo=repo_name if isinstance(repo_name, str) else "",
        labels=tuple(labels),
        runner_name=runner if isinstance(runner, str) and runner else None,
    )


def handle(event: Mapping[str, Any], ports: WebhookPorts, now: float) -> Response:
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    delivery = headers.get("x-github-delivery", "-")
    try:
        body = raw_body(event)
    except BadRequestError as exc:
        return _count(ports, "bad_request", Response(400, {"error": str(exc)}))
    if len(body) > MAX_BODY_BYTES:
        return _count(ports, "too_large", Response(413, {"error": "body over 1 MiB"}))
    signature = headers.get("x-hub-signature-256")
    # A mismatch may mean the secret was rotated since this container read it: re-read once.
    if not signed_by_any(ports.secret(), body, signature) and not (
        ports.refresh_secret() and signed_by_any(ports.secret(), body, signature)
    ):
        log.warning("rejected delivery %s: missing or bad signature", delivery)
        return _count(ports, "unauthorised", Response(401, {"error": "missing or bad X-Hub-Signature-256"}))
    kind = headers.get("x-github-event", "")
    if kind == "ping":
        return _count(ports, "ping", Response(200, {"ok": "pong"}))
    if kind != "workflow_job":
        return _count(ports, "ignored", Response(202, {"ignored": f"event {kind or '(none)'}"}))
    try:
        payload = json.loads(body)
        action, job = job_from_payload(payload, ports.routing)
    except (ValueError, RecursionError) as exc:
        return _count(ports, "bad_request", Response(400, {"error": f"malformed workflow_job: {str(exc)[:120]}"}))
    if job is None:
        log.info("ignored delivery %s: action %s, labels no pool serves or not a job event", delivery, action)
        return _count(ports, "ignored", Response(202, {"ignored": f"action {action} or labels no pool serves"}))
    job = replace(job, queued_at=now)
    changed = ports.ledger.record_job(job)
    if not changed:
        return _count(ports, "duplicate", Response(202, {"pool": job.pool, "duplicate": True}))
    # A queued job wants a runner; a finished one may free a reusable host for a waiting job.
    wake = job.pool if job.state == QUEUED else _reusing_pool(ports, job)
    if wake is not None:
        try:
            ports.queue.enqueue(replace(job, pool=wake), delivery)
        except Exception:  # the ledger has the job; the reconciler plans for it within a minute
            log.exception("enqueue failed for job %s (delivery %s); left to the reconciler", job.id, delivery)
            return _count(ports, "enqueue_failed", Response(202, {"pool": job.pool, "deferred": True}))
    log.info("delivery %s: job %s %s -> pool %s", delivery, job.id, job.state, job.pool)
    return _count(ports, job.state, Response(202, {"pool": job.pool, "job": job.id, "state": job.state}))


def _reusing_pool(ports: WebhookPorts, job: Job) -> str | None:
    if job.state != COMPLETED or job.runner_name is None:
        return None
    return ports.reusing_pool_of(job.runner_name)


def _count(ports: WebhookPorts, key: str, response: Response) -> Response:
    ports.counters[key] = ports.counters.get(key, 0) + 1
    return Response(response.status, response.body, key)
