"""The webhook: verify, parse, route, record once, enqueue. Answers within milliseconds and
never 5xx on bad input: 401 bad signature, 400 malformed, 413 too large, 202 ignored (with
the reason: labels no pool serves, a repository no runner group admits, more labels than a
runner carries).

What is stored is bounded and normalised, whatever a signed payload holds: labels deduplicated
case-insensitively (GitHub compares them so), at most MAX_LABELS of at most MAX_LABEL_CHARS,
the repository at GitHub's name limits, a runner name only if it could be one of ours. So a
ledger item stays far below DynamoDB's 400 KB and an SQS message below 256 KB.

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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from lambda_src.aws.ledger import ItemTooLargeError
from lambda_src.core.fleet_state import COMPLETED, IN_PROGRESS, QUEUED, Job
from lambda_src.core.routing import JobOrigin, RoutingTable

MAX_BODY_BYTES = 1024 * 1024
# A runner carries at most 100 custom labels (GitHub's REST API: `labels` maxItems 100 when
# registering or setting them) besides `self-hosted`, its OS and its architecture, so a job
# asking for more distinct labels can never be taken by a self-hosted runner.
MAX_LABELS = 103
# GitHub documents no length for a label; ours: no pool's label is longer, so a longer one can
# never match, and it bounds what routing compares.
MAX_LABEL_CHARS = 256
# `repository.full_name`: an owner login is at most 39 characters (letters, digits, hyphens),
# a repository name at most 100 (letters, digits, '.', '_', '-').
_REPOSITORY_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
# Our runner names are at most ~140 characters (prefix 45, environment 16, pool 40, instance
# id and suffix); a longer or non-text name is not one of ours and is not stored.
MAX_RUNNER_NAME_CHARS = 255
MAX_JOB_ID = 2**63 - 1  # GitHub's ids are positive 64-bit integers
# A workflow's display name (`workflow_name`), kept for cost reports; GitHub bounds names of
# workflows by their file, ours: longer ones are cut, never refused.
MAX_WORKFLOW_NAME_CHARS = 200
_ACTIONS = {"queued": QUEUED, "in_progress": IN_PROGRESS, "completed": COMPLETED}
# A completed job's conclusions, as GitHub names them; anything else is not stored.
CONCLUSIONS = frozenset(
    {"success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required", "stale", "startup_failure"}
)

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
    wait_s: float | None = None  # a job that started: how long it was queued (GitHub's created_at to started_at)

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
    if not header or not header.isascii() or not header.startswith("sha256="):
        return False  # a signature is ASCII hex; anything else (a lone surrogate too) is not one
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
    try:
        return body.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError as exc:  # a lone surrogate: text no sender could have signed
        raise BadRequestError("body is not valid text") from exc


class IgnoredJobError(ValueError):
    """A well-formed job we will not launch for; the reason is answered and counted."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome


def _is_text(value: object, limit: int) -> bool:
    """A string within `limit` characters that can be stored (no lone surrogate)."""
    if not isinstance(value, str) or len(value) > limit:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def job_labels(raw: list[str]) -> tuple[str, ...]:
    """The job's labels as stored: trimmed, each once (GitHub compares them case-insensitively;
    the first spelling is kept). Raises IgnoredJobError for labels no runner could carry."""
    seen: dict[str, str] = {}
    for label in raw:
        text = label.strip()
        if not text:
            continue
        if not _is_text(text, MAX_LABEL_CHARS):
            raise IgnoredJobError("ignored", f"a label longer than {MAX_LABEL_CHARS} characters or not text: no runner carries it")
        seen.setdefault(text.lower(), text)
        if len(seen) > MAX_LABELS:
            raise IgnoredJobError("ignored", f"more than {MAX_LABELS} distinct labels: no self-hosted runner carries that many")
    return tuple(seen.values())


def job_origin(payload: dict[str, Any]) -> JobOrigin:
    """The repository a job runs for, as runner groups see it. A payload without one (older
    or hand-made shapes) names no repository: only groups open to every repository admit it."""
    repo = payload.get("repository")
    if repo is None:
        return JobOrigin("")
    name = repo.get("full_name") if isinstance(repo, dict) else None
    if not isinstance(name, str) or not name.isascii() or not _REPOSITORY_RE.fullmatch(name):
        raise BadRequestError("repository.full_name is not OWNER/NAME within GitHub's limits")
    # Real payloads always carry `private` (and `visibility`); a job is public only when they say so.
    public = repo.get("private") is False or repo.get("visibility") == "public"
    return JobOrigin(name, public=public)


