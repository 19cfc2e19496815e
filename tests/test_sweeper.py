"""Nothing outlives its purpose, part two (issue 21.3): the sweeper finds what is ours from tags
and names — never from the ledger — and removes what has no live owner after a grace period.
Pure planning first, then on loopback with the ledger losing items, hosts dying at boot and
pools taken out of the config."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from estate.local.plane import MOTO_AMI, LocalPlane
from lambda_src.aws.ec2_fleet import tag_list
from lambda_src.core.fleet_state import GithubRunner, runner_name
from lambda_src.core.settings import PoolSettings
from lambda_src.core.sweeper import (
    RETIRED_POOL_MAX_S,
    SWEEP_GRACE_S,
    Leftovers,
    RunnerConfig,
    TaggedInstance,
    TaggedInterface,
    TaggedVolume,
    plan_sweep,
    runner_owner,
)
from lambda_src.core.tags import runner_tags
from tests.conftest import INSTANTS, WORKING_HOURS, served_example_plane

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL = "gpu-t4-spot"
NOW = 1_800_000_000.0
PREFIX = "/runner-estate/prod/jit/"
CPU = PoolSettings("cpu", "spot", ("m7i.large",), ("self-hosted",), "Default", 4, name_prefix="ci-", max_lifetime_s=7200)
NODES = PoolSettings("h100", "capacity-block", ("p5.48xlarge",), ("self-hosted",), "gpu", 2)
POOLS = {"cpu": CPU, "h100": NODES}
A, B, C = "i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2", "i-0ccccccccccccccc3"


def plan(found: Leftovers, first_seen: dict[str, float] | None = None, now: float = NOW) -> Any:
    return plan_sweep(POOLS, "prod", PREFIX, found, first_seen or {}, now)


def test_runners_are_ours_by_pool_name_prefix_reuse_or_slot_and_only_then() -> None:
    assert runner_owner(POOLS, [], "prod", f"ci-prod-cpu-{A}") == ("cpu", A)
    assert runner_owner(POOLS, [], "prod", f"ci-prod-cpu-{A}-r2") == ("cpu", A)
    assert runner_owner(POOLS, [], "prod", f"prod-h100-{A}-s3") == ("h100", A)
    assert runner_owner(POOLS, ["old"], "prod", f"anything-prod-old-{A}") == ("old", A)
    for foreign in (f"ci-staging-cpu-{A}", f"prod-old-{A}", "laptop", f"other-prod-cpu-{A}"):
        assert runner_owner(POOLS, [], "prod", foreign) is None, foreign


def test_configs_and_runners_of_dead_hosts_go_after_the_grace_and_live_ones_stay() -> None:
    found = Leftovers(
        instances=(TaggedInstance(A, "cpu", "running", NOW - 600), TaggedInstance(B, "cpu", "terminated", NOW - 900)),
        configs=(
            RunnerConfig(f"{PREFIX}{A}", NOW - 3600),
            RunnerConfig(f"{PREFIX}{B}", NOW - 3600),
            RunnerConfig(f"{PREFIX}{C}/s1", NOW - 60),
        ),
        runners=(
            GithubRunner(1, f"ci-prod-cpu-{A}", True, False),
            GithubRunner(2, f"ci-prod-cpu-{B}", False, False),
            GithubRunner(3, f"ci-prod-cpu-{C}", False, True),  # busy: GitHub has not let go of its job yet
        ),
    )
    first = plan(found)
    assert [r.id for r in first.of("config")] == [f"{PREFIX}{B}"]  # C's config is younger than the grace
    assert first.of("runner") == []
    assert first.watch == ["runner:2"]
    later = plan(found, {"runner:2": NOW - SWEEP_GRACE_S}, NOW)
    assert [r.runner_id for r in later.of("runner")] == [2]
    assert plan(Leftovers(), {"runner:2": NOW - 60}).forget == ["runner:2"]  # gone: forgotten


def test_volumes_and_interfaces_nobody_holds_go_unless_the_pool_keeps_volumes() -> None:
    keeper = PoolSettings("keep", "on-demand", ("m7i.large",), ("self-hosted",), "Default", 2, keeps_volumes=True)
    found = Leftovers(
        volumes=(
            TaggedVolume("vol-1", "cpu", "available", NOW - SWEEP_GRACE_S),
            TaggedVolume("vol-2", "cpu", "available", NOW - 60),
            TaggedVolume("vol-3", "cpu", "in-use", NOW - 86400),
            TaggedVolume("vol-4", "keep", "available", NOW - 86400),
            TaggedVolume("vol-5", "gone-pool", "available", NOW - 86400),
        ),
        interfaces=(TaggedInterface("eni-1", "cpu", "available"), TaggedInterface("eni-2", "cpu", "in-use")),
    )
    swept = plan_sweep({**POOLS, "keep": keeper}, "prod", PREFIX, found, {"interface:eni-1": NOW - SWEEP_GRACE_S}, NOW)
    assert [r.id for r in swept.of("volume")] == ["vol-1", "vol-5"]
    assert [r.id for r in swept.of("interface")] == ["eni-1"]


def test_hosts_of_a_removed_pool_retire_after_their_job_and_nodes_of_blocks_never() -> None:
    old = NOW - SWEEP_GRACE_S
    found = Leftovers(
        instances=(
            TaggedInstance(A, "gone", "running", old),
            TaggedInstance(B, "gone", "running", old),
            TaggedInstance(C, "h100", "running", NOW - 30 * 86400),
        ),
        runners=(GithubRunner(1, f"x-prod-gone-{A}", True, False), GithubRunner(2, f"x-prod-gone-{B}", True, True)),
    )
    (retired,) = plan(found).of("instance")
    assert (retired.id, retired.runner_id, retired.force) == (A, 1, False)
    late = plan(found, now=old + RETIRED_POOL_MAX_S)
    assert [(r.id, r.force) for r in late.of("instance")] == [(A, False), (B, True)]


def test_a_host_past_its_lifetime_and_the_grace_is_ended_whatever_the_ledger_says() -> None:
    found = Leftovers(instances=(TaggedInstance(A, "cpu", "running", NOW - 7200 - SWEEP_GRACE_S),))
    assert [(r.id, r.force) for r in plan(found).of("instance")] == [(A, True)]
    assert plan(Leftovers(instances=(TaggedInstance(A, "cpu", "running", NOW - 7200),))).of("instance") == []


# ---- on loopback ---------------------------------------------------------------------------


@pytest.fixture(params=sorted(INSTANTS))
def local(request: pytest.FixtureRequest, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    with served_example_plane(moto_url, monkeypatch, INSTANTS[request.param]) as plane:
        yield plane


@pytest.fixture
def one(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    with served_example_plane(moto_url, monkeypatch, WORKING_HOURS) as plane:
        yield plane


def parameter_names(local: LocalPlane) -> list[str]:
    found = local.ssm.call(
        "DescribeParameters", {"ParameterFilters": [{"Key": "Path", "Option": "Recursive", "Values": ["/runner-estate/local/jit"]}]}
    )
    return sorted(p["Name"] for p in found["Parameters"])


def lose_ledger_item(local: LocalPlane, instance_id: str) -> None:
    """The ledger forgets a host (a lost write, a restore from an older backup)."""
    local.plane.ledger.table.update_item(Key={"pk": f"instance#{instance_id}"}, UpdateExpression="REMOVE open_key")


def launch_tagged(local: LocalPlane, pool: str, environment: str = "local") -> str:
    """An instance carrying our tags, as if launched by an earlier config (EC2 RunInstances)."""
    made = local.ec2.run_instances(
        ImageId=MOTO_AMI,
        MinCount=1,
        MaxCount=1,
        InstanceType="m7i.large",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(runner_tags(environment, pool, ["self-hosted"]))}],
    )
    return str(made["Instances"][0]["InstanceId"])


def test_a_host_that_died_at_boot_with_its_ledger_item_lost_still_ends_in_cleanup(local: LocalPlane) -> None:
    job = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    lose_ledger_item(local, iid)
    local.power_off(iid)  # it never read its runner config
    local.github.finish_job(job.id)  # cancelled meanwhile
    local.clock.advance(15 * 60)
    local.plane.reconcile()
    local.plane.scale_down()
    config = f"/runner-estate/local/jit/{iid}"
    assert config in parameter_names(local)  # nothing else ever deletes it

    local.clock.advance(SWEEP_GRACE_S)
    assert local.sweeper.run().summary()["configs_deleted"] == 1
    assert config not in parameter_names(local)


def test_a_pool_removed_from_config_is_retired_idle_now_busy_after_its_job(local: LocalPlane) -> None:
    idle, busy = launch_tagged(local, "gpu-retired"), launch_tagged(local, "gpu-retired")
    idle_runner = local.github.add_runner(f"old-local-gpu-retired-{idle}")
    local.github.add_runner(f"old-local-gpu-retired-{busy}", busy=True)
    foreign = launch_tagged(local, "gpu-retired", environment="staging")
    local.clock.advance(SWEEP_GRACE_S)
    report = local.sweeper.run()
    assert report.summary()["retired_pool_hosts"] == 1
    assert idle not in local.running_instances()
    assert {busy, foreign} <= set(local.running_instances())
    assert idle_runner.id not in local.github.runners

    local.clock.advance(RETIRED_POOL_MAX_S)
    local.sweeper.run()
    assert busy not in local.running_instances()
    assert foreign in local.running_instances()  # another environment's: never ours to end


def test_a_host_past_its_lifetime_is_ended_by_the_sweeper_when_the_ledger_lost_it(one: LocalPlane) -> None:
    job = one.github.queue_job(T4)
    one.pump()
    (iid,) = one.running_instances(POOL)
    one.github.start_job(job.id, one.boot(iid))
    lose_ledger_item(one, iid)  # so scale-down does not see it either
    one.clock.advance(one.settings.pools[POOL].max_lifetime_s + SWEEP_GRACE_S)
    assert one.sweeper.run().summary()["overdue_hosts"] == 1
    assert one.running_instances(POOL) == []


def test_volumes_and_interfaces_left_behind_are_deleted_and_others_kept(one: LocalPlane) -> None:
    def volume(environment: str) -> str:
        tags = [{"ResourceType": "volume", "Tags": tag_list(runner_tags(environment, POOL, ["self-hosted"]))}]
        return str(one.ec2.create_volume(AvailabilityZone="us-east-1a", Size=8, TagSpecifications=tags)["VolumeId"])

    def interface(environment: str) -> str:
        tags = [{"ResourceType": "network-interface", "Tags": tag_list(runner_tags(environment, POOL, ["self-hosted"]))}]
        subnet = one.settings.pools[POOL].subnet_ids[0]
        return str(one.ec2.create_network_interface(SubnetId=subnet, TagSpecifications=tags)["NetworkInterface"]["NetworkInterfaceId"])

    ours_vol, theirs_vol, ours_nic, theirs_nic = volume("local"), volume("staging"), interface("local"), interface("staging")
    first = one.sweeper.run()
    assert first.summary()["volumes_deleted"] == first.summary()["interfaces_deleted"] == 0  # within the grace
    one.clock.advance(SWEEP_GRACE_S)
    report = one.sweeper.run()
    assert report.summary()["volumes_deleted"] == 1
    assert report.summary()["interfaces_deleted"] == 1
    volumes = {v["VolumeId"] for v in one.ec2.describe_volumes()["Volumes"]}
    assert theirs_vol in volumes
    assert ours_vol not in volumes
    nics = {n["NetworkInterfaceId"] for n in one.ec2.describe_network_interfaces()["NetworkInterfaces"]}
    assert theirs_nic in nics
    assert ours_nic not in nics


def test_what_is_in_use_is_never_swept(one: LocalPlane) -> None:
    job = one.github.queue_job(T4)
    one.github.queue_job(T4)
    one.pump()
    first, waiting = one.running_instances(POOL)
    name = one.boot(first)
    one.github.start_job(job.id, name)
    node = launch_tagged(one, "gpu-h100-cb")  # a capacity-block node: the block manager's
    one.clock.advance(SWEEP_GRACE_S + 1)
    report = one.sweeper.run()
    assert report.removed == []
    assert {first, waiting, node} <= set(one.running_instances())
    assert parameter_names(one) == [f"/runner-estate/local/jit/{waiting}"]
    assert name in {r.name for r in one.github.runners.values()}
    assert runner_name(one.settings.pools[POOL].name_prefix, "local", POOL, waiting) in {r.name for r in one.github.runners.values()}
