"""Job traces for `estate simulate`: the JSON Lines format, and the embedded FlashInfer-like
pull-request workload.

Trace format, one job per line:
  {"id": str, "t": seconds from start, "labels": [..], "duration_s": number, "timeout_s": number (optional)}
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from estate.diagnostics import ConfigError

# The fixture publishes each job's labels and timeout, not durations or arrival rates; these
# are ours, chosen to look like a busy GPU-kernel project and documented here:
# - runs arrive as a Poisson process, 3x as often in 13:00-22:00 UTC (US + EU working hours),
#   RUNS_PER_DAY on average;
# - a run starts all of its jobs within 30 s;
# - durations are log-normal around these medians (minutes), spread sigma 0.3, never past the
#   job's timeout.
RUNS_PER_DAY = 40
MEDIAN_MINUTES = {"cpu": 35.0, "sm86": 25.0, "sm75": 30.0, "h100": 40.0}
# The self-hosted jobs of one run of FlashInfer's "PR Test" workflow (flashinfer-ai/flashinfer
# .github/workflows/pr-test.yml @ 01c9273, CUDA list from ci/cuda-versions.json @ 15c89ff): labels
# and timeouts. tests/test_simulator.py checks it against ../shared's fixture of the same run.
FLASHINFER_PR_JOBS: list[dict[str, Any]] = (
    [{"name": f"AOT Build ({a}, {c})", "labels": ["self-hosted", "linux", a, "cpu", "on-demand"], "timeout_minutes": 360}
     for a in ("x64", "arm64") for c in ("cu129", "cu130")]
    + [{"name": f"JIT Unittest {i} (A10G)", "labels": ["self-hosted", "linux", "x64", "gpu", "sm86", "on-demand"], "timeout_minutes": 360}
       for i in range(1, 6)]
    + [{"name": "JIT Unittest (T4)", "labels": ["self-hosted", "linux", "x64", "gpu", "sm75", "on-demand"], "timeout_minutes": 360},
       {"name": "JIT Unittest (H100)", "labels": ["self-hosted", "linux", "x64", "gpu", "h100"], "timeout_minutes": 480}]
)  # fmt: skip


@dataclass(frozen=True)
class TraceJob:
    id: str
    t: float
    labels: tuple[str, ...]
    duration_s: float
    timeout_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "t": self.t, "labels": list(self.labels), "duration_s": self.duration_s}
        if self.timeout_s is not None:
            data["timeout_s"] = self.timeout_s
        return data


def read_trace(path: Path) -> list[TraceJob]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read the trace: {exc.strerror or exc}") from exc
    jobs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ConfigError(where, None, None, f"not JSON: {exc}") from exc
        jobs.append(_job(data, where))
    if not jobs:
        raise ConfigError(str(path), None, None, "the trace has no jobs")
    return sorted(jobs, key=lambda j: (j.t, j.id))


def _job(data: Any, where: str) -> TraceJob:
    if not isinstance(data, dict):
        raise ConfigError(where, None, None, "a trace line must be a JSON object")
    for key, kinds in (("id", (str,)), ("t", (int, float)), ("labels", (list,)), ("duration_s", (int, float))):
        if key not in data:
            raise ConfigError(where, None, key, "required key is missing")
        if not isinstance(data[key], kinds) or isinstance(data[key], bool):
            raise ConfigError(where, None, key, f"must be {' or '.join(k.__name__ for k in kinds)}")
    if data["t"] < 0 or data["duration_s"] <= 0:
        raise ConfigError(where, None, "t" if data["t"] < 0 else "duration_s", "must be positive")
    if not data["labels"] or not all(isinstance(label, str) for label in data["labels"]):
        raise ConfigError(where, None, "labels", "must be a non-empty list of strings")
    timeout = data.get("timeout_s")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigError(where, None, "timeout_s", "must be a positive number")
    unknown = set(data) - {"id", "t", "labels", "duration_s", "timeout_s"}
    if unknown:
        raise ConfigError(where, None, sorted(unknown)[0], "unknown key")
    return TraceJob(
        data["id"], float(data["t"]), tuple(data["labels"]), float(data["duration_s"]), None if timeout is None else float(timeout)
    )


def write_trace(jobs: list[TraceJob], path: Path) -> None:
    path.write_text("".join(json.dumps(j.to_json()) + "\n" for j in jobs), encoding="utf-8")


def _median_minutes(labels: list[str]) -> float:
    return next((m for key, m in MEDIAN_MINUTES.items() if key in labels), 30.0)


def _busy(t: float) -> bool:
    return 13 <= (t / 3600) % 24 < 22


def flashinfer_trace(seed: int = 0, days: float = 1.0, runs_per_day: float = RUNS_PER_DAY) -> list[TraceJob]:
    """The embedded default: FlashInfer's PR Test workflow, `runs_per_day` runs a day."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    horizon = days * 86400
    # Thinning: the busy window (9 of 24 h) has 3x the quiet rate, averaging runs_per_day.
    quiet = runs_per_day / 86400 / (15 / 24 + 3 * 9 / 24)
    peak = 3 * quiet
    jobs: list[TraceJob] = []
    t, run = 0.0, 0
    while True:
        t += rng.expovariate(peak)
        if t >= horizon:
            break
        if rng.random() > (1.0 if _busy(t) else quiet / peak):
            continue
        run += 1
        for i, spec in enumerate(FLASHINFER_PR_JOBS):
            timeout = 60.0 * spec["timeout_minutes"]
            duration = min(timeout, 60.0 * _median_minutes(spec["labels"]) * math.exp(rng.gauss(0, 0.3)))
            jobs.append(TraceJob(f"run{run}-job{i}", round(t + rng.uniform(0, 30), 1), tuple(spec["labels"]), round(duration, 1), timeout))
    return sorted(jobs, key=lambda j: (j.t, j.id))
