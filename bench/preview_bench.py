"""Figures for the offline preview and the routing hot path. Prints; asserts nothing.

    .venv/bin/python bench/preview_bench.py [--runs N]

- preview: wall time and peak memory of `python -m estate preview --json` in a fresh process
  (the issue's goal: under 10 s on a 2-core machine for the example estate);
- validate: the same for `python -m estate validate runner_configs`;
- route: routing decisions per second on the compiled example table (the webhook's hot path).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed_process(args: list[str], runs: int) -> tuple[list[float], float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "estate", *args], cwd=ROOT, check=True, capture_output=True)  # noqa: S603
        times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return times, peak_mib


def route_rate(seconds: float = 2.0) -> tuple[float, int]:
    from estate.config.loader import load_estate

    table = load_estate([ROOT / "runner_configs"]).routing_table()
    vocabulary = sorted({label for r in table.routes for s in r.runner_label_sets for label in s})
    rng = random.Random(7)  # noqa: S311 - reproducible sample jobs, not secrets
    jobs = [rng.sample(vocabulary, rng.randint(2, 6)) for _ in range(1000)]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for job in jobs:
            table.route(job)
        done += len(jobs)
    return done / (time.perf_counter() - start), len(table.routes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    preview, peak = timed_process(["preview", "--json"], runs)
    print(
        f"preview --json (prod, fresh process): median {statistics.median(preview):.2f} s,"
        f" max {max(preview):.2f} s over {runs} runs; peak RSS {peak:.0f} MiB"
    )
    validate, _ = timed_process(["validate", "runner_configs"], runs)
    print(f"validate runner_configs (fresh process): median {statistics.median(validate):.2f} s")
    rate, pools = route_rate()
    print(f"route: {rate:,.0f} decisions/s over {pools} pools ({1e6 / rate:.1f} us each)")


if __name__ == "__main__":
    main()
