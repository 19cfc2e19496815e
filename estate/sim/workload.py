"""Job traces for `estate simulate`: the JSON Lines format, and the embedded FlashInfer-like
pull-request workload.

Trace format, one job per line:
  {"id": str, "t": seconds from start, "labels": [..], "duration_s": number, "timeout_s": number (optional),
   "run": str (optional), "fails": bool (optional), "group": str (optional)}

The optional keys carry what GitHub does to a workflow run, so each policy pays for it as it
would: jobs sharing a `run` are one matrix with fail-fast, and when a job with `"fails": true`
ends (after its `duration_s`) GitHub cancels the run's other jobs, queued or running; a run
whose jobs name a concurrency `group` with cancel-in-progress cancels the unfinished jobs of
that group's earlier runs when it arrives.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from estate.config.diagnostics import ConfigError

# The fixture publishes each job's labels and timeout, not durations or arrival rates; these
# are ours, chosen to look like a busy GPU-kernel project and documented here:
# - runs arrive as a Poisson process, 3x as often in 13:00-22:00 UTC (US + EU working hours),
#   RUNS_PER_DAY on average;
# - a run starts all of its jobs within 30 s;
# - durations are log-normal around each lane's median, never past the job's timeout;
# - FAILED_RUN_SHARE of runs fail: one of their jobs, drawn evenly, fails after a share of its
#   duration drawn evenly from 5-100 %. The workflow puts every job in one fail-fast matrix so
#   that one failure stops the billed on-demand hosts of all the others: GitHub cancels the rest;
# - RETRIGGER_SHARE of runs re-trigger a pull request whose last run began within the past
#   hour (a maintainer's "@flashinfer-bot run" after a fix); the workflow's concurrency group
#   per ref has cancel-in-progress, so the new run cancels what is left of the old one.
RUNS_PER_DAY = 40
FAILED_RUN_SHARE = 0.3
RETRIGGER_SHARE = 0.1
RETRIGGER_WITHIN_S = 3600.0


@dataclass(frozen=True)
class Lane:
    """One job of every run: its runs-on labels, timeout and our median duration."""

    name: str
    labels: tuple[str, ...]
    timeout_minutes: float
    median_minutes: float


@dataclass(frozen=True)
class Workload:
    lanes: tuple[Lane, ...]
    spread: float  # sigma of the log-normal durations
    runs_per_day: float = RUNS_PER_DAY


def _lane(name: str, labels: list[str], timeout: float, median: float) -> Lane:
    return Lane(name, ("self-hosted", "linux", *labels), timeout, median)


# The self-hosted jobs of one run of FlashInfer's "PR Test" workflow (flashinfer-ai/flashinfer
# .github/workflows/pr-test.yml @ 01c9273, CUDA list from ci/cuda-versions.json @ 15c89ff): labels
# and timeouts; the medians (minutes) are ours. tests/test_simulator.py checks it against
# ../shared's fixture of the same run.
FLASHINFER = Workload(
    tuple(_lane(f"AOT Build ({a}, {c})", [a, "cpu", "on-demand"], 360, 35.0) for a in ("x64", "arm64") for c in ("cu129", "cu130"))
    + tuple(_lane(f"JIT Unittest {i} (A10G)", ["x64", "gpu", "sm86", "on-demand"], 360, 25.0) for i in range(1, 6))
    + (_lane("JIT Unittest (T4)", ["x64", "gpu", "sm75", "on-demand"], 360, 30.0),
       _lane("JIT Unittest (H100)", ["x64", "gpu", "h100"], 480, 40.0)),
    spread=0.3,
)  # fmt: skip
# Ours entirely, for contrast: the same lanes' labels, but a suite sharded into many short
# single-GPU jobs (30 A10G + 6 T4 shards of about 6 minutes, spread sigma 0.5), the shape of
# projects whose CI runs hundreds of short steps. Here a host's boot is a large share of each job.
SHARDED = Workload(
    tuple(_lane(f"Shard {i} (A10G)", ["x64", "gpu", "sm86", "on-demand"], 60, 6.0) for i in range(1, 31))
    + tuple(_lane(f"Shard {i} (T4)", ["x64", "gpu", "sm75", "on-demand"], 60, 6.0) for i in range(1, 7)),
    spread=0.5,
)  # fmt: skip
# Ours entirely, for time to start (issue 20.5): a day of many short jobs, as a busy repository's
# lint, unit-test and small-GPU shards make them: 150 runs a day, each 12 CPU jobs of about 3
# minutes and 4 single-GPU jobs of about 4 minutes (spot pools: no `on-demand` label), spread
# sigma 0.5, 30-minute timeouts. A boot here is a large share of each job and arrivals are dense
# enough for adaptive warm pools to see them at every hour.
MANY_SHORT = Workload(
    tuple(_lane(f"Check {i} (CPU)", ["x64", "cpu"], 30, 3.0) for i in range(1, 13))
    + tuple(_lane(f"GPU check {i} (A10G)", ["x64", "gpu", "sm86"], 30, 4.0) for i in range(1, 5)),
    spread=0.5,
    runs_per_day=150,
)  # fmt: skip
WORKLOADS = {"flashinfer": FLASHINFER, "sharded": SHARDED, "many-short": MANY_SHORT}


@dataclass(frozen=True)
class TraceJob:
    id: str
    t: float
    labels: tuple[str, ...]
    duration_s: float
    timeout_s: float | None = None
    run: str | None = None
    fails: bool = False
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "t": self.t, "labels": list(self.labels), "duration_s": self.duration_s}
        optional = {"timeout_s": self.timeout_s, "run": self.run, "fails": self.fails or None, "group": self.group}
        data.update({key: value for key, value in optional.items() if value is not None})
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
    for key in ("run", "group"):
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise ConfigError(where, None, key, "must be a non-empty string")
    if not isinstance(data.get("fails", False), bool):
        raise ConfigError(where, None, "fails", "must be true or false")
    if data.get("fails") and "run" not in data:
        raise ConfigError(where, None, "fails", "a failing job cancels its run's other jobs: name the run")
    unknown = set(data) - {"id", "t", "labels", "duration_s", "timeout_s", "run", "fails", "group"}
    if unknown:
        raise ConfigError(where, None, sorted(unknown)[0], "unknown key")
    return TraceJob(
        data["id"],
        float(data["t"]),
        tuple(data["labels"]),
        float(data["duration_s"]),
        None if timeout is None else float(timeout),
        data.get("run"),
        data.get("fails", False),
        data.get("group"),
    )


def write_trace(jobs: list[TraceJob], path: Path) -> None:
    path.write_text("".join(json.dumps(j.to_json()) + "\n" for j in jobs), encoding="utf-8")


def _busy(t: float) -> bool:
    return 13 <= (t / 3600) % 24 < 22


def flashinfer_trace(seed: int = 0, days: float = 1.0, failed_run_share: float = FAILED_RUN_SHARE) -> list[TraceJob]:
    """The embedded default: FlashInfer's PR Test workflow."""
    return pr_trace(FLASHINFER, seed, days, failed_run_share=failed_run_share)


