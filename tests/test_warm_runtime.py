"""Stopped warm pools at run time (issue 20.2): the ledger's memory of them and of each pool's
launches, the reconciler that keeps them, and the launch path that starts them, on loopback
(moto_server models stop and start; a guest's power-off is played by LocalPlane.power_off with
the shutdown behaviour EC2 would apply; GitHub is our fake)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from estate.local.plane import MOTO_AMI, LocalPlane
from lambda_src.aws.ec2_fleet import Ec2Fleet
from lambda_src.aws.ledger import BOOTING, READY, STARTED, STARTING
from lambda_src.core.fleet_state import runner_name
from lambda_src.core.settings import PoolSettings
from lambda_src.core.tags import WARM, WARM_CONFIG
from lambda_src.core.warm_pools import (
    ADAPTIVE,
    DEMAND_BUCKET_S,
    OFF,
    PREPARE_GRACE_S,
    SCHEDULED,
    WEEK_S,
    WarmSettings,
    WarmWindow,
    demand_bucket,
)
from tests.conftest import WORKING_HOURS, served_example_plane


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    with served_example_plane(moto_url, monkeypatch, WORKING_HOURS) as plane:
        yield plane


def test_launches_are_counted_per_pool_and_bucket_and_read_back(local: LocalPlane) -> None:
    ledger, now = local.plane.ledger, local.clock()
    ledger.count_launches("cpu-x64-spot", demand_bucket(now), 2, weeks=4)
    ledger.count_launches("cpu-x64-spot", demand_bucket(now), 1, weeks=4)
    ledger.count_launches("cpu-x64-spot", demand_bucket(now + DEMAND_BUCKET_S), 5, weeks=4)
    ledger.count_launches("gpu-t4-spot", demand_bucket(now), 7, weeks=4)
    ledger.count_launches("cpu-x64-spot", demand_bucket(now), 0, weeks=4)  # nothing written
    buckets = [demand_bucket(now) + i for i in range(-1, 150)]  # more than one batch of keys
    assert ledger.launch_history("cpu-x64-spot", buckets) == {demand_bucket(now): 3, demand_bucket(now) + 1: 5}
    item = ledger.table.get_item(Key={"pk": f"launches#cpu-x64-spot#{demand_bucket(now)}"})["Item"]
    assert item["expires_at"] >= now + 4 * WEEK_S  # kept past the weeks the pool is sized over


def test_a_warm_record_moves_forward_and_a_started_one_never_returns(local: LocalPlane) -> None:
    ledger, now = local.plane.ledger, local.clock()
    assert ledger.add_warm("i-0abc", "cpu-x64-spot", now, "ami-1", keep_s=3600)
    assert not ledger.add_warm("i-0abc", "cpu-x64-spot", now, "ami-1", keep_s=3600)  # once
    assert [(w.id, w.state, w.image_id) for w in ledger.warm_instances("cpu-x64-spot")] == [("i-0abc", BOOTING, "ami-1")]
    assert not ledger.warm_instances("cpu-x64-spot")[0].warm().ready
    assert not ledger.warm_moved("i-0abc", STARTING, (READY,))  # still booting: not startable
    assert ledger.warm_moved("i-0abc", READY, (BOOTING,))
    assert ledger.warm_instances()[0].warm().ready
    assert ledger.warm_moved("i-0abc", STARTING, (READY,))
    assert not ledger.warm_moved("i-0abc", STARTING, (READY,))  # one invocation starts it
    assert ledger.warm_moved("i-0abc", STARTED, (STARTING,))
    assert ledger.warm_instances() == []  # closed: an ordinary host from here on
    assert not ledger.warm_moved("i-0abc", READY, (BOOTING, STARTING))
    record = ledger.warm_record("i-0abc")
    assert record is not None
    assert record.state == STARTED
    assert ledger.live_instances() == []  # a warm record is never a host with a job


# ---- the reconciler and the launch path, end to end on loopback ---------------------------

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL = "gpu-t4-spot"
IMAGE_PARAMETER = "/local/images/gpu-t4"


def warm_pool(local: LocalPlane, image: str = MOTO_AMI, **warm: Any) -> PoolSettings:
    """Give POOL a warm pool (by default two instances, all the time) and an image parameter."""
    local.ssm.call("PutParameter", {"Name": IMAGE_PARAMETER, "Value": image, "Type": "String", "Overwrite": True})
    chosen = {"mode": SCHEDULED, "maximum": 2, "windows": (WarmWindow("* * * * *", "UTC", 2),), **warm}
    pool = dataclasses.replace(local.settings.pools[POOL], warm=WarmSettings(**chosen), image_parameter=IMAGE_PARAMETER)
    local.settings = dataclasses.replace(local.settings, pools={**local.settings.pools, POOL: pool})
    local.plane.settings = local.settings
    local.plane.__dict__.pop("scaled_pools", None)  # a cached view of the settings
    return pool


def state(local: LocalPlane, iid: str) -> str:
    found = local.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return str(found["State"]["Name"])


def config_of(local: LocalPlane, iid: str) -> str:
    return str(
        local.ssm.call("GetParameter", {"Name": local.settings.jit_parameter_prefix + iid, "WithDecryption": True})["Parameter"]["Value"]
    )


def prepared(local: LocalPlane, ids: list[str]) -> None:
    """Each warm instance's first boot: read (and delete) the warm marker, power off into `stopped`."""
    for iid in ids:
        assert config_of(local, iid) == WARM_CONFIG
        local.ssm.call("DeleteParameter", {"Name": local.settings.jit_parameter_prefix + iid})
    for iid in ids:
        local.power_off(iid)


