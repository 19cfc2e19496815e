"""`python -m estate status` and `python -m estate report`: read, then print a screen, JSON or a plot."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from estate.ops.gather import Reader
from estate.ops.report_view import build_report, parse_duration, render_report
from estate.ops.status_view import build_status, render_status
from estate.ops.target import Target, serve_target, stack_target


def target_of(project_dir: Path, stack: str | None, serve: Path | None, app_key_file: Path | None = None) -> Target:
    if serve is not None:
        return serve_target(serve)
    return stack_target(project_dir, stack or "prod", app_key_file)


def status(target: Target, as_json: bool, clock: Callable[[], float] = time.time) -> int:
    facts = Reader(target, clock).status(target.where)
    found = build_status(facts)
    print(json.dumps(found, indent=1, sort_keys=True) if as_json else render_status(found))
    if found["unread"]:
        print(f"warning: {len(found['unread'])} source(s) could not be read; the rest is shown", file=sys.stderr)
    return 0


def report(target: Target, since: str, as_json: bool, plot: Path | None, clock: Callable[[], float] = time.time) -> int:
    window = parse_duration(since)
    if window > target.settings.ledger_ttl_s:
        days = target.settings.ledger_ttl_s / 86400
        print(f"warning: the ledger keeps jobs and hosts {days:g} days; older ones are gone from this report", file=sys.stderr)
    reader = Reader(target, clock)
    until = clock()
    found = build_report(reader.items(), target.settings.pools, until - window, until, prices=target.prices)
    print(json.dumps(found, indent=1, sort_keys=True) if as_json else render_report(found))
    if plot is not None:
        plot_report(found, plot)
    return 0


def plot_report(found: Mapping[str, Any], path: Path) -> None:
    """Cost per pool (charged to jobs, and idle), the dearest repositories, and each capacity
    block pool's paid GPU-hours, busy and idle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pools = found["pools"]
    repos = list(found["repositories"].items())[:10]
    blocks = found["capacity_blocks"]
    fig, axes = plt.subplots(1, 3 if blocks else 2, figsize=(16 if blocks else 12, 5), squeeze=False)
    ax = axes[0][0]
    names = list(pools)
    jobs = [pools[n]["job_cost_usd"] for n in names]
    idle = [pools[n]["idle_cost_usd"] for n in names]
    ax.barh(names, jobs, label="charged to jobs")
    ax.barh(names, idle, left=jobs, label="idle (boot, wait, unused)")
    ax.set_xlabel("USD (estimate)")
    ax.set_title(f"cost per pool, {found['since'][:10]} .. {found['until'][:10]}")
    ax.legend(loc="lower right")
    ax.invert_yaxis()
    ax = axes[0][1]
    ax.barh([n for n, _ in repos], [r["job_cost_usd"] for _, r in repos], color="tab:green")
    ax.set_xlabel("USD charged to jobs")
    ax.set_title("dearest repositories")
    ax.invert_yaxis()
    if blocks:
        ax = axes[0][2]
        names = list(blocks)
        busy = [blocks[n]["busy_gpu_hours"] for n in names]
        idle_gpu = [blocks[n]["idle_gpu_hours"] for n in names]
        ax.bar(names, busy, label="busy GPU-hours")
        ax.bar(names, idle_gpu, bottom=busy, label="idle paid GPU-hours")
        ax.set_title("capacity-block use")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