def pr_trace(
    workload: Workload,
    seed: int = 0,
    days: float = 1.0,
    runs_per_day: float | None = None,
    failed_run_share: float = FAILED_RUN_SHARE,
) -> list[TraceJob]:
    """`runs_per_day` (default: the workload's) pull-request runs of `workload`, each a
    fail-fast matrix in a per-PR concurrency group with cancel-in-progress."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    runs_per_day = workload.runs_per_day if runs_per_day is None else runs_per_day
    horizon = days * 86400
    # Thinning: the busy window (9 of 24 h) has 3x the quiet rate, averaging runs_per_day.
    quiet = runs_per_day / 86400 / (15 / 24 + 3 * 9 / 24)
    peak = 3 * quiet
    jobs: list[TraceJob] = []
    t, run = 0.0, 0
    last_run_of_pr: dict[int, float] = {}
    while True:
        t += rng.expovariate(peak)
        if t >= horizon:
            break
        if rng.random() > (1.0 if _busy(t) else quiet / peak):
            continue
        run += 1
        recent = sorted(pr for pr, began in last_run_of_pr.items() if t - began <= RETRIGGER_WITHIN_S)
        pr = rng.choice(recent) if recent and rng.random() < RETRIGGER_SHARE else len(last_run_of_pr) + 1
        last_run_of_pr[pr] = t
        # Every draw is made whatever the share, so runs differ only in whether they fail.
        fails, lane_failing, failed_after = rng.random() < failed_run_share, rng.randrange(len(workload.lanes)), rng.uniform(0.05, 1.0)
        failing = lane_failing if fails else None
        for i, lane in enumerate(workload.lanes):
            timeout = 60.0 * lane.timeout_minutes
            duration = min(timeout, 60.0 * lane.median_minutes * math.exp(rng.gauss(0, workload.spread)))
            if i == failing:
                duration *= failed_after
            jobs.append(
                TraceJob(
                    f"run{run}-job{i}",
                    round(t + rng.uniform(0, 30), 1),
                    lane.labels,
                    round(duration, 1),
                    timeout,
                    run=f"run{run}",
                    fails=i == failing,
                    group=f"pr-test-{pr}",
                )
            )
    return sorted(jobs, key=lambda j: (j.t, j.id))