def job_from_payload(payload: Any, routing: RoutingTable) -> tuple[str, Job | None]:
    """(action, job) from a `workflow_job` payload; job None for an action we do not act on.
    Raises BadRequestError for a malformed payload, IgnoredJobError for a job no pool may take."""
    if not isinstance(payload, dict):
        raise BadRequestError("payload is not a JSON object")
    action = payload.get("action")
    wj = payload.get("workflow_job")
    if not isinstance(action, str) or not isinstance(wj, dict):
        raise BadRequestError("missing action or workflow_job")
    job_id, labels = wj.get("id"), wj.get("labels")
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not isinstance(labels, list):
        raise BadRequestError("workflow_job needs an integer id and a list of labels")
    if not 0 < job_id <= MAX_JOB_ID:
        raise BadRequestError("workflow_job.id is not a GitHub id")
    if not all(isinstance(label, str) for label in labels):
        raise BadRequestError("workflow_job.labels must be strings")
    if action not in _ACTIONS:
        return _printable(action), None
    origin = job_origin(payload)
    wanted = job_labels(labels)
    matches = routing.matches(wanted, origin)
    if not matches:
        raise IgnoredJobError("ignored", "labels no pool serves")
    pools = [m.pool for m in matches if m.refusal is None]
    if not pools:
        # Counted apart: a job GitHub will never give our runners must not launch (or buy) one.
        raise IgnoredJobError("not_admitted", str(matches[0].refusal))
    runner = wj.get("runner_name")
    run_id = wj.get("run_id")
    attempt = wj.get("run_attempt")
    conclusion = wj.get("conclusion") if action == "completed" else None
    workflow = wj.get("workflow_name")
    return action, Job(
        id=job_id,
        pool=pools[0],
        state=_ACTIONS[action],
        queued_at=0.0,
        repo=origin.repository,
        labels=wanted,
        runner_name=runner if runner and _is_text(runner, MAX_RUNNER_NAME_CHARS) else None,
        run_id=run_id if isinstance(run_id, int) and not isinstance(run_id, bool) and 0 < run_id <= MAX_JOB_ID else None,
        public=origin.public,
        run_attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and 0 < attempt <= 10_000 else None,
        conclusion=conclusion if conclusion in CONCLUSIONS else None,
        workflow=str(workflow)[:MAX_WORKFLOW_NAME_CHARS] if _is_text(workflow, 10 * MAX_WORKFLOW_NAME_CHARS) else "",
        # A queued job's payload repeats its creation time as started_at: only a taken job started.
        started_at=timestamp(wj.get("started_at")) if action != "queued" else None,
        completed_at=timestamp(wj.get("completed_at")) if action == "completed" else None,
    )


def timestamp(value: object) -> float | None:
    """An ISO 8601 time from a payload (`2024-05-01T10:00:00Z`) as epoch seconds; None when absent or not a time."""
    if not isinstance(value, str) or not 0 < len(value) <= 40:
        return None
    try:
        found = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found.timestamp() if found.tzinfo is not None else None


def _printable(text: str) -> str:
    return text[:40].encode("ascii", errors="replace").decode()


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
    except IgnoredJobError as exc:
        log.info("ignored delivery %s: %s", delivery, exc)
        return _count(ports, exc.outcome, Response(202, {"ignored": str(exc)}))
    except (ValueError, RecursionError) as exc:
        return _count(ports, "bad_request", Response(400, {"error": f"malformed workflow_job: {str(exc)[:120]}"}))
    if job is None:
        log.info("ignored delivery %s: action %s", delivery, action)
        return _count(ports, "ignored", Response(202, {"ignored": f"action {action}"}))
    job = replace(job, queued_at=now)
    try:
        changed = ports.ledger.record_job(job)
    except ItemTooLargeError as exc:  # cannot happen within the bounds above; never a 5xx for input
        log.error("delivery %s: job %s not stored: %s", delivery, job.id, exc)
        return _count(ports, "item_too_large", Response(202, {"ignored": "the job is larger than the ledger stores"}))
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
    created = timestamp(payload["workflow_job"].get("created_at"))
    waited = job.started_at - created if job.state == IN_PROGRESS and job.started_at and created else None
    answer = Response(202, {"pool": job.pool, "job": job.id, "state": job.state}, wait_s=None if waited is None else max(0.0, waited))
    return _count(ports, job.state, answer)


def _reusing_pool(ports: WebhookPorts, job: Job) -> str | None:
    if job.state != COMPLETED or job.runner_name is None:
        return None
    return ports.reusing_pool_of(job.runner_name)


def _count(ports: WebhookPorts, key: str, response: Response) -> Response:
    ports.counters[key] = ports.counters.get(key, 0) + 1
    return replace(response, outcome=key)
