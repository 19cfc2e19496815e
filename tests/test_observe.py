"""The estate's counts and why a job waits (issue 22.4), and what a job costs (22.3): pure
functions over plain data. The wait reasons are the planners' own answers read back."""

from __future__ import annotations

from typing import Any

import pytest

from lambda_src.core.costs import block_spend_rate, host_job_cost, slot_job_cost, slot_share, spend_rate
from lambda_src.core.fleet_state import QUEUED, GithubRunner, Instance, Job
from lambda_src.core.observe import BOOTING, BUSY, IDLE, host_state, oldest_waits, pool_views
from lambda_src.core.routing import Admission, PoolRoute, RoutingTable, normalise
from lambda_src.core.settings import ControlPlaneSettings, PoolSettings

NOW = 1_800_000_000.0
CPU = ("self-hosted", "linux", "x64")
GPU = (*CPU, "gpu", "h100")


def route(name: str, labels: tuple[str, ...], kind: str, admission: Admission | None = None) -> PoolRoute:
    found = normalise(labels)
    return PoolRoute(name, True, 1, kind, (found,), (found,), 4, 1.0, admission)


POOLS = {
    "cpu": PoolSettings("cpu", "spot", ("m7i.large",), CPU, "Default", 2, hourly_usd=0.04),
    "t4": PoolSettings("t4", "on-demand", ("g4dn.xlarge",), (*CPU, "gpu", "t4"), "gpu", 4, hourly_usd=0.5, host_gpus=1),
    "h100": PoolSettings(
        "h100", "capacity-block", ("p5.48xlarge",), GPU, "gpu", 2, hourly_usd=31.464, gpus_per_node=8, slot_gpus=(4, 1, 1, 1, 1)
    ),
}
TABLE = RoutingTable(
    (
        route("cpu", CPU, "spot"),
        route("t4", (*CPU, "gpu", "t4"), "on-demand", Admission("gpu", frozenset({"org/gpu-app"}))),
        route("h100", GPU, "capacity-block", Admission("gpu", frozenset({"org/gpu-app"}))),
    )
)
SETTINGS = ControlPlaneSettings("prod", "us-east-1", "org", 1, "https://api.github.com", "t", "/k", "/h", "/jit/", POOLS, TABLE)


def job(i: int, pool: str, labels: tuple[str, ...], repo: str = "org/app", age: float = 60.0) -> Job:
    return Job(i, pool, QUEUED, NOW - age, repo, labels)


def host(iid: str, pool: str, **fields: Any) -> Instance:
    return Instance(iid, pool, NOW - 300, runner_name=f"prod-{pool}-{iid}", jit_at=NOW - 290, **fields)


# ---- costs ----------------------------------------------------------------------------------


def test_a_job_on_its_own_host_pays_from_its_runners_start() -> None:
    cost = host_job_cost(POOLS["t4"], NOW - 3600, NOW)
    assert (cost.usd, cost.host_s) == (0.5, 3600.0)
    reused = Instance("i-0a", "t4", NOW - 7200, jit_at=NOW - 600, generation=2)
    assert host_job_cost(POOLS["t4"], reused.runner_since, NOW).host_s == 600.0  # since its last config, not its launch


def test_a_slot_pays_its_share_of_the_node_while_its_job_ran() -> None:
    pool = POOLS["h100"]
    assert (slot_share(pool, 0), slot_share(pool, 4), slot_share(pool, 5)) == (0.5, 0.125, 0.0)
    cost = slot_job_cost(pool, 1, NOW - 3600, NOW)
    assert cost.host_s == 450.0  # an eighth of the node for an hour
    assert cost.usd == pytest.approx(31.464 / 8)


def test_spend_rate_counts_live_hosts_and_whole_blocks() -> None:
    hosts = [host("i-01", "cpu"), host("i-02", "t4"), host("i-03", "h100", block="cr-1")]
    assert spend_rate(POOLS, hosts) == 0.54  # a block's node is paid by the block
    assert block_spend_rate(POOLS["h100"], 2) == 62.928


# ---- hosts by state and each pool's counts ---------------------------------------------------


def test_a_hosts_state_from_the_ledger_or_githubs_listing() -> None:
    booting, registered = host("i-01", "cpu"), host("i-02", "cpu", registered_at=NOW - 100)
    assert (host_state(booting), host_state(registered), host_state(host("i-03", "cpu", job_id=7))) == (BOOTING, IDLE, BUSY)
    runners = {"prod-cpu-i-01": GithubRunner(1, "prod-cpu-i-01", True, True)}
    assert host_state(booting, runners) == BUSY  # GitHub's word counts: the busy flag came before the webhook