def ready_pool(local: LocalPlane) -> list[str]:
    warm_pool(local)
    launched = local.plane.reconcile().warm_launched
    assert len(launched) == 2
    prepared(local, launched)
    local.clock.advance(60)
    local.plane.reconcile()
    assert sorted(r.id for r in local.plane.ledger.warm_instances(POOL) if r.state == READY) == sorted(launched)
    return sorted(launched)  # launched together: started in id order (core/warm_pools.pick_warm)


def test_warm_instances_launch_with_stop_behaviour_and_are_never_taken_for_hosts(local: LocalPlane) -> None:
    warm_pool(local)
    report = local.plane.reconcile()
    assert len(report.warm_launched) == 2
    for iid in report.warm_launched:
        attribute = local.ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
        assert attribute["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
        tags = {t["Key"]: t["Value"] for t in local.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]}
        assert tags[WARM] == "true"
        assert tags["runner-estate:pool"] == POOL
        assert config_of(local, iid) == WARM_CONFIG  # what it reads instead of a config: prepare, power off
    local.clock.advance(60)
    again = local.plane.reconcile()  # still booting: neither adopted as a host nor undone, and not launched twice
    assert (again.adopted, again.undone, again.warm_launched) == ([], [], [])
    assert local.plane.ledger.live_instances(POOL) == []
    assert [r for r in local.plane.scale_down().retired if r["pool"] == POOL] == []


def test_a_power_off_stops_a_warm_instance_and_ends_a_fresh_host(local: LocalPlane) -> None:
    warm_pool(local)
    warm = local.plane.reconcile().warm_launched
    local.github.queue_job(["self-hosted", "linux", "x64"])
    local.pump()
    report = local.plane.last_report
    assert report is not None
    fresh = [iid for iids in report.launched.values() for iid in iids]
    assert len(fresh) == 1
    assert fresh[0] not in warm
    for iid in [*warm, *fresh]:
        local.power_off(iid)
    assert [state(local, iid) for iid in warm] == ["stopped"] * len(warm)
    assert {state(local, iid) for iid in fresh} <= {"shutting-down", "terminated"}


