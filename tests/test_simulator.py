"""`estate simulate`: the simulator's invariants, each policy's documented behaviour on small
hand-made traces, the trace format, and the CLI contract."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from estate.cli import EXIT_USAGE, main
from estate.config.diagnostics import ConfigError
from estate.config.loader import Estate, load_estate
from estate.config.prices import PriceTable
from estate.sim.parameter_store import runner_config_cost_usd
from estate.sim.policies import NEXT_RUNNER_S, POLICIES, REUSE_WAIT_S, EstatePolicy
from estate.sim.simulate import simulate, table
from estate.sim.simulator import Simulation
from estate.sim.timings import BOOT_S, BUILDKITE_BOOT_S, BUILDKITE_TERMINATE_TAIL_S, CONTROL_PLANE_LATENCY_S, ESTATE_SHUTDOWN_TAIL_S
from estate.sim.workload import FLASHINFER, SHARDED, WORKLOADS, TraceJob, flashinfer_trace, pr_trace, read_trace
from tests.conftest import EXAMPLE_CONFIGS, FLASHINFER_CONFIGS, MINIMAL_POOL, SHARED_FIXTURES, needs_shared, write_pool

CPU = ("self-hosted", "linux", "x64", "cpu")
PRICES = PriceTable()
M7I_2XL = PRICES.hourly("m7i.2xlarge", "spot")
BOOT_CPU = BOOT_S["cpu-stock"]  # MINIMAL_POOL's AMI: a stock image, as the peers boot it
ESTATE_BOOT_CPU = BOOT_S["cpu-estate-image"]  # MINIMAL_POOL under the estate: its baked image (the default)
LAT = CONTROL_PLANE_LATENCY_S
ALL = list(POLICIES)


def cpu_estate(tmp_path: Path, extra: str = "") -> Estate:
    return load_estate([write_pool(tmp_path, "cpu", MINIMAL_POOL + extra)])


def run(estate: Estate, jobs: list[TraceJob], policy: str) -> Simulation:
    _, sims = simulate(estate, jobs, [policy], PRICES)
    return sims[policy]


def job(i: int, t: float, duration: float = 600.0) -> TraceJob:
    return TraceJob(f"j{i}", t, CPU, duration)


def wait(sim: Simulation, index: int = 0) -> float:
    started = sim.jobs[index].started_at
    assert started is not None
    return started - sim.jobs[index].queued_at


# ---- invariants, on the embedded workload and every policy -----------------------------


@pytest.fixture(scope="module")
def example_runs() -> dict[str, Simulation]:
    _, sims = simulate(load_estate([EXAMPLE_CONFIGS]), flashinfer_trace(seed=3, days=0.5), ALL, PRICES)
    return sims


@pytest.mark.parametrize("policy", ALL)
def test_jobs_only_run_on_runners_whose_labels_match(example_runs: dict[str, Simulation], policy: str) -> None:
    sim = example_runs[policy]
    slots = {(h.id, i): s for h in sim.hosts for i, s in enumerate(h.slots)}
    for j in sim.jobs:
        for host_id, index, _ in j.runs:
            assert j.labels <= slots[(host_id, index)].labels


@pytest.mark.parametrize("policy", ALL)
def test_no_two_jobs_share_a_slot(example_runs: dict[str, Simulation], policy: str) -> None:
    sim = example_runs[policy]
    by_slot: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for j in sim.jobs:
        for host_id, index, start in j.runs:
            end = j.finished_at if j.finished_at is not None and start == j.runs[-1][2] else start
            by_slot.setdefault((host_id, index), []).append((start, end))
    for spans in by_slot.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


@pytest.mark.parametrize("policy", ALL)
def test_cost_is_billed_instance_time_times_price_plus_parameter_store(example_runs: dict[str, Simulation], policy: str) -> None:
    # EC2 bills a minute at least per instance; capacity blocks are bought whole; every one-job
    # runner config is an Advanced SSM parameter (estate/sim/parameter_store.py).
    sim = example_runs[policy]
    alive = {h.id: (h.ended_at or sim.end) - h.launched_at for h in sim.hosts}
    billed = {h.id: alive[h.id] if h.market == "capacity-block" else max(60.0, alive[h.id]) for h in sim.hosts}
    instances = sum(billed[h.id] / 3600 * h.price_per_hour for h in sim.hosts)
    # The estate also pays its image builds and its warm instances' EBS (`extra_costs`).
    extra = 0.0
    if isinstance(sim.policy, EstatePolicy):
        extra = sum(sum(by.values()) for by in sim.policy.extra_costs(sim).values())
    assert sim.report()["cost_usd"] == pytest.approx(instances + runner_config_cost_usd(sim.runner_configs) + extra, abs=0.01)
    assert sim.report()["billed_hours"] >= sim.report()["instance_hours"]


def test_the_same_seed_gives_the_same_report() -> None:
    estate = load_estate([EXAMPLE_CONFIGS])
    first, _ = simulate(estate, flashinfer_trace(seed=7, days=0.25), ["estate", "philips"], PRICES, seed=7)
    again, _ = simulate(estate, flashinfer_trace(seed=7, days=0.25), ["estate", "philips"], PRICES, seed=7)
    assert first == again


def test_estate_runs_the_planners_and_serves_every_routable_job(example_runs: dict[str, Simulation]) -> None:
    report = example_runs["estate"].report()
    assert report["jobs_unserved"] == 0
    assert report["cost_usd"] >= example_runs["ideal"].report()["cost_usd"]


# ---- issue 7's goal, as far as it holds (README "What the simulator shows") -------------
# Regression guards on the planners, not on the simulator: if a planner change makes the estate
# costlier or slower on these workloads, these fail. Against `philips` (FlashInfer's own
# configuration: reused runners, 30 s webhook delay) the margin is configuration's; against
# `philips-ephemeral` (upstream's ephemeral settings) it is the scaler's, and small.


def _flashinfer_pools_on(trace: list[TraceJob]) -> dict[str, Any]:
    # As `simulate` reads them: the two Graviton types EC2 does not have are left out (validate refuses them).
    estate = load_estate([FLASHINFER_CONFIGS], drop_unknown_types=True)
    report, _ = simulate(estate, trace, ["estate", "philips", "philips-ephemeral", "ideal"], PRICES)
    return dict(report["policies"])


@needs_shared
def test_on_flashinfers_own_workload_the_estate_stays_within_10_percent_of_ideal_and_costs_no_more_than_either_philips() -> None:
    r = _flashinfer_pools_on(flashinfer_trace(seed=0))
    assert r["estate"]["cost_usd"] <= 1.10 * r["ideal"]["cost_usd"]
    assert r["estate"]["cost_usd"] < r["philips"]["cost_usd"]
    assert r["estate"]["cost_usd"] <= r["philips-ephemeral"]["cost_usd"]
    assert r["estate"]["wait_s"]["p95"] < r["philips"]["wait_s"]["p95"]  # no 30 s webhook delay
    assert r["estate"]["wait_s"]["p95"] <= r["philips-ephemeral"]["wait_s"]["p95"]


@needs_shared
def test_on_short_sharded_jobs_the_estate_beats_reused_runners_by_configuration_and_ephemeral_ones_barely() -> None:
    r = _flashinfer_pools_on(pr_trace(SHARDED, seed=0))
    assert r["estate"]["cost_usd"] <= 0.65 * r["philips"]["cost_usd"]  # FlashInfer's 15-minute minimum running time
    assert r["estate"]["cost_usd"] <= r["philips-ephemeral"]["cost_usd"]
    assert r["estate"]["wait_s"]["p95"] <= r["philips-ephemeral"]["wait_s"]["p95"]


@needs_shared
@pytest.mark.parametrize("workload", ["flashinfer", "sharded"])
def test_the_estate_pays_for_nothing_beyond_ideal_but_host_boots(workload: str) -> None:
    # FlashInfer's two spot pools get no job from either workload; their idle_config must not
    # create runners (it once did: $20 a day), and no host may idle longer than it must.
    r = _flashinfer_pools_on(pr_trace(WORKLOADS[workload], seed=0))
    tails_h = r["estate"]["hosts_launched"] * ESTATE_SHUTDOWN_TAIL_S / 3600
    assert r["estate"]["instance_hours"] - r["estate"]["boot_hours"] - tails_h <= 1.02 * r["ideal"]["instance_hours"]
    assert not {"gpu-g5-spot", "cpu-x64-spot"} & set(r["estate"]["pools"])


# ---- each policy's documented behaviour on hand-made traces ----------------------------


def test_estate_launches_when_the_webhook_arrives_and_its_host_leaves_after_the_job(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [job(0, 100.0)], "estate")
    assert wait(sim) == pytest.approx(LAT + ESTATE_BOOT_CPU)
    (host,) = sim.hosts
    done = 100.0 + LAT + ESTATE_BOOT_CPU + 600.0
    assert host.leaving_at == pytest.approx(done)  # ephemeral: its runner is gone with the job
    assert host.ended_at == pytest.approx(done + ESTATE_SHUTDOWN_TAIL_S)  # billed through `shutdown -h now`


EVERY_MINUTE_IDLE = "  idle_config:\n    - {cron: '* * * * *', idleCount: 1}\n"
EVERY_MINUTE_POOL = "  pool_config:\n    - {schedule_expression: 'rate(1 minute)', size: 1}\n"


@pytest.mark.parametrize("policy", ["estate", "philips", "philips-ephemeral"])
def test_idle_config_alone_creates_no_runner_ahead_of_demand(tmp_path: Path, policy: str) -> None:
    sim = run(cpu_estate(tmp_path, EVERY_MINUTE_IDLE), [job(0, 3000.0)], policy)
    assert min(h.launched_at for h in sim.hosts) >= 3000.0


@pytest.mark.parametrize("policy", ["estate", "philips"])
def test_pool_config_creates_a_warm_runner_and_idle_config_keeps_it(tmp_path: Path, policy: str) -> None:
    sim = run(cpu_estate(tmp_path, EVERY_MINUTE_POOL + EVERY_MINUTE_IDLE), [job(0, 3000.0)], policy)
    assert min(h.launched_at for h in sim.hosts) <= 60.0
    assert wait(sim) == 0.0  # the warm runner takes the job at once


def test_philips_waits_delay_webhook_event_then_launches_one_runner_per_job(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path, "  delay_webhook_event: 45\n"), [job(0, 100.0), job(1, 100.0)], "philips")
    assert wait(sim) == pytest.approx(LAT + 45.0 + BOOT_CPU)
    assert len(sim.hosts) == 2


def test_philips_non_ephemeral_runner_takes_the_next_job_and_is_scaled_down_on_schedule(tmp_path: Path) -> None:
    extra = "  enable_ephemeral_runners: false\n  minimum_running_time_in_minutes: 10\n"
    sim = run(cpu_estate(tmp_path, extra), [job(0, 0.0), job(1, 750.0)], "philips")
    assert len(sim.hosts) == 1  # the idle runner took the second job
    assert wait(sim, 1) == 0.0
    (host,) = sim.hosts
    assert host.ended_at is not None
    assert host.ended_at % 300 == 0  # removed by a 5-minute scale-down cycle, not when it fell idle
    assert host.ended_at >= 750.0 + 600.0


def test_buildkite_polls_then_scales_in_after_the_idle_period(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [job(0, 95.0)], "buildkite")
    assert wait(sim) == pytest.approx(5.0 + BUILDKITE_BOOT_S)  # the poll at 100 s, then the stack's boot
    (host,) = sim.hosts
    finished = sim.jobs[0].finished_at
    assert finished is not None
    assert host.leaving_at == pytest.approx(finished + 600.0)  # ScaleInIdlePeriod
    assert host.ended_at == pytest.approx(finished + 600.0 + BUILDKITE_TERMINATE_TAIL_S)


def test_static_keeps_the_peak_all_day(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [job(0, 0.0), job(1, 10.0), job(2, 5000.0)], "static")
    assert len(sim.hosts) == 2  # two jobs overlap at most
    assert all(h.launched_at == 0.0 and h.ended_at == sim.end for h in sim.hosts)
    assert sim.end == 86400.0  # a one-day trace is paid for one day


def test_a_job_no_runner_takes_fails_after_24_hours_as_on_github(tmp_path: Path) -> None:
    stranded = TraceJob("stranded", 0.0, (*CPU, "fpga"), 60.0)
    sim = run(cpu_estate(tmp_path), [stranded, job(1, 25 * 3600.0)], "estate")
    assert sim.jobs[0].expired_at is not None
    assert sim.jobs[0].expired_at >= 24 * 3600.0
    assert sim.jobs[0] not in sim.queue
    report = sim.report()
    assert (report["jobs_expired"], report["jobs_unserved"], report["jobs_served"]) == (1, 1, 1)


def test_ideal_has_no_wait_and_pays_only_for_job_time(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [job(0, 0.0, 1800.0), job(1, 10.0, 3600.0)], "ideal")
    report = sim.report()
    assert report["wait_s"]["max"] == 0.0
    assert report["cost_usd"] == pytest.approx(1.5 * M7I_2XL, abs=0.01)
    assert report["utilisation"] == 1.0


def test_a_capped_pool_makes_jobs_wait_instead_of_overspending(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [job(i, 0.0) for i in range(6)], "estate")
    assert max(len([h for h in sim.hosts if h.launched_at <= t < (h.ended_at or sim.end)]) for t in range(0, 3000, 10)) <= 4
    assert sim.report()["jobs_unserved"] == 0


@pytest.mark.parametrize("policy", [p for p in ALL if p != "estate"])
def test_a_spot_interrupted_job_fails_and_no_peer_re_runs_it(tmp_path: Path, policy: str) -> None:
    # Upstream's control plane and the other models do not re-run a job lost with its host: it
    # fails and fail-fast cancels the rest of its run. The estate re-runs it once, on on-demand
    # (tests/test_sim_interruptions.py).
    estate = cpu_estate(tmp_path)
    jobs = [run_job(0, 0.0, 3600.0, "r1"), run_job(1, 0.0, 3600.0, "r1")]
    runs = [simulate(estate, jobs, [policy], PRICES, seed=s, spot_interruptions_per_hour=2.0)[1][policy] for s in range(6)]
    lost = [r for r in runs if r.jobs[0].lost_at is not None or r.jobs[1].lost_at is not None]
    assert lost, "no interruption in six seeds"
    for r in lost:
        assert all(len(j.runs) <= 1 for j in r.jobs)  # never started again
        assert r.report()["jobs_lost"] >= 1
        first = min(j.lost_at for j in r.jobs if j.lost_at is not None)
        assert all(j.lost_at is not None or (j.cancelled_at is not None and j.cancelled_at <= first) for j in r.jobs)


def test_unroutable_jobs_are_reported_not_dropped(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [TraceJob("gpu", 0.0, ("self-hosted", "gpu"), 60.0)], "estate")
    assert (sim.report()["jobs_unserved"], sim.report()["jobs_unroutable"]) == (1, 1)


# ---- GitHub's cancellations: fail-fast within a run, cancel-in-progress within a group ---


def run_job(i: int, t: float, duration: float, run: str, fails: bool = False, group: str | None = None) -> TraceJob:
    return TraceJob(f"j{i}", t, CPU, duration, run=run, fails=fails, group=group)


def test_a_failing_job_cancels_its_runs_other_jobs_where_they_are(tmp_path: Path) -> None:
    # Pool capped at 4 hosts: the fifth job is still queued when the first fails.
    jobs = [run_job(0, 0.0, 120.0, "r1", fails=True)] + [run_job(i, 0.0, 1800.0, "r1") for i in range(1, 5)]
    sim = run(cpu_estate(tmp_path), jobs, "estate")
    failed_at = LAT + ESTATE_BOOT_CPU + 120.0
    for sibling in sim.jobs[1:4]:
        assert (sibling.cancelled_at, sibling.finished_at) == (failed_at, failed_at)  # stopped on its runner
    assert sim.jobs[4].started_at is None  # left the queue
    assert sim.jobs[4].cancelled_at == failed_at
    assert all(h.leaving_at == failed_at for h in sim.hosts if h.slots[0].jobs_run)  # ephemeral hosts go with their job
    report = sim.report()
    assert (report["jobs_cancelled"], report["jobs_cancelled_before_start"], report["jobs_unserved"]) == (4, 1, 0)


def test_a_job_that_succeeds_cancels_nothing(tmp_path: Path) -> None:
    sim = run(cpu_estate(tmp_path), [run_job(0, 0.0, 120.0, "r1"), run_job(1, 0.0, 1800.0, "r1")], "estate")
    assert all(j.cancelled_at is None and j.finished_at is not None for j in sim.jobs)


def test_a_newer_run_of_the_same_group_cancels_the_older_one_when_it_arrives(tmp_path: Path) -> None:
    jobs = [run_job(0, 0.0, 3600.0, "r1", group="pr-7"), run_job(1, 900.0, 600.0, "r2", group="pr-7"), run_job(2, 950.0, 600.0, "r3")]
    sim = run(cpu_estate(tmp_path), jobs, "estate")
    assert sim.jobs[0].cancelled_at == 900.0
    assert sim.jobs[1].cancelled_at is None  # the newer run
    assert sim.jobs[2].cancelled_at is None  # a run of no group


def test_philips_launches_nothing_for_a_job_cancelled_during_its_webhook_delay(tmp_path: Path) -> None:
    # The second run arrives 10 s after the first, inside the 30 s delay: the queued check finds the first job gone.
    jobs = [run_job(0, 0.0, 600.0, "r1", group="pr-1"), run_job(1, 10.0, 600.0, "r2", group="pr-1")]
    sim = run(cpu_estate(tmp_path, "  delay_webhook_event: 30\n"), jobs, "philips")
    assert sim.jobs[0].cancelled_at == 10.0
    assert len(sim.hosts) == 1


def test_estate_gives_a_booting_host_whose_job_was_cancelled_to_the_next_job(tmp_path: Path) -> None:
    jobs = [run_job(0, 0.0, 600.0, "r1", group="pr-1"), run_job(1, 30.0, 600.0, "r2", group="pr-1")]
    sim = run(cpu_estate(tmp_path), jobs, "estate")
    (host,) = sim.hosts  # launched for the cancelled job, still booting: supply for the newer one
    assert sim.jobs[1].runs[0][0] == host.id


def test_estate_retires_a_host_whose_job_was_cancelled_before_it_booted(tmp_path: Path) -> None:
    newer_elsewhere = TraceJob("j1", 30.0, ("self-hosted", "gpu"), 600.0, run="r2", group="pr-1")
    sim = run(cpu_estate(tmp_path), [run_job(0, 0.0, 600.0, "r1", group="pr-1"), newer_elsewhere], "estate")
    (orphan,) = sim.hosts
    assert orphan.slots[0].jobs_run == 0
    assert orphan.ended_at is not None
    assert 300.0 <= orphan.ended_at - orphan.launched_at <= 300.0 + 120.0  # idle past the 5-minute minimum: retired


# ---- workload and trace format ---------------------------------------------------------


@needs_shared
def test_embedded_workload_is_the_fixtures_run() -> None:
    fixture = json.loads((SHARED_FIXTURES / "workloads" / "flashinfer-pr-test.json").read_text())["jobs_per_run"]
    ours = [(list(lane.labels), lane.timeout_minutes) for lane in FLASHINFER.lanes]
    assert [(j["labels"], j["timeout_minutes"]) for j in fixture] == ours


def test_generated_runs_start_eleven_jobs_within_a_timeout() -> None:
    jobs = flashinfer_trace(seed=0)
    assert len(jobs) % 11 == 0
    assert all(j.timeout_s is not None and j.duration_s <= j.timeout_s for j in jobs)


def test_generated_runs_fail_fast_and_retriggers_share_a_group() -> None:
    jobs = flashinfer_trace(seed=0, days=3)
    runs: dict[str | None, list[TraceJob]] = {}
    for j in jobs:
        runs.setdefault(j.run, []).append(j)
    failing = [r for r in runs.values() if any(j.fails for j in r)]
    assert all(len(r) == 11 and sum(j.fails for j in r) <= 1 for r in runs.values())
    assert 0.15 < len(failing) / len(runs) < 0.45  # FAILED_RUN_SHARE 0.3
    groups = {j.group for j in jobs}
    assert len(groups) < len(runs)  # some runs re-trigger an earlier pull request
    assert not any(j.fails for j in flashinfer_trace(seed=0, failed_run_share=0.0))


def test_the_sharded_workload_is_many_short_gpu_jobs_per_run() -> None:
    jobs = pr_trace(SHARDED, seed=0)
    assert len(jobs) % 36 == 0
    assert all("gpu" in j.labels for j in jobs)
    assert sorted(j.duration_s for j in jobs)[len(jobs) // 2] < 10 * 60


def test_trace_lines_round_trip_with_the_optional_keys(tmp_path: Path) -> None:
    jobs = [run_job(0, 0.0, 60.0, "r1", fails=True, group="pr-1"), job(1, 5.0)]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(j.to_json()) + "\n" for j in jobs))
    assert read_trace(path) == jobs


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ('{"id": "a", "t": 0, "labels": ["x"]}', "duration_s", "required key is missing"),
        ('{"id": "a", "t": "0", "labels": ["x"], "duration_s": 5}', "t", "must be int or float"),
        ('{"id": "a", "t": 0, "labels": [], "duration_s": 5}', "labels", "must be a non-empty list of strings"),
        ('{"id": "a", "t": 0, "labels": ["x"], "duration_s": 5, "gpu": 1}', "gpu", "unknown key"),
        ('{"id": "a", "t": 0, "labels": ["x"], "duration_s": 5, "run": "r", "fails": "yes"}', "fails", "must be true or false"),
        ('{"id": "a", "t": 0, "labels": ["x"], "duration_s": 5, "fails": true}', "fails", "name the run"),
        ('{"id": "a", "t": 0, "labels": ["x"], "duration_s": 5, "group": ""}', "group", "must be a non-empty string"),
        ("not json", None, "not JSON"),
    ],
)
def test_bad_trace_lines_are_named_by_line(tmp_path: Path, line: str, key: str | None, message: str) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text('{"id": "ok", "t": 0, "labels": ["x"], "duration_s": 5}\n' + line + "\n")
    with pytest.raises(ConfigError) as caught:
        read_trace(path)
    assert caught.value.file == f"{path}:2"
    assert caught.value.key == key
    assert message in caught.value.message


def test_cli_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(j.to_json()) + "\n" for j in [job(0, 0.0), job(1, 60.0)]))
    write_pool(tmp_path, "cpu", MINIMAL_POOL)
    assert main(["simulate", "--trace", str(trace), "--configs", str(tmp_path), "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    for report in out["policies"].values():
        assert {"jobs_served", "jobs_unserved", "wait_s", "cost_usd", "instance_hours", "idle_gpu_hours", "utilisation"} <= set(report)
        assert set(report["wait_s"]) >= {"p50", "p95", "p99", "max"}
    assert set(out["policies"]) == {"estate", "philips", "philips-ephemeral", "buildkite", "static", "ideal"}


def test_cli_generates_the_sharded_workload_without_failures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--workload", "sharded", "--failed-runs", "0", "--days", "0.1", "--policy", "ideal", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trace"]["jobs"] % 36 == 0
    assert report["policies"]["ideal"]["jobs_cancelled"] == 0


def test_cli_refuses_a_failed_run_share_above_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--failed-runs", "1.5"]) == EXIT_USAGE
    assert "--failed-runs: '1.5' is not a share from 0 to 1" in capsys.readouterr().err


def test_cli_plot_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "sim.png"
    assert main(["simulate", "--days", "0.1", "--policy", "estate", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- Buildkite queues from buildkite_queue files ---------------------------------------

CPU_QUEUE = """\
buildkite_queue:
  queue: cpu_queue
  instance_types: [m7i.2xlarge]
  min_size: 1
  max_size: 4
  agents_per_instance: 2
  scale_in_idle_seconds: 600
