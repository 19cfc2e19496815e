"""`python -m estate simulate`: the policies side by side on one trace; with `--seeds N`, the
mean and range over N seeds; with `--sensitivity boot`, the same with every host's boot swept
over timings.BOOT_SWEEP_S."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from estate.config.loader import Estate
from estate.config.prices import PRICES_AS_OF, PriceTable
from estate.sim import timings
from estate.sim.policies import POLICIES
from estate.sim.simulator import Simulation
from estate.sim.workload import FAILED_RUN_SHARE, WORKLOADS, TraceJob, Workload, pr_trace, read_trace
from lambda_src.core.routing import normalise
from lambda_src.core.warm_pools import demand_bucket


def simulate(
    estate: Estate,
    trace: list[TraceJob],
    policies: list[str],
    prices: PriceTable,
    seed: int = 0,
    spot_interruptions_per_hour: float = 0.0,
    capacity_error_rate: float = 0.0,
    boot_override_s: float | None = None,
    launch_history: dict[str, dict[int, int]] | None = None,
) -> tuple[dict[str, Any], dict[str, Simulation]]:
    sims = {
        name: Simulation(
            estate,
            trace,
            POLICIES[name](),
            prices,
            seed,
            spot_interruptions_per_hour,
            capacity_error_rate,
            boot_override_s,
            launch_history or {},
        ).run()
        for name in policies
    }
    report = {
        "policies": {name: sim.report() for name, sim in sims.items()},
        "trace": {"jobs": len(trace), "hours": round(max(s.horizon for s in sims.values()) / 3600, 1)},
        "prices": prices.source,
        "seed": seed,
    }
    return report, sims


# ---- the ledger's history before the simulated time -------------------------------------
# Adaptive warm pools are sized from the pool's launches at this weekday and time over the last
# weeks (lambda_src/core/warm_pools.py). A generated workload gets those weeks from the same
# generator (seed + HISTORY_SEED_OFFSET), ending at time 0, counted as the estate's ledger counts
# launches: the estate launches one host per queued job (one-job runners, no idle hosts), so a
# pool's launches in a 5-minute bucket are the jobs routed to it then (2 s later, the webhook's
# way). Not simulated, to keep a run's time that of its own day: pools with `reuse_hosts`, jobs
# a capped pool moves on and re-runs make that count differ a little. A `--trace` file has no
# history: its own launches become the history after a week.
HISTORY_SEED_OFFSET = 1_000_000


def history_weeks(estate: Estate) -> int:
    """The longest history any adaptive warm pool reads."""
    return max((p.warm_settings.weeks for p in estate.pools if p.warm_settings.mode == "adaptive"), default=0)


def launch_history(estate: Estate, trace: list[TraceJob]) -> dict[str, dict[int, int]]:
    """Launches per pool and demand bucket for a trace of the weeks before time 0."""
    routing = estate.routing_table()
    out: dict[str, dict[int, int]] = {}
    routes_of: dict[tuple[str, ...], list[str]] = {}
    for job in trace:
        routes = routes_of.get(job.labels)
        if routes is None:
            routes = routes_of[job.labels] = routing.route(normalise(job.labels))
        if routes:
            bucket = demand_bucket(job.t + timings.CONTROL_PLANE_LATENCY_S)
            out.setdefault(routes[0], {})[bucket] = out.setdefault(routes[0], {}).get(bucket, 0) + 1
    return out


def generated_history(
    estate: Estate, workload: Workload, seed: int, failed_run_share: float = FAILED_RUN_SHARE
) -> dict[str, dict[int, int]]:
    """`history_weeks` of `workload` before time 0, as the ledger counts them."""
    days = 7 * history_weeks(estate)
    if not days:
        return {}
    trace = pr_trace(workload, seed + HISTORY_SEED_OFFSET, days, failed_run_share=failed_run_share)
    return launch_history(estate, [replace(j, t=j.t - days * 86400) for j in trace])


# ---- several seeds: mean and range ----------------------------------------------------------
# The figures a headline quotes, each as mean, min and max over the seeds.
_SUMMARISED: dict[str, Callable[[dict[str, Any]], float]] = {
    "jobs_served": lambda r: r["jobs_served"],
    "jobs_unserved": lambda r: r["jobs_unserved"],
    "cost_usd": lambda r: r["cost_usd"],
    "wait_p50": lambda r: r["wait_s"]["p50"],
    "wait_p95": lambda r: r["wait_s"]["p95"],
    "wait_p99": lambda r: r["wait_s"]["p99"],
    "wait_max": lambda r: r["wait_s"]["max"],
    "instance_hours": lambda r: r["instance_hours"],
    "idle_gpu_hours": lambda r: r["idle_gpu_hours"],
    "utilisation": lambda r: r["utilisation"],
}


def summarise(runs: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per policy, the mean of each headline figure over the seeds' reports (under the
    contract's keys) and its range: {"range": {figure: [min, max]}}; `vs_ideal_pct` and
    `vs_estate_pct` compare each seed's cost with that seed's ideal and estate."""
    names = list(next(iter(runs.values()))["policies"])
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        values: dict[str, list[float]] = {key: [float(get(r["policies"][name])) for r in runs.values()] for key, get in _SUMMARISED.items()}
        for other, key in (("ideal", "vs_ideal_pct"), ("estate", "vs_estate_pct")):
            if other in names and all(r["policies"][other]["cost_usd"] for r in runs.values()):
                values[key] = [100 * (r["policies"][name]["cost_usd"] / r["policies"][other]["cost_usd"] - 1) for r in runs.values()]
        mean = {key: round(statistics.fmean(v), 2) for key, v in values.items()}
        out[name] = {
            "jobs_served": mean["jobs_served"],
            "jobs_unserved": mean["jobs_unserved"],
            "wait_s": {"p50": mean["wait_p50"], "p95": mean["wait_p95"], "p99": mean["wait_p99"], "max": mean["wait_max"]},
            "cost_usd": mean["cost_usd"],
            "instance_hours": mean["instance_hours"],
            "idle_gpu_hours": mean["idle_gpu_hours"],
            "utilisation": round(mean["utilisation"], 4),
            **{key: mean[key] for key in ("vs_ideal_pct", "vs_estate_pct") if key in mean},
            "range": {key: [round(min(v), 2), round(max(v), 2)] for key, v in values.items()},
        }
    return out


