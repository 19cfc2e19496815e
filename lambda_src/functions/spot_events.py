"""EC2's spot interruption warnings and rebalance recommendations, from the spot-events queue
(only EventBridge may send to it): the host is marked and takes no new work, the warning counts
toward its pool's circuit breaker, and the reconciler later judges the job it ran
(core/interruptions.py decides; ControlPlane._rerun_interrupted re-runs)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lambda_src.core.interruptions import (
    BREAKER_HOLD_S,
    BREAKER_KEEP,
    BREAKER_THRESHOLD,
    BREAKER_WINDOW_S,
    SpotEvent,
    breaker_open_until,
    parse_spot_event,
    remembered,
)
from lambda_src.functions.control_plane import ControlPlane

log = logging.getLogger("runner_estate.spot_events")

# EventBridge stamps each event; one older than this (a replay from the DLQ) is dated when handled.
EVENT_TIME_SLACK_S = 3600.0


@dataclass
class SpotEventsReport:
    warnings: int = 0
    rebalances: int = 0
    drained: list[str] = field(default_factory=list)  # idle hosts retired at once
    not_ours: int = 0  # events for instances that are not hosts of ours (other tools, capacity-block nodes)
    ignored: int = 0  # messages that are no spot event at all
    breaker_opened: list[str] = field(default_factory=list)  # pools taken off spot

    def summary(self) -> dict[str, Any]:
        return {
            "interruption_warnings": self.warnings,
            "rebalance_recommendations": self.rebalances,
            "drained": len(self.drained),
            "not_ours": self.not_ours,
            "ignored": self.ignored,
            "breaker_opened": len(self.breaker_opened),
        }


@dataclass
class SpotEvents:
    plane: ControlPlane

    def handle(self, records: Iterable[Mapping[str, Any]]) -> tuple[list[str], SpotEventsReport]:
        """Handle an SQS batch; returns the ids of messages to retry, and what was done."""
        report = SpotEventsReport()
        failures = []
        for record in records:
            event = parse_spot_event(str(record.get("body", "")))
            if event is None:
                report.ignored += 1
                log.warning("message %s is not a spot interruption or rebalance event: dropped", record.get("messageId"))
                continue
            try:
                self._one(event, report)
            except Exception:  # retried by SQS, then the DLQ (and its alarm)
                log.exception("spot event for %s failed; it will be retried", event.instance_id)
                failures.append(str(record.get("messageId", "")))
        log.info("spot events: %s", json.dumps(report.summary()))
        return failures, report

    def _one(self, event: SpotEvent, report: SpotEventsReport) -> None:
        plane, ledger = self.plane, self.plane.ledger
        now = plane.clock()
        at = event.at if now - EVENT_TIME_SLACK_S <= event.at <= now else now
        host = ledger.instance(event.instance_id, live_only=True)
        if host is None or host.pool not in plane.scaled_pools:
            report.not_ours += 1
            return
        if event.warning:
            report.warnings += 1
            if ledger.mark_leaving(host.id, "interrupted_at", at):
                log.warning("spot interruption warning for %s of pool %s", host.id, host.pool, extra={"interruption": 1, "pool": host.pool})
                ledger.add_interruption(host.id, host.pool, at)
                self._breaker(host.pool, at, report)
        else:
            report.rebalances += 1
            if ledger.mark_leaving(host.id, "rebalance_at", at):
                log.info("rebalance recommendation for %s of pool %s: it takes no new work", host.id, host.pool)
        if host.assigned and not host.spent:
            return  # its job runs on; the reconciler judges it once it ends
        # No new work: its idle (or booting, or spent) runner goes, and so does the host.
        runner = plane.github.find_runner(host.runner_name) if host.runner_name else None
        if runner is not None and not plane.github.delete_runner(runner.id):
            log.info("runner of %s took a job as it was warned; its job is judged when it ends", host.id)
            return
        plane._terminate(host.id)
        report.drained.append(host.id)

    def _breaker(self, pool: str, at: float, report: SpotEventsReport) -> None:
        ledger = self.plane.ledger
        warnings = ledger.spot_warned(pool, at)
        if len(warnings) > BREAKER_KEEP:
            ledger.forget_warnings(pool, remembered(warnings, at))
        until = breaker_open_until(warnings, at)
        if until is not None and ledger.open_breaker(pool, until):
            report.breaker_opened.append(pool)
            log.warning(
                "pool %s taken off spot until %.0f: %d interruption warnings within %d min; its launches go on-demand for %d min",
                pool,
                until,
                BREAKER_THRESHOLD,
                BREAKER_WINDOW_S // 60,
                BREAKER_HOLD_S // 60,
                extra={"breaker_opened": 1, "pool": pool},
            )
