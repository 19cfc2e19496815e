"""`simulate --spot-interruptions` under the `estate` policy handles an interrupted job as the
control plane does (issue 21.1): GitHub fails it, the reconciler re-runs it once when its run
has ended, its retry runs on-demand, and the report counts the re-runs, their extra cost and wait."""

from __future__ import annotations

from pathlib import Path

from estate.config.loader import load_estate
from estate.config.prices import PriceTable
from estate.sim.simulate import simulate
from estate.sim.simulator import Simulation
from estate.sim.workload import TraceJob
from tests.conftest import EXAMPLE_CONFIGS, MINIMAL_POOL, write_pool

PRICES = PriceTable()
CPU = ("self-hosted", "linux", "x64", "cpu")
T4 = ("self-hosted", "linux", "x64", "gpu", "t4")


def interrupted_runs(estate_dir: Path, jobs: list[TraceJob], seeds: range = range(12), rate: float = 3.0) -> list[Simulation]:
    estate = load_estate([estate_dir])
    return [simulate(estate, jobs, ["estate"], PRICES, seed=s, spot_interruptions_per_hour=rate)[1]["estate"] for s in seeds]


def test_an_interrupted_job_is_rerun_once_on_on_demand_not_requeued(tmp_path: Path) -> None:
    write_pool(tmp_path, "cpu", MINIMAL_POOL)  # spot, no on-demand sibling: its own pool launches on-demand
    runs = interrupted_runs(tmp_path, [TraceJob("j", 0.0, CPU, 1200.0)])
    hit = [r for r in runs if r.jobs[0].interruptions]
    assert hit, "some seed interrupts the job"
    for sim in hit:
        original = sim.jobs[0]
        assert len(original.runs) == 1  # never re-queued onto a second host
        report = sim.report()
        assert report["reruns"] == 1
        (retry,) = sim.jobs[1:]
        assert retry.trace is original.trace
        assert retry.queued_at >= (original.finished_at or 0)
        (retry_host,) = [h for h in sim.hosts if retry.runs and h.id == retry.runs[0][0]]
        assert retry_host.market == "on-demand"  # steered, so never interrupted again
        assert retry.finished_at is not None
        assert report["reruns_interrupted_again"] == 0
        assert report["rerun_extra_cost_usd"] > 0
        assert report["rerun_extra_wait_s"]["max"] > 0


def test_the_retry_goes_to_the_on_demand_sibling_and_waits_for_its_run(tmp_path: Path) -> None:
    runs = interrupted_runs(
        EXAMPLE_CONFIGS, [TraceJob("gpu", 0.0, T4, 1800.0, run="r1"), TraceJob("cpu", 0.0, CPU, 3600.0, run="r1")], range(20), rate=2.0
    )
    hit = [r for r in runs if r.jobs[0].interruptions and r.report()["reruns"]]
    assert hit
    for sim in hit:
        retry = next(j for j in sim.jobs[2:] if j.trace.id == "gpu")
        assert retry.pool == "gpu-t4-ondemand"
        assert retry.queued_at >= max(j.finished_at or 0 for j in sim.jobs[:2] if j.trace.id == "cpu")  # its run had ended


def test_without_interruptions_nothing_is_rerun(tmp_path: Path) -> None:
    write_pool(tmp_path, "cpu", MINIMAL_POOL)
    (sim,) = interrupted_runs(tmp_path, [TraceJob("j", 0.0, CPU, 600.0)], range(1), rate=0.0)
    report = sim.report()
    assert (report["reruns"], report["rerun_extra_cost_usd"], report["spot_breaker_opened"]) == (0, 0.0, 0)