def simulate_seeds(
    estate: Estate,
    trace_for: Callable[[int], list[TraceJob]],
    policies: list[str],
    prices: PriceTable,
    seeds: list[int],
    spot_interruptions_per_hour: float = 0.0,
    capacity_error_rate: float = 0.0,
    boot_override_s: float | None = None,
    history_for: Callable[[int], dict[str, dict[int, int]]] | None = None,
) -> tuple[dict[str, Any], dict[str, Simulation]]:
    """Every policy on each seed's trace (and simulated EC2), with that seed's ledger history;
    the report's `policies` hold the means (with ranges), `runs` each seed's own report.
    Returns the first seed's simulations."""
    runs: dict[int, dict[str, Any]] = {}
    first: dict[str, Simulation] = {}
    for seed in seeds:
        trace = trace_for(seed)
        args = (seed, spot_interruptions_per_hour, capacity_error_rate, boot_override_s)
        history = history_for(seed) if history_for is not None else None
        runs[seed], sims = simulate(estate, trace, policies, prices, *args, launch_history=history)
        first = first or sims
    one = runs[seeds[0]]
    report: dict[str, Any] = {
        "policies": summarise(runs),
        "seeds": seeds,
        "runs": {str(seed): r["policies"] for seed, r in runs.items()},
        "trace": {"jobs": [r["trace"]["jobs"] for r in runs.values()], "hours": one["trace"]["hours"]},
        "prices": PRICES_AS_OF,
    }
    if boot_override_s is not None:
        report["boot_s"] = boot_override_s
    return report, first


