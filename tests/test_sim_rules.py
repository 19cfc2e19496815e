"""`estate simulate`'s models of the peers follow their code: one hand-made trace per rule
(estate/sim/policies.py cites each rule's upstream file and line), and the estate sees GitHub
only through its webhooks; EC2 bills a minute at least; boots come per image path; `--seeds`
and `--sensitivity boot`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estate.cli import main
from estate.config.loader import Estate, load_estate
from estate.config.pool import Pool
from estate.config.prices import PriceTable
from estate.sim.policies import POLICIES
from estate.sim.simulate import simulate
from estate.sim.simulator import Host, Simulation
from estate.sim.timings import (
    BOOT_S,
    BOOT_SWEEP_S,
    BUILDKITE_BOOT_S,
    BUILDKITE_TERMINATE_TAIL_S,
    CONTROL_PLANE_LATENCY_S,
    EC2_PENDING_S,
    PHILIPS_EPHEMERAL_TAIL_S,
    ami_path,
    image_path,
)
from estate.sim.workload import TraceJob
from tests.conftest import MINIMAL_POOL, write_pool

CPU = ("self-hosted", "linux", "x64", "cpu")
PRICES = PriceTable()
LAT = CONTROL_PLANE_LATENCY_S
BOOT_CPU = BOOT_S["cpu-stock"]  # MINIMAL_POOL's AMI, as the peers boot it
ESTATE_BOOT_CPU = BOOT_S["cpu-estate-image"]  # the estate boots its baked image
CAPPED = MINIMAL_POOL.replace("runners_maximum_count: 4", "runners_maximum_count: 1")
REUSED = "  enable_ephemeral_runners: false\n"
EPHEMERAL = "  enable_ephemeral_runners: true\n"


def pool_estate(tmp_path: Path, text: str = MINIMAL_POOL, extra: str = "") -> Estate:
    return load_estate([write_pool(tmp_path, "cpu", text + extra)])


def job(i: int, t: float, duration: float = 600.0, run: str | None = None, group: str | None = None) -> TraceJob:
    return TraceJob(f"j{i}", t, CPU, duration, run=run, group=group)


def run(estate: Estate, jobs: list[TraceJob], policy: str, **kwargs: Any) -> Simulation:
    return Simulation(estate, jobs, POLICIES[policy](), PRICES, **kwargs).run()


def wait(sim: Simulation, index: int = 0) -> float:
    started = sim.jobs[index].started_at
    assert started is not None
    return started - sim.jobs[index].queued_at


# ---- terraform-aws-github-runner ---------------------------------------------------------


def test_philips_ephemeral_retries_a_message_the_cap_refused_after_the_visibility_timeout(tmp_path: Path) -> None:
    sim = run(pool_estate(tmp_path, CAPPED), [job(0, 0.0), job(1, 0.0)], "philips-ephemeral")
    first, second = sim.hosts
    assert first.ended_at is not None
    # Refused at LAT, back every 30 s until the first host has gone: then a runner for it.
    assert second.launched_at >= first.ended_at
    assert (second.launched_at - LAT) % 30.0 == pytest.approx(0.0)
    assert second.launched_at - first.ended_at < 30.0
    assert sim.report()["jobs_unserved"] == 0  # not stranded


def test_philips_drops_a_capped_message_of_reused_runners_the_busy_runner_takes_the_job(tmp_path: Path) -> None:
    sim = run(pool_estate(tmp_path, CAPPED, REUSED), [job(0, 0.0), job(1, 0.0)], "philips")
    (host,) = sim.hosts
    assert sim.jobs[1].runs[0][0] == host.id
    assert sim.jobs[1].started_at == sim.jobs[0].finished_at


class FirstLaunchRefused(Simulation):
    """EC2 refuses the first launch call for capacity (no on-demand failover)."""

    refused = False

    def launch(self, pool_name: str, count: int, boot_s: float | None = None, market: str | None = None) -> list[Host]:
        if not self.refused:
            self.refused = True
            return []
        return super().launch(pool_name, count, boot_s, market)


@pytest.mark.parametrize(("policy", "retried_at"), [("philips", LAT + 30.0 + 30.0), ("philips-ephemeral", LAT + 30.0), ("estate", 60.0)])
def test_a_launch_refused_for_capacity_is_tried_again(tmp_path: Path, policy: str, retried_at: float) -> None:
    # Upstream: the message goes back to SQS and returns after the 30 s visibility timeout
    # (philips' pool also waits its 30 s webhook delay); ours: the next minute's reconcile.
    sim = FirstLaunchRefused(pool_estate(tmp_path), [job(0, 0.0)], POLICIES[policy](), PRICES).run()
    (host,) = sim.hosts
    assert host.launched_at == pytest.approx(retried_at)
    assert wait(sim) == pytest.approx(retried_at + (ESTATE_BOOT_CPU if policy == "estate" else BOOT_CPU))


@pytest.mark.parametrize(("extra", "hosts"), [(EPHEMERAL, 2), (EPHEMERAL + "  enable_job_queued_check: true\n", 1), (REUSED, 1)])
def test_philips_job_queued_check_defaults_off_for_ephemeral_runners(tmp_path: Path, extra: str, hosts: int) -> None:
    # The second run of the group cancels the first job within the 30 s webhook delay: only a
    # job-queued check stops the scale-up from launching a runner for it anyway.
    jobs = [job(0, 0.0, run="r1", group="pr-1"), job(1, 10.0, run="r2", group="pr-1")]
    sim = run(pool_estate(tmp_path, MINIMAL_POOL, extra + "  delay_webhook_event: 30\n"), jobs, "philips")
    assert sim.jobs[0].cancelled_at == 10.0
    assert len(sim.hosts) == hosts


def test_philips_ephemeral_instance_terminates_ten_seconds_after_its_job(tmp_path: Path) -> None:
    sim = run(pool_estate(tmp_path), [job(0, 0.0)], "philips-ephemeral")
    (host,) = sim.hosts
    assert wait(sim) == pytest.approx(LAT + BOOT_CPU)  # no webhook delay
    finished = sim.jobs[0].finished_at
    assert finished is not None
    assert host.leaving_at == finished
    assert host.ended_at == pytest.approx(finished + PHILIPS_EPHEMERAL_TAIL_S)


@pytest.mark.parametrize(("schedule", "every_s"), [("cron(*/15 * * * ? *)", 900), ("rate(20 minutes)", 1200)])
def test_philips_scale_down_runs_on_the_pools_schedule_expression(tmp_path: Path, schedule: str, every_s: int) -> None:
    extra = REUSED + f"  scale_down_schedule_expression: '{schedule}'\n"
    sim = run(pool_estate(tmp_path, MINIMAL_POOL, extra), [job(0, 0.0)], "philips")
    (host,) = sim.hosts
    finished = sim.jobs[0].finished_at
    assert host.ended_at is not None
    assert finished is not None
    assert host.ended_at % every_s == 0
    assert finished < host.ended_at <= finished + every_s


def test_philips_scale_down_lets_busy_runners_use_up_the_idle_count(tmp_path: Path) -> None:
    # idleCount 1 all day: the newest runner is busy, yet it counts as the one kept idle, so
    # the older idle runner goes at the first scale-down past its minimum running time.
    extra = REUSED + "  idle_config:\n    - {cron: '* * * * *', idleCount: 1}\n"
    sim = run(pool_estate(tmp_path, MINIMAL_POOL, extra), [job(0, 0.0), job(1, 100.0, 10000.0)], "philips")
    older, newer = sim.hosts
    assert older.ended_at == 900.0  # the first 5-minute cycle after its job (done ~750 s)
    assert newer.ended_at is not None
    assert newer.ended_at > 10000.0


# ---- Buildkite Elastic CI Stack -----------------------------------------------------------


def test_buildkite_polls_at_0_to_40_s_past_each_minute(tmp_path: Path) -> None:
    sim = run(pool_estate(tmp_path), [job(0, 45.0)], "buildkite")
    (host,) = sim.hosts
    assert host.launched_at == 60.0  # no poll at 50 s: the run ended at its 50 s timeout
    assert wait(sim) == pytest.approx(15.0 + BUILDKITE_BOOT_S)


def test_buildkite_scales_out_at_most_once_per_cooldown(tmp_path: Path) -> None:
    sim = run(pool_estate(tmp_path), [job(0, 5.0, 2000.0), job(1, 100.0)], "buildkite")
    first, second = sim.hosts
    assert first.launched_at == 10.0
    assert second.launched_at == 310.0  # ScaleOutCooldownPeriod 300 s after the first scale-out
    assert wait(sim, 1) == pytest.approx(310.0 - 100.0 + BUILDKITE_BOOT_S)


@pytest.mark.parametrize(("boot", "hosts"), [(400.0, 2), (BUILDKITE_BOOT_S, 1)])
def test_buildkite_boosts_a_group_whose_agents_are_missing(tmp_path: Path, boot: float, hosts: int) -> None:
    # InService after EC2_PENDING_S but no agent yet: below 50 % availability, so the scaler
    # asks for one instance more as soon as the cooldown allows, unless the agent came first.
    assert EC2_PENDING_S < 300.0 < 400.0
    sim = run(pool_estate(tmp_path), [job(0, 5.0, 2000.0)], "buildkite", boot_override_s=boot)
    assert len(sim.hosts) == hosts
    if hosts == 2:
        assert sim.hosts[1].launched_at == 310.0


QUEUE = """\
buildkite_queue:
  queue: cpu_queue
  instance_types: [m7i.2xlarge]
  min_size: 1
  max_size: 2
  scale_in_idle_seconds: 600
