"""Nothing outlives its purpose, part one (issue 21.3): a host lives at most its pool's maximum
lifetime — by default just over the longest its jobs may take — and is then drained, terminated
and counted, whatever its job is doing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.derive.control_config import pool_settings
from estate.local.plane import LocalPlane
from lambda_src.core.fleet_state import GithubRunner, Instance, runner_name
from lambda_src.core.planner import may_take_next_runner, plan_launches, plan_scale_down
from lambda_src.core.settings import PoolSettings
from tests.conftest import EXAMPLE_CONFIGS, INSTANTS, MINIMAL_POOL, served_example_plane, write_pool

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL = "gpu-t4-spot"


# ---- the setting --------------------------------------------------------------------------


def lifetime(tmp_path: Path, extra: str = "") -> PoolSettings:
    write_pool(tmp_path, "cpu", MINIMAL_POOL + extra)
    (pool,) = load_estate([tmp_path]).pools
    return pool_settings(pool)


def test_the_default_is_just_over_the_longest_the_pools_jobs_may_take(tmp_path: Path) -> None:
    # boot 5 min (upstream's default) + one job at GitHub's default timeout (360) + 15 min margin
    assert lifetime(tmp_path).max_lifetime_s == (5 + 360 + 15) * 60


def test_a_reusing_pool_counts_every_job_its_host_may_run(tmp_path: Path) -> None:
    assert lifetime(tmp_path, "estate:\n  reuse_hosts: {max_jobs: 3}\n").max_lifetime_s == (5 + 3 * 360 + 15) * 60


def test_the_key_sets_it(tmp_path: Path) -> None:
    assert lifetime(tmp_path, "estate:\n  max_lifetime_minutes: 90\n").max_lifetime_s == 90 * 60


def test_a_lifetime_no_job_fits_in_or_on_a_capacity_block_pool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no longer than the boot time"):
        lifetime(tmp_path, "  runner_boot_time_in_minutes: 20\nestate:\n  max_lifetime_minutes: 20\n")
    block = tmp_path / "block"
    block.mkdir()
    text = (EXAMPLE_CONFIGS / "gpu-h100-cb.yaml").read_text()
    write_pool(block, "gpu-h100-cb", text.replace("estate:\n", "estate:\n  max_lifetime_minutes: 600\n", 1))
    with pytest.raises(ConfigError, match="live for their block"):
        load_estate([block])


def test_example_pools_have_a_lifetime_and_blocks_none() -> None:
    for pool in load_estate([EXAMPLE_CONFIGS]).pools:
        settings = pool_settings(pool)
        assert (settings.max_lifetime_s == 0) is (pool.capacity_type == "capacity-block"), pool.name


# ---- the planners -------------------------------------------------------------------------

NOW = 1_800_000_000.0
SHORT = PoolSettings("p", "spot", ("m7i.large",), ("self-hosted", "linux", "x64"), "Default", 10, max_lifetime_s=3600, job_timeout_s=1800)


def host(age_s: float, **fields: object) -> Instance:
    return Instance("i-0123456789abcdef0", "p", NOW - age_s, **fields)  # type: ignore[arg-type]


def runner(busy: bool) -> GithubRunner:
    return GithubRunner(7, runner_name("", "prod", "p", "i-0123456789abcdef0"), True, busy)


def test_a_host_past_its_lifetime_is_retired_even_busy_and_marked_overdue() -> None:
    plan = plan_scale_down({"p": SHORT}, "prod", [host(3600, registered_at=NOW - 3500, job_id=9)], [runner(busy=True)], [], NOW)
    ((retired,),) = [plan.retire]
    assert (retired.instance_id, retired.runner_id, retired.overdue) == ("i-0123456789abcdef0", 7, True)
    young = plan_scale_down({"p": SHORT}, "prod", [host(3599, registered_at=NOW - 3500, job_id=9)], [runner(busy=True)], [], NOW)
    assert young.retire == []


def test_a_host_near_its_lifetime_takes_no_next_job_and_is_no_supply() -> None:
    reusing = PoolSettings(**{**SHORT.__dict__, "max_jobs_per_host": 5})
    spent = host(1000, finished_at=NOW - 10, jobs_done=1)
    assert may_take_next_runner(reusing, spent, NOW)
    assert not may_take_next_runner(reusing, host(1801, finished_at=NOW - 10, jobs_done=1), NOW)  # a 30-min job would outlive it
    (order,) = plan_launches({"p": SHORT}, [], [host(3600, registered_at=NOW - 3000)], NOW)
    assert order.supply == 0


# ---- on loopback --------------------------------------------------------------------------


@pytest.fixture(params=sorted(INSTANTS))
def local(request: pytest.FixtureRequest, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    with served_example_plane(moto_url, monkeypatch, INSTANTS[request.param]) as plane:
        yield plane


def test_a_job_that_runs_past_the_hosts_lifetime_ends_with_its_host_and_is_counted(local: LocalPlane) -> None:
    job = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    name = local.boot(iid)
    local.github.start_job(job.id, name)
    limit = local.settings.pools[POOL].max_lifetime_s
    local.clock.advance(limit - 60)
    assert local.plane.scale_down().summary()["lifetime_exceeded"] == 0
    assert local.running_instances(POOL) == [iid]  # busy and within its lifetime: kept

    local.clock.advance(60)
    report = local.plane.scale_down()
    assert report.summary()["lifetime_exceeded"] == 1
    assert report.overdue == [iid]
    assert local.running_instances(POOL) == []
    assert local.plane.ledger.live_instances(POOL) == []
