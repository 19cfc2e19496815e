"""The sweeper's shell: list what is ours from EC2, SSM and GitHub (never the ledger), ask
core/sweeper.plan_sweep what has no live owner, remove it. Every ten minutes, on its own role."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lambda_src.aws.ledger import Ledger
from lambda_src.aws.leftovers import LeftoverStore
from lambda_src.core.settings import ControlPlaneSettings
from lambda_src.core.sweeper import Removal, plan_sweep
from lambda_src.github.client import GithubClient

log = logging.getLogger("runner_estate.sweeper")


@dataclass
class SweepReport:
    removed: list[Removal] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # planned, but found in use when removed

    def summary(self) -> dict[str, Any]:
        def count(kind: str, force: bool | None = None) -> int:
            return sum(1 for r in self.removed if r.kind == kind and (force is None or r.force == force))

        retired = [r for r in self.removed if r.kind == "instance"]
        return {
            "retired_pool_hosts": sum(1 for r in retired if "no longer in the config" in r.reason),
            "overdue_hosts": sum(1 for r in retired if "maximum lifetime" in r.reason),
            "volumes_deleted": count("volume"),
            "interfaces_deleted": count("interface"),
            "configs_deleted": count("config"),
            "runners_deleted": count("runner"),
            "kept": len(self.kept),
        }


@dataclass
class Sweeper:
    settings: ControlPlaneSettings
    ledger: Ledger
    store: LeftoverStore
    github: GithubClient
    clock: Callable[[], float]

    def run(self) -> SweepReport:
        now = self.clock()
        report = SweepReport()
        found = replace(self.store.find(), runners=tuple(self.github.list_runners()))
        marks = self.ledger.sweep_marks()
        plan = plan_sweep(self.settings.pools, self.settings.environment, self.settings.jit_parameter_prefix, found, marks, now)
        for key in plan.watch:
            self.ledger.mark_sweep(key, now)
        for key in plan.forget:
            self.ledger.unmark_sweep(key)
        for removal in plan.remove:
            if self._remove(removal):
                report.removed.append(removal)
                log.info("swept %s %s (pool %s): %s", removal.kind, removal.id, removal.pool or "-", removal.reason)
            else:
                report.kept.append(f"{removal.kind}:{removal.id}")
        log.info("sweep: %s", json.dumps(report.summary()))
        return report

    def _remove(self, removal: Removal) -> bool:
        if removal.kind == "instance":
            if removal.runner_id is not None and not self.github.delete_runner(removal.runner_id) and not removal.force:
                log.info("runner of %s took a job as it was retired: kept", removal.id)
                return False
            self.store.terminate(removal.id)
            self.ledger.instance_gone(removal.id)
            self.store.delete_config(self.settings.jit_parameter_prefix + removal.id)
            return True
        if removal.kind == "volume":
            return self.store.delete_volume(removal.id)
        if removal.kind == "interface":
            return self.store.delete_interface(removal.id)
        if removal.kind == "config":
            self.store.delete_config(removal.id)
            return True
        assert removal.runner_id is not None
        return self.github.delete_runner(removal.runner_id)