"""


def queue_estate(tmp_path: Path, queue: str = CPU_QUEUE) -> Estate:
    return load_estate([write_pool(tmp_path, "cpu", MINIMAL_POOL), write_pool(tmp_path, "bk-cpu", queue)])


def queue_job(i: int, t: float) -> TraceJob:
    return TraceJob(f"q{i}", t, (*CPU, "queue=cpu_queue"), 600.0)


def test_buildkite_policy_runs_queue_jobs_on_the_queues_own_settings(tmp_path: Path) -> None:
    sim = run(queue_estate(tmp_path), [queue_job(0, 300.0), queue_job(1, 300.0), queue_job(2, 300.0)], "buildkite")
    queue_hosts = [h for h in sim.hosts if h.pool == "buildkite:cpu_queue"]
    assert all(len(h.slots) == 2 for h in queue_hosts)  # AgentsPerInstance
    assert queue_hosts[0].launched_at == 0.0  # the group starts with MinSize 1
    assert wait(sim, 0) == 0.0
    assert wait(sim, 1) == 0.0  # the warm instance's second agent
    assert queue_hosts[1].launched_at == 300.0  # the third job needed one more instance, at the next poll
    assert wait(sim, 2) == pytest.approx(BUILDKITE_BOOT_S)


def test_the_same_trace_goes_to_github_pools_under_the_other_policies(tmp_path: Path) -> None:
    sim = run(queue_estate(tmp_path), [queue_job(0, 0.0)], "estate")
    assert sim.jobs[0].pool == "cpu"  # the queue= label is Buildkite's; GitHub routing ignores it
    assert sim.report()["jobs_served"] == 1


def test_terminate_after_job_recycles_the_instance(tmp_path: Path) -> None:
    one_shot = CPU_QUEUE.replace("min_size: 1", "min_size: 0").replace("agents_per_instance: 2", "terminate_after_job: true")
    sim = run(queue_estate(tmp_path, one_shot), [queue_job(0, 0.0)], "buildkite")
    (host,) = [h for h in sim.hosts if h.pool == "buildkite:cpu_queue"]
    finished = sim.jobs[0].finished_at
    assert finished is not None
    assert host.leaving_at == finished
    assert host.ended_at == pytest.approx(finished + BUILDKITE_TERMINATE_TAIL_S)


# ---- estate.reuse_hosts -----------------------------------------------------------------

REUSE = "estate:\n  reuse_hosts:\n    max_jobs: 3\n"
CAPPED = "  runners_maximum_count: 1\n"


def capped_estate(tmp_path: Path, extra: str = "") -> Estate:
    return load_estate([write_pool(tmp_path, "cpu", MINIMAL_POOL.replace("  runners_maximum_count: 4\n", CAPPED) + extra)])


def test_a_capped_pool_reuses_its_host_for_the_job_waiting_behind_the_cap(tmp_path: Path) -> None:
    plain = run(capped_estate(tmp_path), [job(0, 0.0), job(1, 0.0)], "estate")
    reusing = run(capped_estate(tmp_path, REUSE), [job(0, 0.0), job(1, 0.0)], "estate")
    assert (len(plain.hosts), len(reusing.hosts)) == (2, 1)
    first_done = LAT + ESTATE_BOOT_CPU + 600.0
    # The `completed` webhook reaches scale-up, which gives the waiting host its next runner.
    assert wait(reusing, 1) == pytest.approx(first_done + LAT + NEXT_RUNNER_S)
    assert wait(plain, 1) > first_done + ESTATE_BOOT_CPU
    assert reusing.report()["boot_hours"] < plain.report()["boot_hours"]


def test_a_reusable_host_with_no_job_waiting_waits_for_a_next_runner_then_goes(tmp_path: Path) -> None:
    # The host program waits REUSE_WAIT_S for a next config before it powers off. Scale-down
    # leaves a spent host alone for the planner's reuse window (60 s after its job ended at
    # 631.6 s, on the estate's baked image) and retires it at its first cycle after that: 720 s.
    sim = run(capped_estate(tmp_path, REUSE), [job(0, 0.0), job(1, 5000.0)], "estate")
    first, _ = sim.hosts
    done = LAT + ESTATE_BOOT_CPU + 600.0
    assert first.ended_at is not None
    assert done < first.ended_at <= done + REUSE_WAIT_S + ESTATE_SHUTDOWN_TAIL_S
    assert first.ended_at == 720.0


def test_a_reusable_host_stops_at_its_job_limit(tmp_path: Path) -> None:
    sim = run(capped_estate(tmp_path, REUSE), [job(i, 0.0) for i in range(4)], "estate")
    assert [h.slots[0].jobs_run for h in sim.hosts] == [3, 1]


# ---- a newcomer's runs: arguments checked first, a table that adds up (issue 19.5) --------


def test_the_table_adds_up_to_the_trace(tmp_path: Path) -> None:
    """served + cancelled + expired + unserved = jobs; the table hid cancelled jobs."""
    fpga = (*CPU, "fpga")  # no pool serves it
    trace = [run_job(0, 0.0, 120.0, "r1", fails=True)] + [run_job(i, 0.0, 1800.0, "r1") for i in range(1, 5)]
    trace += [
        TraceJob("stranded", 0.0, fpga, 60.0, run="r2"),  # expires after 24 h ...
        TraceJob("r2-fails", 30 * 3600.0, CPU, 60.0, run="r2", fails=True),  # ... and stays expired when its run fails
        job(7, 25 * 3600.0),
        TraceJob("late", 30 * 3600.0, fpga, 60.0),  # still queued at the end
    ]
    sim = run(cpu_estate(tmp_path), trace, "estate")
    report = sim.report()
    assert report["jobs_total"] == len(trace)
    assert (report["jobs_expired"], report["jobs_unserved"], report["jobs_cancelled_before_start"]) == (1, 2, 1)
    head, _, row, footnote = table({"policies": {"estate": report}}).splitlines()
    assert head.split()[:6] == ["policy", "jobs", "served", "cancelled", "expired", "unserved"]
    jobs, served, cancelled, expired, unserved = map(int, row.split()[1:6])
    assert (jobs, served, cancelled, expired, unserved) == (9, 6, 1, 1, 1)
    assert jobs == served + cancelled + expired + unserved
    assert footnote.startswith("jobs = served + cancelled")


def test_the_queue_the_plot_draws_holds_only_jobs_some_pool_serves(tmp_path: Path) -> None:
    """An unroutable job was drawn as queued for the whole day."""
    sim = run(cpu_estate(tmp_path), [TraceJob("gpu", 0.0, ("self-hosted", "gpu"), 60.0), job(1, 3600.0)], "estate")
    assert sim.samples
    assert max(queued for _, queued, _ in sim.samples) == 1  # the CPU job, while its host boots
    assert [queued for t, queued, _ in sim.samples if t < 3600.0] == [0] * len([t for t, _, _ in sim.samples if t < 3600.0])


@pytest.fixture
def never_simulated(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the simulation ran before its arguments were checked")

    monkeypatch.setattr("estate.sim.simulate.simulate", refuse)


@pytest.mark.usefixtures("never_simulated")
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--days", "0"], "argument --days: '0' is not a number above 0"),
        (["--days", "-1"], "argument --days: '-1' is not a number above 0"),
        (["--days", "nan"], "is not a number above 0"),
        (["--spot-interruptions", "-1"], "argument --spot-interruptions: '-1' is not a number, 0 or more"),
        (["--trace", "TRACE", "--days", "2"], "--days shape the generated workload; a --trace file has its own jobs"),
        (["--trace", "TRACE", "--workload", "sharded", "--failed-runs", "0"], "--workload, --failed-runs shape the generated workload"),
        (["--trace", "nosuch.jsonl"], "--trace nosuch.jsonl: no such file"),
        (["--plot", "no/such/folder/sim.png"], "--plot no/such/folder/sim.png: folder no/such/folder does not exist"),
    ],
)
def test_simulate_refuses_what_it_cannot_honour_before_it_runs(
    args: list[str], error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps({"id": "a", "t": 0, "labels": list(CPU), "duration_s": 60}) + "\n", encoding="utf-8")
    assert main(["simulate", *[str(trace) if a == "TRACE" else a for a in args]]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert error in err


@pytest.mark.usefixtures("never_simulated")
@pytest.mark.parametrize(
    ("prices", "error"),
    [
        ({"p5.48xlarge": {"ondemand": 50.0}}, "p5.48xlarge: unknown market 'ondemand' (want on-demand, spot, capacity-block)"),
        ({"p5.48xlarg": {"on-demand": 50.0}}, "unknown EC2 instance type 'p5.48xlarg'"),
        ({"p5.48xlarge": {"spot": "cheap"}}, "p5.48xlarge: spot: want USD per instance-hour, a number >= 0, not 'cheap'"),
        ({"p5.48xlarge": {"spot": -1}}, "p5.48xlarge: spot: want USD per instance-hour, a number >= 0, not -1"),
    ],
)
def test_unknown_price_keys_are_refused_not_ignored(
    prices: dict[str, Any], error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices), encoding="utf-8")
    assert main(["simulate", "--prices", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert error in err


def test_prices_for_types_the_simulation_never_launches_are_pointed_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"g6.xlarge": {"on-demand": 0.5}}), encoding="utf-8")
    assert main(["simulate", "--prices", str(path), "--days", "0.05", "--policy", "ideal", "--json"]) == 0
    assert "note: --prices: the simulation launches no g6.xlarge" in capsys.readouterr().err