"""


def test_buildkite_min_size_instance_leaves_when_idle_and_is_replaced(tmp_path: Path) -> None:
    # At MinSize the instance still terminates itself when its agent idles out, without
    # decrementing the desired count: the group launches a replacement.
    estate = load_estate([write_pool(tmp_path, "cpu", MINIMAL_POOL), write_pool(tmp_path, "bk", QUEUE)])
    sim = run(estate, [job(0, 5000.0)], "buildkite")
    queue_hosts = [h for h in sim.hosts if h.pool == "buildkite:cpu_queue"]
    idle_out = BUILDKITE_BOOT_S + 600.0
    assert queue_hosts[0].leaving_at == idle_out
    assert queue_hosts[1].launched_at == idle_out + BUILDKITE_TERMINATE_TAIL_S


# ---- the estate sees GitHub through its webhooks -------------------------------------------


def test_estate_launches_for_a_job_cancelled_before_its_webhook_arrived(tmp_path: Path) -> None:
    # The job is cancelled 1 s after it is queued; the `queued` webhook reaches scale-up first.
    elsewhere = TraceJob("j1", 1.0, ("self-hosted", "gpu"), 600.0, run="r2", group="pr-1")
    sim = run(pool_estate(tmp_path), [job(0, 0.0, run="r1", group="pr-1"), elsewhere], "estate")
    assert sim.jobs[0].cancelled_at == 1.0
    (host,) = sim.hosts
    assert host.launched_at == pytest.approx(LAT)
    assert host.slots[0].jobs_run == 0


# ---- every policy ---------------------------------------------------------------------------


def test_ec2_bills_a_minute_at_least(tmp_path: Path) -> None:
    sim = run(pool_estate(tmp_path), [job(0, 0.0, 5.0)], "ideal")
    (host,) = sim.hosts
    assert host.ended_at == 5.0
    assert sim.host_cost(host, 5.0) == pytest.approx(60.0 / 3600 * host.price_per_hour)
    assert sim.report()["billed_hours"] == pytest.approx(60.0 / 3600, abs=0.01)


GPU_POOL = """\
matcherConfig:
  exactMatch: true
  labelMatchers:
    - [self-hosted, linux, x64, gpu]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [gpu]
  instance_types: [g5.2xlarge]
  runners_maximum_count: 4
