"""The redelivery shell: every few minutes, ask GitHub to send again the org webhook's
deliveries that failed (core/redelivery.py decides which), so a Lambda outage or a 5xx of our
webhook never leaves a job to the reconciler's repository scan alone.

The hook is the stack's `github.webhook_id` when given, else found once per container among the
org's hooks by our webhook's URL. Each delivery is sent again once: the ledger remembers the
guids (a conditional write claims each before the request; a request GitHub refused releases it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambda_src.aws.ledger import Ledger
from lambda_src.core.redelivery import (
    MAX_DELIVERY_PAGES,
    REDELIVERY_WINDOW_S,
    delivery_from_api,
    hook_for,
    plan_redeliveries,
)
from lambda_src.core.settings import ControlPlaneSettings
from lambda_src.github.client import GithubClient, GithubError, RateLimitedError

log = logging.getLogger("runner_estate.redelivery")

# Our webhook's URL, given to this function only (it cannot be in the settings the webhook
# itself is built from): how it finds the org hook when the stack does not name it.
WEBHOOK_URL_VARIABLE = "RUNNER_ESTATE_WEBHOOK_URL"
# A claim outlives the window by an hour: once it expires, GitHub's listing no longer shows the
# delivery within the window either, so it can never be sent a second time.
CLAIM_KEEP_S = REDELIVERY_WINDOW_S + 3600.0


@dataclass
class RedeliveryReport:
    listed: int = 0  # attempts GitHub listed within the window
    failed: int = 0  # deliveries whose attempts all failed
    redelivered: list[int] = field(default_factory=list)  # delivery ids asked to be sent again
    errors: int = 0  # redelivery requests GitHub refused (tried again next pass)
    hook_missing: int = 0  # no org hook delivers to our webhook: nothing can be redelivered

    def summary(self) -> dict[str, Any]:
        return {
            "deliveries_listed": self.listed,
            "deliveries_failed": self.failed,
            "redelivered": len(self.redelivered),
            "redelivery_errors": self.errors,
            "hook_missing": self.hook_missing,
        }


@dataclass
class Redeliverer:
    settings: ControlPlaneSettings
    ledger: Ledger
    github: GithubClient
    clock: Callable[[], float]
    webhook_url: str = ""  # our webhook's URL, to find its hook when the stack does not name it
    _hook_id: int | None = None

    def hook_id(self) -> int | None:
        if self._hook_id is None:
            self._hook_id = self.settings.webhook_id
        if self._hook_id is None and self.webhook_url:
            self._hook_id = hook_for(self.github.org_hooks(), self.webhook_url)
        return self._hook_id

    def run(self) -> RedeliveryReport:
        now = self.clock()
        report = RedeliveryReport()
        hook = self.hook_id()
        if hook is None:
            # Loud: until this is fixed a lost delivery waits for the repository scan alone.
            log.error("no org webhook delivers to %s: set runner-estate:github.webhook_id (runbook: redelivery)", self.webhook_url or "?")
            report.hook_missing = 1
            return report
        listed = self.github.hook_deliveries(hook, now - REDELIVERY_WINDOW_S, MAX_DELIVERY_PAGES)
        deliveries = [d for d in map(delivery_from_api, listed) if d is not None]
        report.listed = len(deliveries)
        ok = {d.guid for d in deliveries if d.succeeded}
        report.failed = len({d.guid for d in deliveries if d.guid not in ok})
        for delivery in plan_redeliveries(deliveries, self.ledger.redelivered(), now):
            if not self.ledger.claim_redelivery(delivery.guid, now, CLAIM_KEEP_S):
                continue  # another pass took it
            try:
                self.github.redeliver(hook, delivery.id)
            except GithubError as exc:
                self.ledger.redelivery_failed(delivery.guid)
                report.errors += 1
                log.warning("redelivery of %s (delivery %s) refused: %s", delivery.guid, delivery.id, exc)
                if isinstance(exc, RateLimitedError) or exc.status == 0 or exc.status >= 500:
                    break  # GitHub is unusable now: the rest wait for the next pass
                continue
            report.redelivered.append(delivery.id)
            log.info("asked GitHub to redeliver %s (delivery %s, first answered %s)", delivery.guid, delivery.id, delivery.status_code)
        log.info("redelivery: %s", json.dumps(report.summary()))
        return report