def test_a_warm_instance_that_never_powers_itself_off_is_retired_and_replaced(local: LocalPlane) -> None:
    pool = warm_pool(local)
    first = local.plane.reconcile().warm_launched
    local.clock.advance(pool.boot_timeout_s)
    assert local.plane.reconcile().warm_retired == []  # still within its boot time and preparation
    local.clock.advance(PREPARE_GRACE_S + 60)
    report = local.plane.reconcile()
    assert sorted(report.warm_retired) == sorted(first)
    assert all(state(local, iid) in {"shutting-down", "terminated"} for iid in first)
    assert len(report.warm_launched) == 2


def test_a_queued_job_starts_a_ready_warm_instance_which_gets_its_runner_config(local: LocalPlane) -> None:
    oldest, *_ = ready_pool(local)
    job = local.github.queue_job(T4)
    local.pump()
    report = local.plane.last_report
    assert report is not None
    assert report.warm_started == [oldest]
    assert report.launched[POOL] == [oldest]  # no fresh host
    assert state(local, oldest) in {"pending", "running"}
    name = local.boot(oldest)  # exactly as a fresh host: its one-job config, read once
    assert name == runner_name(local.settings.pools[POOL].name_prefix, "local", POOL, oldest)
    local.github.start_job(job.id, name)
    host = local.plane.ledger.instance(oldest, live_only=True)
    assert host is not None
    assert host.job_id == job.id
    assert oldest not in {r.id for r in local.plane.ledger.warm_instances()}
    history = local.plane.ledger.launch_history(POOL, [demand_bucket(local.clock())])
    assert history == {demand_bucket(local.clock()): 1}  # a warm start is a launch the pool needed

    # The job ends; the host powers off, which for a warm-launched instance means `stopped`.
    local.github.finish_job(job.id)
    local.power_off(oldest)
    local.clock.advance(60)
    after = local.plane.reconcile()
    assert after.warm_ended == [oldest]  # ended, never returned to the warm pool
    assert oldest not in after.warm_retired  # which counts warm instances never started
    assert state(local, oldest) in {"shutting-down", "terminated"}
    assert len(after.warm_launched) == 1  # the pool is topped up to its two


