"""`python -m estate simulate`: the policies side by side on one trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from estate.config.loader import Estate
from estate.config.prices import PRICES_AS_OF, PriceTable
from estate.sim.policies import POLICIES
from estate.sim.simulator import Simulation
from estate.sim.workload import TraceJob


def simulate(
    estate: Estate,
    trace: list[TraceJob],
    policies: list[str],
    prices: PriceTable,
    seed: int = 0,
    spot_interruptions_per_hour: float = 0.0,
    capacity_error_rate: float = 0.0,
) -> tuple[dict[str, Any], dict[str, Simulation]]:
    sims = {
        name: Simulation(estate, trace, POLICIES[name](), prices, seed, spot_interruptions_per_hour, capacity_error_rate).run()
        for name in policies
    }
    report = {
        "policies": {name: sim.report() for name, sim in sims.items()},
        "trace": {"jobs": len(trace), "hours": round(max(s.horizon for s in sims.values()) / 3600, 1)},
        "prices": PRICES_AS_OF,
        "seed": seed,
    }
    return report, sims


def table(report: dict[str, Any]) -> str:
    """One line per policy. The job columns add up to the trace: served (a runner took it) +
    cancelled (by GitHub before a runner took it) + expired (queued 24 hours) + unserved (no
    runner by the end, e.g. no pool serves its labels) = jobs."""
    head = (
        f"{'policy':<10} {'jobs':>6} {'served':>7} {'cancelled':>9} {'expired':>7} {'unserved':>8} "
        f"{'wait p50':>9} {'p95':>7} {'p99':>7} {'max':>7} "
        f"{'cost $':>9} {'inst-h':>8} {'boot-h':>7} {'idle GPU-h':>10} {'util':>6}"
    )
    lines = [head, "-" * len(head)]
    for name, r in report["policies"].items():
        w = r["wait_s"]
        lines.append(
            f"{name:<10} {r['jobs_total']:>6} {r['jobs_served']:>7} {r['jobs_cancelled_before_start']:>9} {r['jobs_expired']:>7} "
            f"{r['jobs_unserved'] - r['jobs_expired']:>8} "
            f"{w['p50']:>8.0f}s {w['p95']:>6.0f}s {w['p99']:>6.0f}s {w['max']:>6.0f}s "
            f"{r['cost_usd']:>9.2f} {r['instance_hours']:>8.1f} {r['boot_hours']:>7.1f} "
            f"{r['idle_gpu_hours']:>10.1f} {r['utilisation']:>6.1%}"
        )
    lines.append("jobs = served + cancelled (before a runner took them) + expired (queued 24 h, failed) + unserved (no runner by the end)")
    return "\n".join(lines)


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
