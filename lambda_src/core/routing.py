"""Label routing: which pools may serve a job, most preferred first.

GitHub gives a job to a runner when the job's `runs-on` labels are a subset of the runner's
labels, compared case-insensitively. A pool states its runner labels (one set per GPU slot
size) and, with `exact_match`, the label sets it accepts jobs for. The table is compiled once
from validated config (see `estate.routing_table`) and read as JSON by the Lambdas; this
module is pure and stdlib-only so the webhook, the CLI and the simulator share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Paid-for capacity first, then the cheap interruptible kind, then its on-demand failover.
CAPACITY_PREFERENCE: Mapping[str, int] = {"capacity-block": 0, "spot": 1, "on-demand": 2}


def normalise(labels: Iterable[str]) -> frozenset[str]:
    return frozenset(label.strip().lower() for label in labels if label.strip())


@dataclass(frozen=True)
class PoolRoute:
    pool: str
    exact_match: bool
    priority: int
    capacity_type: str
    label_matchers: tuple[frozenset[str], ...]
    runner_label_sets: tuple[frozenset[str], ...]

    @property
    def preference(self) -> tuple[int, int, int, str]:
        """Sort key: exact matchers, then lower priority, then capacity kind, then name."""
        return (0 if self.exact_match else 1, self.priority, CAPACITY_PREFERENCE[self.capacity_type], self.pool)

    def _candidate_sets(self) -> tuple[frozenset[str], ...]:
        return self.label_matchers if self.exact_match else self.runner_label_sets

    def serves(self, job_labels: frozenset[str]) -> bool:
        return bool(job_labels) and any(job_labels <= s for s in self._candidate_sets())

    def explain(self, job_labels: frozenset[str]) -> str:
        """Why this pool does or does not take the job, in one line."""
        against = "label matcher" if self.exact_match else "runner label set"
        if not job_labels:
            return "no: the job has no labels"
        best = min(self._candidate_sets(), key=lambda s: (len(job_labels - s), sorted(s)))
        missing = job_labels - best
        if not missing:
            return f"yes: job labels are a subset of {against} [{', '.join(sorted(best))}]"
        return f"no: closest {against} [{', '.join(sorted(best))}] lacks {', '.join(sorted(missing))}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "exact_match": self.exact_match,
            "priority": self.priority,
            "capacity_type": self.capacity_type,
            "label_matchers": [sorted(s) for s in self.label_matchers],
            "runner_label_sets": [sorted(s) for s in self.runner_label_sets],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolRoute:
        return cls(
            pool=str(data["pool"]),
            exact_match=bool(data["exact_match"]),
            priority=int(data["priority"]),
            capacity_type=str(data["capacity_type"]),
            label_matchers=tuple(normalise(s) for s in data["label_matchers"]),
            runner_label_sets=tuple(normalise(s) for s in data["runner_label_sets"]),
        )


@dataclass(frozen=True)
class RoutingTable:
    routes: tuple[PoolRoute, ...]

    def __post_init__(self) -> None:
        # Keep the routes in preference order once, so every lookup is a filter.
        object.__setattr__(self, "routes", tuple(sorted(self.routes, key=lambda r: r.preference)))

    def route(self, job_labels: Iterable[str]) -> list[str]:
        """Pool names that can serve a job with these labels, most preferred first."""
        wanted = normalise(job_labels)
        return [r.pool for r in self.routes if r.serves(wanted)]

    def explain(self, job_labels: Iterable[str]) -> list[tuple[str, str]]:
        wanted = normalise(job_labels)
        return [(r.pool, r.explain(wanted)) for r in self.routes]

    def get(self, pool: str) -> PoolRoute:
        for r in self.routes:
            if r.pool == pool:
                return r
        raise KeyError(pool)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "routes": [r.to_dict() for r in self.routes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingTable:
        if data.get("version") != 1:
            raise ValueError(f"routing table version {data.get('version')!r} is not supported (want 1)")
        return cls(tuple(PoolRoute.from_dict(r) for r in data["routes"]))
