"""The time-to-start goal table (issue 20.5): the estate on FlashInfer's own pool files, on the
flashinfer, sharded and many-short workloads, each with 4 generated weeks of ledger history
before the day (estate/sim/simulate.py generated_history). Prints, per workload, the mean over
the seeds of the estate's p95 wait for CPU and GPU jobs, its cost (warm EBS and image builds
included) against the ideal's, unserved jobs, and the warm pools' figures; asserts nothing.

Goals: p95 <= 30 s (CPU), <= 60 s (GPU), cost <= 1.10 x ideal, nothing unserved.

    .venv/bin/python bench/time_to_start_bench.py [--seeds N] [--configs DIR] [--warm on|off|both]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FLASHINFER_CONFIGS = ROOT.parent / "shared" / "fixtures" / "terraform-aws-github-runner" / "flashinfer"

from estate.config.loader import Estate, load_estate  # noqa: E402 - after the path set-up
from estate.config.pool_model import WarmPool  # noqa: E402
from estate.config.prices import PriceTable  # noqa: E402
from estate.sim.simulate import generated_history, simulate  # noqa: E402
from estate.sim.workload import WORKLOADS, pr_trace  # noqa: E402

GOALS = {"cpu_p95": 30.0, "gpu_p95": 60.0, "cost_ratio": 1.10, "unserved": 0}


def warm_off(estate: Estate) -> Estate:
    """The same pools with `estate.warm_pool: {mode: off}`: fresh launches of the baked image only."""
    pools = []
    for pool in estate.pools:
        spec = pool.spec.model_copy(update={"estate": pool.spec.estate.model_copy(update={"warm_pool": WarmPool(mode="off")})})
        pools.append(replace(pool, spec=spec))
    return replace(estate, pools=tuple(pools))


def one(estate: Estate, workload: str, seed: int) -> dict[str, float]:
    trace = pr_trace(WORKLOADS[workload], seed, 1.0)
    history = generated_history(estate, WORKLOADS[workload], seed)
    report, sims = simulate(estate, trace, ["estate", "ideal"], PriceTable(), seed, launch_history=history)
    jobs = sims["estate"].jobs
    r: dict[str, Any] = report["policies"]["estate"]
    ideal = report["policies"]["ideal"]["cost_usd"]
    kinds = r["wait_s_by_kind"]
    return {
        "cpu_jobs": kinds["cpu"]["jobs"],
        "cpu_p95": kinds["cpu"]["p95"],
        "gpu_jobs": kinds["gpu"]["jobs"],
        "gpu_p95": kinds["gpu"]["p95"],
        "cost": r["cost_usd"],
        "ideal": ideal,
        "cost_ratio": r["cost_usd"] / ideal,
        "warm_ebs": sum(r["warm_ebs_usd"].values()),
        "images": sum(r["image_builds_usd"].values()),
        "boot_h": r["boot_hours"],
        "warm_launched": r["warm_instances"]["launched"],
        "warm_starts": r["warm_instances"]["starts"],
        "unserved": r["jobs_unserved"],
        "no_pool": sum(1 for j in jobs if j.pool is None and j.started_at is None and j.cancelled_at is None),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--configs", type=Path, default=FLASHINFER_CONFIGS)
    parser.add_argument("--warm", choices=["on", "off", "both"], default="both")
    args = parser.parse_args()
    base = load_estate([args.configs], drop_unknown_types=True)
    variants = {"on": [("adaptive warm", base)], "off": [("no warm", warm_off(base))]}
    chosen = variants["on"] + variants["off"] if args.warm == "both" else variants[args.warm]
    print(f"pools: {args.configs}; seeds 0-{args.seeds - 1}, one day each after 4 generated weeks; means")
    print(f"goals: p95 <= {GOALS['cpu_p95']:g} s CPU, <= {GOALS['gpu_p95']:g} s GPU, cost <= {GOALS['cost_ratio']:.2f} x ideal, 0 unserved")
    head = (
        f"{'workload':<11} {'estate':<14} {'CPU p95':>8} {'GPU p95':>8} {'cost $':>8} {'ideal $':>8} {'x ideal':>8} "
        f"{'warm EBS $':>10} {'images $':>8} {'boot-h':>7} {'warm launched/started':>22} {'unserved (no pool)':>19}"
    )
    print(head)
    print("-" * len(head))
    for workload in ("flashinfer", "sharded", "many-short"):
        for label, estate in chosen:
            runs = [one(estate, workload, seed) for seed in range(args.seeds)]
            m = {key: statistics.fmean(r[key] for r in runs) for key in runs[0]}
            cpu = f"{m['cpu_p95']:.1f} s" if m["cpu_jobs"] else "-"
            gpu = f"{m['gpu_p95']:.1f} s" if m["gpu_jobs"] else "-"
            print(
                f"{workload:<11} {label:<14} {cpu:>8} {gpu:>8} {m['cost']:>8.2f} {m['ideal']:>8.2f} {m['cost_ratio']:>8.3f} "
                f"{m['warm_ebs']:>10.2f} {m['images']:>8.2f} {m['boot_h']:>7.1f} "
                f"{m['warm_launched']:>10.0f}/{m['warm_starts']:<11.0f} {m['unserved']:>6.1f} ({m['no_pool']:.1f})"
            )


if __name__ == "__main__":
    main()