def sensitivity_boot(
    estate: Estate,
    trace_for: Callable[[int], list[TraceJob]],
    policies: list[str],
    prices: PriceTable,
    seeds: list[int],
    spot_interruptions_per_hour: float = 0.0,
    capacity_error_rate: float = 0.0,
    history_for: Callable[[int], dict[str, dict[int, int]]] | None = None,
) -> dict[str, Any]:
    """The comparison again with every host of every policy booting in each of
    timings.BOOT_SWEEP_S (the ideal never boots; a warm instance's start keeps its own)."""
    histories = {seed: history_for(seed) for seed in seeds} if history_for is not None else {}
    rates = (spot_interruptions_per_hour, capacity_error_rate)
    by_boot = {
        f"{boot:g}": simulate_seeds(estate, trace_for, policies, prices, seeds, *rates, boot, histories.get)[0]["policies"]  # type: ignore[arg-type]
        for boot in timings.BOOT_SWEEP_S
    }
    return {"sensitivity": {"boot_s": by_boot}, "seeds": seeds, "prices": PRICES_AS_OF}


# ---- output ------------------------------------------------------------------------------------
NAME_W = 17


def table(report: dict[str, Any]) -> str:
    """One line per policy. The job columns add up to the trace: served (a runner took it) +
    cancelled (by GitHub before a runner took it) + expired (queued 24 hours) + unserved (no
    runner by the end, e.g. no pool serves its labels) = jobs."""
    head = (
        f"{'policy':<{NAME_W}} {'jobs':>6} {'served':>7} {'cancelled':>9} {'expired':>7} {'unserved':>8} "
        f"{'wait p50':>9} {'p95':>7} {'p99':>7} {'max':>7} "
        f"{'cost $':>9} {'inst-h':>8} {'boot-h':>7} {'idle GPU-h':>10} {'util':>6}"
    )
    lines = [head, "-" * len(head)]
    for name, r in report["policies"].items():
        w = r["wait_s"]
        lines.append(
            f"{name:<{NAME_W}} {r['jobs_total']:>6} {r['jobs_served']:>7} {r['jobs_cancelled_before_start']:>9} {r['jobs_expired']:>7} "
            f"{r['jobs_unserved'] - r['jobs_expired']:>8} "
            f"{w['p50']:>8.0f}s {w['p95']:>6.0f}s {w['p99']:>6.0f}s {w['max']:>6.0f}s "
            f"{r['cost_usd']:>9.2f} {r['instance_hours']:>8.1f} {r['boot_hours']:>7.1f} "
            f"{r['idle_gpu_hours']:>10.1f} {r['utilisation']:>6.1%}"
        )
    lines.append("jobs = served + cancelled (before a runner took them) + expired (queued 24 h, failed) + unserved (no runner by the end)")
    return "\n".join(lines)


def _span(r: dict[str, Any], key: str, fmt: str) -> str:
    low, high = r["range"][key]
    return f"{format(low, fmt)}-{format(high, fmt)}"


def seeds_table(policies: dict[str, dict[str, Any]]) -> str:
    """Means over the seeds, each with its range."""
    head = (
        f"{'policy':<{NAME_W}} {'served (range)':>16} {'unserved':>8} {'wait p50':>9} {'p95 (range)':>17} "
        f"{'cost $ (range)':>24} {'vs ideal (range)':>20} {'cost vs estate':>14}"
    )
    lines = [head, "-" * len(head)]
    for name, r in policies.items():
        vs_ideal = f"{r['vs_ideal_pct']:+.1f}% ({_span(r, 'vs_ideal_pct', '+.1f')})" if "vs_ideal_pct" in r else ""
        vs_estate = f"{r['vs_estate_pct']:+.1f}%" if "vs_estate_pct" in r else ""
        lines.append(
            f"{name:<{NAME_W}} {r['jobs_served']:>6.1f} ({_span(r, 'jobs_served', '.0f'):>7}) {r['jobs_unserved']:>8.1f} "
            f"{r['wait_s']['p50']:>8.0f}s {r['wait_s']['p95']:>5.0f}s ({_span(r, 'wait_p95', '.0f'):>9}) "
            f"{r['cost_usd']:>9.2f} ({_span(r, 'cost_usd', '.2f'):>12}) {vs_ideal:>20} {vs_estate:>14}"
        )
    return "\n".join(lines)


