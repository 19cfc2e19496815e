"""Which of the org webhook's recent deliveries to ask GitHub to send again. Pure.

GitHub does not retry a failed delivery by itself, and keeps each one (with every attempt) for
a few days. A delivery our webhook never answered, or answered with a 5xx (a Lambda outage, a
DynamoDB or SQS fault), is sent again once: the webhook records jobs idempotently, so a
redelivery of something that did arrive meanwhile is a counted duplicate, never a second host.

A delivery and its redeliveries share a `guid`; each attempt is its own delivery `id`. A guid
is redelivered when none of its listed attempts succeeded and its latest attempt failed in a
way another attempt may fix: no answer (GitHub's `status_code` 0: timeout, connection
refused), 408, 429 or a 5xx. A 4xx is our verdict on the delivery itself (bad signature,
malformed, too large): sending the same bytes again would get the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# How far back each pass looks, and how much of GitHub's listing it may read to get there: a
# pass every REDELIVERY_PERIOD_S covers an outage of this long with room to spare, within a
# bounded number of GitHub calls whatever the org's traffic.
REDELIVERY_WINDOW_S = 6 * 3600.0
REDELIVERY_PERIOD_S = 5 * 60.0
MAX_DELIVERY_PAGES = 20  # of 100 deliveries each
MAX_REDELIVERIES = 100  # per pass; the rest wait for the next pass (they stay failed and unclaimed)
# What the webhook subscribes to; anything else on the hook is not ours to resend.
EVENTS = frozenset({"workflow_job"})


@dataclass(frozen=True)
class Delivery:
    """One attempt of one webhook delivery, as GitHub lists it."""

    id: int
    guid: str
    delivered_at: float
    status_code: int
    event: str
    redelivery: bool = False

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def worth_retrying(self) -> bool:
        return self.status_code in {0, 408, 429} or self.status_code >= 500


def delivery_from_api(item: Mapping[str, Any]) -> Delivery | None:
    """A delivery from GitHub's listing; None for an item missing what the decision needs."""
    try:
        when = datetime.fromisoformat(str(item["delivered_at"]).replace("Z", "+00:00")).timestamp()
        code = item.get("status_code")
        return Delivery(
            id=int(item["id"]),
            guid=str(item["guid"]),
            delivered_at=when,
            status_code=int(code) if isinstance(code, int) and not isinstance(code, bool) else 0,
            event=str(item.get("event", "")),
            redelivery=item.get("redelivery") is True,
        )
    except (KeyError, TypeError, ValueError):
        return None


def plan_redeliveries(
    deliveries: Iterable[Delivery], already: Iterable[str], now: float, window_s: float = REDELIVERY_WINDOW_S
) -> list[Delivery]:
    """The latest failed attempt of each delivery to send again, oldest first (a job's `queued`
    before its `completed`, as GitHub first sent them), at most MAX_REDELIVERIES.

    `already` holds the guids redelivered before (the ledger remembers them for longer than
    GitHub keeps deliveries): each is sent again once, never twice."""
    done = set(already)
    by_guid: dict[str, list[Delivery]] = {}
    for d in deliveries:
        if d.event in EVENTS and now - d.delivered_at <= window_s:
            by_guid.setdefault(d.guid, []).append(d)
    chosen = []
    for guid, attempts in by_guid.items():
        if guid in done or any(a.succeeded for a in attempts):
            continue
        latest = max(attempts, key=lambda a: (a.delivered_at, a.id))
        if latest.worth_retrying:
            first = min(a.delivered_at for a in attempts)
            chosen.append((first, latest))
    chosen.sort(key=lambda pair: (pair[0], pair[1].id))
    return [d for _, d in chosen[:MAX_REDELIVERIES]]


def hook_for(hooks: Iterable[Mapping[str, Any]], webhook_url: str) -> int | None:
    """The id of the org hook that delivers to our webhook URL (GitHub may keep or drop a
    trailing slash); None when there is none."""
    wanted = webhook_url.rstrip("/")
    for hook in hooks:
        config = hook.get("config")
        url = config.get("url") if isinstance(config, Mapping) else None
        if isinstance(url, str) and url.rstrip("/") == wanted:
            return int(hook["id"])
    return None
