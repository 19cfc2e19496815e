"""`estate simulate` and time to start (issue 20.4): boots per image path for the estate, its
stopped warm pools sized by lambda_src/core/warm_pools.py from the ledger's history, their EBS,
the image builds, and the report's per-pool figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estate.cli import main
from estate.config.loader import Estate, load_estate
from estate.config.prices import PriceTable
from estate.sim.policies import POLICIES, EstatePolicy, warm_volume_gib
from estate.sim.simulate import generated_history, launch_history
from estate.sim.simulator import Simulation
from estate.sim.timings import BOOT_S, CONTROL_PLANE_LATENCY_S, GP3_USD_PER_GB_MONTH, HOURS_PER_MONTH, boot_once_s
from estate.sim.workload import MANY_SHORT, TraceJob
from lambda_src.core.warm_pools import WEEK_S, demand_bucket
from tests.conftest import MINIMAL_POOL, write_pool

CPU = ("self-hosted", "linux", "x64", "cpu")
PRICES = PriceTable()
LAT = CONTROL_PLANE_LATENCY_S


ON_DEMAND = "  instance_target_capacity_type: on-demand\n"


def cpu_estate(tmp_path: Path, extra: str = "", market: str = ON_DEMAND) -> Estate:
    """Pool `cpu` in upstream's format, on-demand (where warm pools are adaptive by default)."""
    return load_estate([write_pool(tmp_path, "cpu", MINIMAL_POOL + market + extra)])


def busy_history(per_week: int = 3, at: float = 0.0) -> dict[str, dict[int, int]]:
    """`per_week` launches of pool `cpu` in the bucket of `at`, each of the last four weeks."""
    return {"cpu": {demand_bucket(at - k * WEEK_S): per_week for k in range(1, 5)}}


def run(estate: Estate, jobs: list[TraceJob], policy: str, history: dict[str, dict[int, int]] | None = None, **kw: Any) -> Simulation:
    return Simulation(estate, jobs, POLICIES[policy](), PRICES, launch_history=history or {}, **kw).run()


def wait(sim: Simulation, index: int = 0) -> float:
    started = sim.jobs[index].started_at
    assert started is not None
    return started - sim.jobs[index].queued_at


def test_with_no_history_an_adaptive_pool_keeps_none_warm_and_a_job_boots_the_baked_image(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [TraceJob("j0", 100.0, CPU, 600.0)], "estate")
    assert wait(sim) == pytest.approx(LAT + BOOT_S["cpu-estate-image"])
    assert sim.report()["warm_instances"] == {"launched": 0, "starts": 0, "start_failures": 0, "retired": 0}


def test_a_job_starts_a_stopped_warm_instance_before_a_fresh_launch(tmp_path: Path) -> None:
    # Three launches in this window on each of the last four Mondays: three warm at time 0.
    jobs = [TraceJob(f"j{i}", 10.0, CPU, 600.0) for i in range(4)]
    sim = run(cpu_estate(tmp_path), jobs, "estate", busy_history(3))
    waits = sorted(wait(sim, i) for i in range(4))
    start, fresh = LAT + BOOT_S["cpu-stopped-start"], LAT + BOOT_S["cpu-estate-image"]
    assert waits == pytest.approx([start, start, start, fresh])
    assert sim.report()["warm_instances"]["starts"] == 3


def test_a_spot_pools_warm_start_runs_its_job_on_demand(tmp_path: Path) -> None:
    """As the control plane launches them (ec2_fleet.launch_warm): the job pays on-demand."""
    estate = cpu_estate(tmp_path, "estate:\n  warm_pool: {mode: adaptive}\n", market="")
    assert estate.pools[0].capacity_type == "spot"
    sim = run(estate, [TraceJob("j0", 10.0, CPU, 600.0)], "estate", busy_history(1))
    assert wait(sim) == pytest.approx(LAT + BOOT_S["cpu-stopped-start"])
    (served,) = [h for h in sim.hosts if h.slots]
    assert (served.market, served.price_per_hour) == ("on-demand", PRICES.hourly("m7i.2xlarge", "on-demand"))
    assert all(h.market == "on-demand" for h in sim.hosts)  # the warm instances' own boots too


def test_a_spot_pool_in_upstreams_format_keeps_none_warm(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path, market=""), [TraceJob("j0", 10.0, CPU, 600.0)], "estate", busy_history(3))
    assert wait(sim) == pytest.approx(LAT + BOOT_S["cpu-estate-image"])
    assert sim.report()["warm_instances"]["launched"] == 0