def sensitivity_table(result: dict[str, Any]) -> str:
    head = f"{'boot':>6} {'policy':<{NAME_W}} {'served':>7} {'wait p95':>9} {'cost $':>9} {'vs ideal':>9} {'cost vs estate':>14}"
    lines = [head, "-" * len(head)]
    for boot, policies in result["sensitivity"]["boot_s"].items():
        for name, r in policies.items():
            if name in ("static", "ideal"):  # no boot in what they pay or wait
                continue
            vs_ideal = f"{r['vs_ideal_pct']:+.1f}%" if "vs_ideal_pct" in r else ""
            vs_estate = f"{r['vs_estate_pct']:+.1f}%" if "vs_estate_pct" in r else ""
            lines.append(
                f"{boot + ' s':>6} {name:<{NAME_W}} {r['jobs_served']:>7.1f} {r['wait_s']['p95']:>8.0f}s "
                f"{r['cost_usd']:>9.2f} {vs_ideal:>9} {vs_estate:>14}"
            )
    return "\n".join(lines)


def seeded_command(args: argparse.Namespace, estate: Estate, prices: PriceTable, names: list[str]) -> dict[str, Any]:
    """`simulate --seeds N` and `--sensitivity boot`: prints the report (table or JSON), draws the
    first seed's plot; returns the report."""
    fixed = read_trace(Path(args.trace)) if args.trace else None

    def trace_for(seed: int) -> list[TraceJob]:
        return fixed if fixed is not None else pr_trace(WORKLOADS[args.workload], seed, args.days, failed_run_share=args.failed_runs)

    def history_for(seed: int) -> dict[str, dict[int, int]]:
        return {} if fixed is not None else generated_history(estate, WORKLOADS[args.workload], seed, args.failed_runs)

    seeds = list(range(args.seed, args.seed + args.seeds))
    source = args.trace or f"embedded {args.workload} PR workload, {args.days:g} day(s), {args.failed_runs:.0%} of runs fail"
    if args.sensitivity == "boot":
        result = sensitivity_boot(estate, trace_for, names, prices, seeds, args.spot_interruptions, args.capacity_errors, history_for)
        if args.json:
            print(json.dumps(result, indent=1, sort_keys=True))
        else:
            print(f"trace: {source}; seeds {seeds[0]}-{seeds[-1]}; every host's boot replaced; means; prices: {PRICES_AS_OF}")
            print(sensitivity_table(result))
        return result
    report, sims = simulate_seeds(estate, trace_for, names, prices, seeds, args.spot_interruptions, args.capacity_errors, None, history_for)
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        print(f"trace: {source}; seeds {seeds[0]}-{seeds[-1]} (mean and range); prices: {PRICES_AS_OF}")
        print(seeds_table(report["policies"]))
    if args.plot:
        plot(sims, {"policies": report["runs"][str(seeds[0])]}, Path(args.plot))
    return report


def plot(sims: dict[str, Simulation], report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'runner-estate[plot]'") from exc
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), gridspec_kw={"height_ratios": [3, 3, 2]})
    for name, sim in sims.items():
        ts = [t / 3600 for t, _, _ in sim.samples]
        axes[0].step(ts, [q for _, q, _ in sim.samples], where="post", label=name)
        axes[1].step(ts, [n for _, _, n in sim.samples], where="post", label=name)
    axes[0].set_ylabel("queued jobs (a pool serves)")
    axes[1].set_ylabel("running instances")
    axes[1].set_xlabel("hours")
    for ax in axes[:2]:
        ax.legend(loc="upper right")
    axes[2].axis("off")
    axes[2].text(0, 1, table(report), family="monospace", fontsize=8, va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