def test_a_start_ec2_refuses_is_made_up_by_a_fresh_host_in_the_same_cycle(local: LocalPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    warm = ready_pool(local)
    monkeypatch.setattr(local.plane.fleet, "start", lambda iid: "InsufficientInstanceCapacity")
    local.github.queue_job(T4)
    local.pump()
    report = local.plane.last_report
    assert report is not None
    assert report.warm_start_failed == [warm[0]]
    assert report.warm_started == []
    (fresh,) = report.launched[POOL]
    assert fresh not in warm
    assert config_of(local, fresh) != WARM_CONFIG
    # Refused for now only: it stays warm, and ready.
    assert sorted(r.id for r in local.plane.ledger.warm_instances(POOL) if r.state == READY) == sorted(warm)
    assert state(local, warm[0]) == "stopped"


def test_warm_instances_of_a_superseded_image_are_retired(local: LocalPlane) -> None:
    warm = ready_pool(local)
    warm_pool(local, image="ami-0newer0000000000")
    report = local.plane.reconcile()
    assert sorted(report.warm_retired) == sorted(warm)
    assert all(state(local, iid) in {"shutting-down", "terminated"} for iid in warm)


def test_warm_instances_past_their_maximum_age_are_retired(local: LocalPlane) -> None:
    warm = ready_pool(local)
    warm_pool(local, max_age_s=3600)
    local.clock.advance(3601)
    report = local.plane.reconcile()
    assert sorted(report.warm_retired) == sorted(warm)
    assert len(report.warm_launched) == 2  # replaced


def test_switching_a_warm_pool_off_retires_its_warm_instances(local: LocalPlane) -> None:
    warm = ready_pool(local)
    warm_pool(local, mode=OFF, windows=())
    report = local.plane.reconcile()
    assert sorted(report.warm_retired) == sorted(warm)
    assert report.warm_launched == []
    assert all(state(local, iid) in {"shutting-down", "terminated"} for iid in warm)


def test_adaptive_size_follows_recorded_launches_and_the_ebs_budget(local: LocalPlane) -> None:
    now = local.clock()
    ledger = local.plane.ledger
    for weeks_ago, count in ((1, 3), (2, 1)):
        ledger.count_launches(POOL, demand_bucket(now - weeks_ago * WEEK_S), count, weeks=2)
    warm_pool(local, mode=ADAPTIVE, maximum=4, weeks=2, percentile=1.0, lookahead_s=600, volume_gib=100.0)
    report = local.plane.reconcile()
    assert report.warm_targets[POOL] == 3
    assert len(report.warm_launched) == 3
    local.plane.settings = local.settings = dataclasses.replace(local.settings, warm_ebs_budget_gib=250.0)
    local.clock.advance(60)
    trimmed = local.plane.reconcile()
    assert trimmed.warm_targets[POOL] == 2
    assert len(trimmed.warm_retired) == 1  # the newest booting one beyond the budget


def test_the_stacks_warm_pool_budget_reaches_the_control_plane() -> None:
    from estate.config.loader import load_estate
    from estate.config.stack_config import parse_stack_config
    from estate.derive.control_config import control_settings
    from estate.local.plane import local_stack_raw
    from tests.conftest import EXAMPLE_CONFIGS

    raw = local_stack_raw("example-org")
    estate = load_estate([str(EXAMPLE_CONFIGS)])
    unset = control_settings(parse_stack_config(raw, "Pulumi.local.yaml"), estate, table_name="t", pools={})
    assert unset.warm_ebs_budget_gib is None
    stack = parse_stack_config({**raw, "warm_pools": {"ebs_budget_gib": 500}}, "Pulumi.local.yaml")
    settings = control_settings(stack, estate, table_name="t", pools={})
    assert settings.warm_ebs_budget_gib == 500
    assert type(settings).from_dict(settings.to_dict()).warm_ebs_budget_gib == 500


class _ScarceEc2:
    """RunInstances as EC2 answers it when capacity is short: at least MinCount or nothing
    (InsufficientInstanceCapacity), up to MaxCount."""

    def __init__(self, capacity: dict[str, int]) -> None:
        self.capacity = capacity
        self.asked: list[str] = []

    def run_instances(self, **request: Any) -> dict[str, Any]:
        itype = request["InstanceType"]
        self.asked.append(itype)
        given = min(self.capacity.get(itype, 0), request["MaxCount"])
        if given < request["MinCount"]:
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"}}, "RunInstances")
        self.capacity[itype] -= given
        now = datetime(2026, 11, 30, tzinfo=UTC)
        return {"Instances": [{"InstanceId": f"i-{itype}-{n}", "LaunchTime": now, "ImageId": MOTO_AMI} for n in range(given)]}


def test_a_warm_launch_takes_what_capacity_there_is_and_leaves_the_rest_to_the_next_cycle() -> None:
    pool = PoolSettings(
        name=POOL, capacity_type="spot", instance_types=("g4dn.xlarge", "g4dn.2xlarge"), labels=tuple(T4), runner_group="default",
        max_instances=10, launch_template_id="lt-1",
    )  # fmt: skip
    ec2 = _ScarceEc2({"g4dn.xlarge": 0, "g4dn.2xlarge": 1})
    hosts, errors = Ec2Fleet(ec2, "local").launch_warm(pool, 3, "warm-token")
    assert [h.id for h in hosts] == ["i-g4dn.2xlarge-0"]
    assert errors == ["InsufficientInstanceCapacity"]
    assert ec2.asked == ["g4dn.xlarge", "g4dn.2xlarge"]