def test_the_ledger_counts_warm_starts_and_fresh_launches_as_demand(tmp_path: Path) -> None:
    jobs = [TraceJob(f"j{i}", 10.0, CPU, 600.0) for i in range(4)]
    sim = run(cpu_estate(tmp_path), jobs, "estate", busy_history(3))
    assert isinstance(sim.policy, EstatePolicy)
    assert sim.policy.launches["cpu"][demand_bucket(LAT + 10.0)] == 4


def test_peers_boot_the_pool_files_ami_whatever_the_history(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [TraceJob("j0", 10.0, CPU, 600.0)], "philips-ephemeral", busy_history(3))
    assert wait(sim) == pytest.approx(LAT + BOOT_S["cpu-stock"])


def test_stopped_warm_instances_cost_their_ebs(tmp_path: Path) -> None:
    # A launch in every 5-minute bucket of the history, a 10-minute window: two warm all day.
    history = {"cpu": {b: 1 for b in range(demand_bucket(-5 * WEEK_S), 0)}}
    estate = cpu_estate(tmp_path)
    sim = run(estate, [TraceJob("j0", 80000.0, CPU, 60.0), TraceJob("j1", 80000.0, CPU, 60.0)], "estate", history)
    report = sim.report()
    gib = warm_volume_gib(estate.pools[0])
    assert gib == 32.0  # upstream's 30 GiB default root, raised to the cpu image's 32 GiB
    ebs = report["warm_ebs_usd"]["cpu"]
    a_day = 2 * gib * GP3_USD_PER_GB_MONTH / HOURS_PER_MONTH * 24
    assert a_day * 0.95 <= ebs <= a_day + 0.01
    assert report["pools"]["cpu"]["warm_ebs_usd"] == pytest.approx(ebs, abs=0.01)
    assert report["cost_usd"] >= ebs + sum(report["image_builds_usd"].values())


def test_warm_instances_boot_once_then_stop_and_are_replaced_after_a_start(tmp_path: Path) -> None:
    estate = cpu_estate(tmp_path)
    jobs = [TraceJob("j0", 10.0, CPU, 600.0)]
    sim = run(estate, jobs, "estate", {"cpu": {b: 1 for b in range(demand_bucket(-5 * WEEK_S), 0)}})
    once = boot_once_s(estate.pools[0])  # the root initialises in EBS after the stop: not billed
    booted_once = [h for h in sim.hosts if not h.slots]
    assert booted_once, "the started warm instance is replaced"
    assert all(h.ended_at == pytest.approx(h.launched_at + once) for h in booted_once)
    assert sim.report()["boot_hours"] >= len(booted_once) * once / 3600 - 0.01


def test_a_stock_image_pool_has_no_warm_pool_and_no_image_build(tmp_path: Path) -> None:
    estate = cpu_estate(tmp_path, "estate:\n  image: {source: ami}\n")
    sim = run(estate, [TraceJob("j0", 10.0, CPU, 600.0)], "estate", busy_history(3))
    assert wait(sim) == pytest.approx(LAT + BOOT_S["cpu-stock"])
    assert sim.report()["image_builds_usd"] == {}


def test_the_history_is_the_generated_weeks_before_time_zero_routed_per_pool(tmp_path: Path) -> None:
    estate = cpu_estate(tmp_path)
    jobs = [TraceJob("a", -WEEK_S + 10.0, CPU, 60.0), TraceJob("b", -WEEK_S + 20.0, CPU, 60.0), TraceJob("c", -10.0, ("gpu",), 60.0)]
    assert launch_history(estate, jobs) == {"cpu": {demand_bucket(-WEEK_S + 12.0): 2}}
    history = generated_history(estate, MANY_SHORT, seed=0)
    assert history
    assert all(b < 0 for b in history["cpu"])  # 4 weeks before the simulated day
    assert min(history["cpu"]) >= demand_bucket(-4 * WEEK_S)


def test_json_has_per_pool_wait_percentiles_boot_hours_and_warm_costs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_pool(tmp_path, "cpu", MINIMAL_POOL + ON_DEMAND)
    args = ["simulate", "--configs", str(tmp_path), "--workload", "many-short", "--days", "0.2", "--policy", "estate", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)["policies"]["estate"]
    pool = report["pools"]["cpu"]
    assert set(pool["wait_s"]) >= {"p50", "p95", "p99"}
    assert {"boot_hours", "cost_usd", "warm_ebs_usd"} <= set(pool)
    assert set(report["wait_s_by_kind"]) == {"cpu", "gpu"}
    assert report["warm_instances"]["starts"] > 0  # the generated weeks sized a warm pool
    assert "cpu-x86_64" in report["image_builds_usd"]