def test_pool_views_count_queued_jobs_hosts_and_the_cap() -> None:
    jobs = [job(i, "cpu", CPU, age=60.0 * i) for i in range(1, 5)]
    hosts = [host("i-01", "cpu", registered_at=NOW - 200), host("i-02", "cpu", job_id=99), host("i-03", "t4")]
    views = pool_views(POOLS, jobs, hosts, NOW)
    cpu = views["cpu"]
    assert (cpu.queued, cpu.oldest_wait_s, cpu.idle, cpu.busy, cpu.booting) == (4, 240.0, 1, 1, 0)
    assert cpu.at_cap  # 2 instances, both live: the 4 jobs wait on the cap
    assert cpu.reason == "capped at 2 instances"
    assert (views["t4"].booting, views["t4"].idle_gpus, views["t4"].at_cap) == (1, 1, False)
    assert views["cpu"].metrics()["at_cap"] == 1.0


# ---- why the oldest job waits ----------------------------------------------------------------


H100_JOB = [Job(1, "h100", QUEUED, NOW - 60, "org/gpu-app", GPU)]


def reports(phase: str, busy: int = 0, idle: int = 0, faulty: int = 0, nodes: int = 1, capacity: int = 1) -> dict[str, Any]:
    block = {"phase": phase, "hours_left": 5.0, "nodes": nodes, "capacity": capacity}
    return {"h100": {"cr-1": {**block, "busy_slots": busy, "idle_slots": idle, "faulty_slots": faulty}}}


@pytest.mark.parametrize(
    ("jobs", "hosts", "blocks", "failures", "pool", "why"),
    [
        ([job(1, "cpu", CPU)], [], {}, {}, "cpu", "launch pending: 1 host(s) wanted"),
        ([job(1, "cpu", CPU)], [], {}, {"cpu": "InsufficientInstanceCapacity"}, "cpu", "no capacity: the last launch failed: Insuff"),
        ([job(i, "cpu", CPU) for i in range(3)], [host("i-1", "cpu"), host("i-2", "cpu")], {}, {}, "cpu", "capped at 2 instances (2 live)"),
        ([job(1, "cpu", CPU)], [host("i-1", "cpu")], {}, {}, "cpu", "waiting for 1 booting host(s) of the pool"),
        ([job(1, "cpu", CPU)], [host("i-1", "cpu", registered_at=NOW)], {}, {}, "cpu", "1 idle runner(s) of the pool: GitHub"),
        ([job(1, "t4", (*CPU, "gpu", "t4"), repo="org/other")], [], {}, {}, "t4", "no pool admits its repository org/other"),
        ([job(1, "cpu", (*CPU, "arm64-only"))], [], {}, {}, "cpu", "no pool serves its labels"),
        (H100_JOB, [], {}, {}, "h100", "its capacity blocks were not read"),
        (H100_JOB, [], {"h100": {}}, {}, "h100", "no capacity: the pool holds no capacity block"),
        (H100_JOB, [], reports("waiting"), {}, "h100", "block not active: cr-1 waiting (5.0 h left)"),
        (H100_JOB, [], reports("draining", busy=5), {}, "h100", "block not active: cr-1 draining"),
        (H100_JOB, [], reports("accepting", busy=4, faulty=1), {}, "h100", "no capacity: every slot is busy"),
        (H100_JOB, [], reports("accepting", busy=5, capacity=2), {}, "h100", "nodes launching"),
        (H100_JOB, [], reports("accepting", busy=3, idle=2), {}, "h100", "2 free slot(s)"),
    ],
)  # fmt: skip
def test_why_the_oldest_job_waits(
    jobs: list[Job], hosts: list[Instance], blocks: dict[str, Any], failures: dict[str, str], pool: str, why: str
) -> None:
    waits = oldest_waits(SETTINGS, jobs, hosts, NOW, blocks=blocks, failures=failures)
    assert waits[pool].reason.startswith(why), waits[pool].reason
    assert waits[pool].job == min(jobs, key=lambda j: j.queued_at)


def test_a_job_its_pool_may_no_longer_take_names_where_it_goes() -> None:
    moved = job(1, "t4", CPU)  # found by labels alone: the CPU pool serves it, t4's route does not
    waits = oldest_waits(SETTINGS, [moved], [], NOW)
    assert waits["t4"].reason.startswith("pool t4 may not take it")
    assert waits["t4"].reason.endswith("the reconciler moves it to cpu")
