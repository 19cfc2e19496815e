"""Figures for `estate simulate`: wall time and peak memory of every policy on the
generated workloads, against FlashInfer's pool files (or the example estate). Prints; asserts
nothing. Each case runs in a fresh process so its peak memory is its own.

    .venv/bin/python bench/simulate_bench.py [--days 1 7 30] [--configs DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FLASHINFER_CONFIGS = ROOT.parent / "shared" / "fixtures" / "terraform-aws-github-runner" / "flashinfer"


def one(workload: str, days: float, configs: Path) -> dict[str, float]:
    """Run in this process: generate, simulate every policy, report."""
    from estate.config.loader import load_estate
    from estate.config.prices import PriceTable
    from estate.sim.policies import POLICIES
    from estate.sim.simulate import simulate
    from estate.sim.workload import WORKLOADS, pr_trace

    start = time.perf_counter()
    trace = pr_trace(WORKLOADS[workload], seed=0, days=days)
    simulate(load_estate([configs]), trace, list(POLICIES), PriceTable())
    return {
        "jobs": len(trace),
        "policies": len(POLICIES),
        "wall_s": time.perf_counter() - start,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=float, nargs="+", default=[1.0, 7.0, 30.0])
    parser.add_argument("--configs", type=Path, default=FLASHINFER_CONFIGS if FLASHINFER_CONFIGS.is_dir() else ROOT / "runner_configs")
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "DAYS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], float(args.one[1]), args.configs)))
        return
    print(f"pools: {args.configs}")
    for workload in ("flashinfer", "sharded"):
        for days in args.days:
            out = subprocess.run(  # noqa: S603 - this script, in a fresh interpreter
                [sys.executable, __file__, "--one", workload, str(days), "--configs", str(args.configs)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(out)
            print(
                f"simulate {workload:<10} {days:>4g} day(s), {r['jobs']:>6} jobs, {r['policies']:.0f} policies:"
                f" {r['wall_s']:6.2f} s, {r['jobs'] * r['policies'] / r['wall_s']:7.0f} job-runs/s, peak RSS {r['peak_mib']:.0f} MiB"
            )


if __name__ == "__main__":
    main()