"""
DLAMI = "  ami:\n    owners: ['898082745236']\n    filter:\n      name: ['Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.*']\n"
RUNNER_AMI = "  ami:\n    owners: [self]\n    filter:\n      name: ['github-runner-ubuntu-*']\n"


STOCK = "estate:\n  image: {source: ami}\n"  # a top-level key, after runner_config


@pytest.mark.parametrize(
    ("text", "extra", "ami", "estate_path"),
    [
        (MINIMAL_POOL, "", "cpu-stock", "cpu-estate-image"),
        (MINIMAL_POOL, RUNNER_AMI, "cpu-baked", "cpu-estate-image"),
        (MINIMAL_POOL, STOCK, "cpu-stock", "cpu-stock"),
        (GPU_POOL, DLAMI, "gpu-driver-in-image", "gpu-estate-image"),
        (GPU_POOL, "", "gpu-driver-at-boot", "gpu-estate-image"),
        (GPU_POOL, DLAMI + STOCK, "gpu-driver-in-image", "gpu-driver-in-image"),
    ],
)
def test_boot_comes_from_the_pools_image_path(tmp_path: Path, text: str, extra: str, ami: str, estate_path: str) -> None:
    # The estate boots its baked image unless the pool says `source: ami`; upstream boots the
    # pool file's AMI whatever `estate:` says.
    estate = pool_estate(tmp_path, text, extra)
    pool: Pool = estate.pools[0]
    assert (image_path(pool), ami_path(pool)) == (estate_path, ami)
    labels = ("self-hosted", "linux", "x64", "gpu") if "gpu" in text else CPU
    trace = [TraceJob("j0", 0.0, labels, 600.0)]
    assert wait(run(estate, trace, "estate")) == pytest.approx(LAT + BOOT_S[estate_path])
    assert wait(run(estate, trace, "philips-ephemeral")) == pytest.approx(LAT + BOOT_S[ami])


@pytest.mark.parametrize(("policy", "before_launch"), [("estate", LAT), ("philips-ephemeral", LAT), ("buildkite", 0.0)])
def test_a_boot_sweep_replaces_every_hosts_boot(tmp_path: Path, policy: str, before_launch: float) -> None:
    sim = run(pool_estate(tmp_path), [job(0, 60.0)], policy, boot_override_s=300.0)
    assert wait(sim) == pytest.approx(before_launch + 300.0)


# ---- --seeds and --sensitivity boot ---------------------------------------------------------


def test_cli_seeds_report_means_and_ranges_under_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--workload", "sharded", "--days", "0.05", "--seeds", "3", "--policy", "estate", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 1, 2]
    assert set(out["runs"]) == {"0", "1", "2"}
    report = out["policies"]["estate"]
    assert {"jobs_served", "jobs_unserved", "wait_s", "cost_usd", "instance_hours", "idle_gpu_hours", "utilisation"} <= set(report)
    assert set(report["wait_s"]) >= {"p50", "p95", "p99", "max"}
    costs = [out["runs"][s]["estate"]["cost_usd"] for s in ("0", "1", "2")]
    assert report["range"]["cost_usd"] == [min(costs), max(costs)]
    assert report["cost_usd"] == pytest.approx(sum(costs) / 3, abs=0.01)


def test_cli_sensitivity_boot_prints_one_block_per_boot(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--workload", "sharded", "--days", "0.05", "--sensitivity", "boot", "--policy", "estate"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    boots = [line.split()[0] for line in lines[3:]]
    assert boots == [f"{b:g}" for b in BOOT_SWEEP_S]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["sensitivity"]["boot_s"], key=float) == [f"{b:g}" for b in BOOT_SWEEP_S]


def test_simulate_passes_the_boot_sweep_through(tmp_path: Path) -> None:
    report, _ = simulate(pool_estate(tmp_path), [job(0, 0.0)], ["estate"], PRICES, boot_override_s=75.0)
    assert report["policies"]["estate"]["wait_s"]["p50"] == pytest.approx(LAT + 75.0, abs=0.1)
