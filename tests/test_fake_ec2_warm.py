"""Our EC2 fake (estate/local/fake_block_ec2.py) with stopped warm instances, as EC2 has them:
the shutdown behaviour a launch asks for, a guest powering itself off, StartInstances only for
a stopped instance, MinCount/MaxCount, and the scaler's own adapter (lambda_src/aws/ec2_fleet.py)
reading what the fake answers."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from estate.local.fake_block_ec2 import TRANSITION_S, FakeBlockEc2
from estate.local.plane import Clock
from lambda_src.aws.ec2_fleet import Ec2Fleet
from lambda_src.core.settings import PoolSettings
from lambda_src.core.tags import WARM

SUBNET = "subnet-0a1b2c3d4e5f60718"
TEMPLATE = {"LaunchTemplateId": "lt-0123456789abcdef0", "Version": "$Default"}
T4 = "g4dn.2xlarge"


@pytest.fixture
def clock() -> Clock:
    return Clock(1_780_000_000.0)


@pytest.fixture
def ec2(clock: Clock) -> FakeBlockEc2:
    return FakeBlockEc2(clock, {SUBNET: "us-east-1a"})


def launch(ec2: FakeBlockEc2, min_count: int = 1, max_count: int = 1, **more: Any) -> list[str]:
    request = {"MinCount": min_count, "MaxCount": max_count, "LaunchTemplate": TEMPLATE, "InstanceType": T4,
               "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": SUBNET}], **more}  # fmt: skip
    return [i["InstanceId"] for i in ec2.run_instances(**request)["Instances"]]


def states(ec2: FakeBlockEc2, *names: str) -> list[str]:
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "instance-state-name", "Values": list(names)}])
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_a_guest_launched_to_stop_powers_off_into_stopped(ec2: FakeBlockEc2, clock: Clock) -> None:
    (iid,) = launch(ec2, InstanceInitiatedShutdownBehavior="stop")
    assert ec2.guest_powers_off(iid) == "stopping"
    assert states(ec2, "stopping") == [iid]
    clock.advance(TRANSITION_S)
    assert states(ec2, "stopped") == [iid]
    assert states(ec2, "pending", "running", "stopping") == []


def test_a_guest_launched_without_it_keeps_the_templates_terminate(ec2: FakeBlockEc2, clock: Clock) -> None:
    (iid,) = launch(ec2)
    assert ec2.guest_powers_off(iid) == "shutting-down"
    clock.advance(TRANSITION_S)
    assert states(ec2, "terminated") == [iid]
    with pytest.raises(ClientError) as refused:
        ec2.start_instances(InstanceIds=[iid])
    assert code(refused) == "IncorrectInstanceState"


def test_only_a_stopped_instance_starts_and_it_gets_a_new_launch_time(ec2: FakeBlockEc2, clock: Clock) -> None:
    stopping, running = launch(ec2, max_count=2, InstanceInitiatedShutdownBehavior="stop")
    ec2.guest_powers_off(stopping)
    for iid in (stopping, running):  # still stopping; never stopped
        with pytest.raises(ClientError) as refused:
            ec2.start_instances(InstanceIds=[iid])
        assert code(refused) == "IncorrectInstanceState"
    clock.advance(TRANSITION_S)
    with pytest.raises(ClientError) as refused:  # one wrong id refuses the whole call
        ec2.start_instances(InstanceIds=[stopping, running])
    assert code(refused) == "IncorrectInstanceState"
    with pytest.raises(ClientError) as refused:
        ec2.start_instances(InstanceIds=[stopping, "i-0000000000000dead"])
    assert code(refused) == "InvalidInstanceID.NotFound"
    assert states(ec2, "stopped") == [stopping]

    clock.advance(600)
    answer = ec2.start_instances(InstanceIds=[stopping])
    assert answer["StartingInstances"][0]["CurrentState"]["Name"] == "pending"
    assert ec2.starts == [stopping]
    assert ec2.instances[stopping].launched_at == clock()  # EC2's LaunchTime is the last start
    clock.advance(TRANSITION_S)
    assert sorted(states(ec2, "running")) == sorted([stopping, running])


def test_a_launch_gives_at_least_min_count_or_none_and_at_most_max_count(ec2: FakeBlockEc2, clock: Clock) -> None:
    ec2.capacity[T4] = 3
    with pytest.raises(ClientError) as refused:
        launch(ec2, min_count=4, max_count=4)
    assert code(refused) == "InsufficientInstanceCapacity"
    assert ec2.instances == {}
    assert len(launch(ec2, min_count=1, max_count=5, ClientToken="warm-a")) == 3
    assert len(launch(ec2, min_count=1, max_count=5, ClientToken="warm-a")) == 3  # the same token: the first launch
    with pytest.raises(ClientError) as refused:
        launch(ec2, min_count=1, max_count=1)
    assert code(refused) == "InsufficientInstanceCapacity"
    with pytest.raises(ClientError) as refused:
        launch(ec2, min_count=2, max_count=1)
    assert code(refused) == "InvalidParameterValue"


def test_a_start_needs_capacity_too(ec2: FakeBlockEc2, clock: Clock) -> None:
    (iid,) = launch(ec2, InstanceInitiatedShutdownBehavior="stop")
    ec2.guest_powers_off(iid)
    clock.advance(TRANSITION_S)
    ec2.capacity[T4] = 0
    with pytest.raises(ClientError) as refused:
        ec2.start_instances(InstanceIds=[iid])
    assert code(refused) == "InsufficientInstanceCapacity"
    assert states(ec2, "stopped") == [iid]


def test_what_ec2_refuses_the_fake_refuses(ec2: FakeBlockEc2) -> None:
    spot = {"MarketType": "spot"}
    with pytest.raises(ClientError) as refused:  # a one-time spot instance cannot be stopped
        launch(ec2, InstanceInitiatedShutdownBehavior="stop", InstanceMarketOptions=spot)
    assert code(refused) == "InvalidParameterCombination"
    with pytest.raises(ClientError) as refused:
        launch(ec2, NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": "subnet-00000000000000bad"}])
    assert code(refused) == "InvalidSubnetID.NotFound"
    with pytest.raises(ClientError) as refused:
        ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "instance-type", "Values": [T4]}])
    assert code(refused) == "InvalidParameterValue"  # a filter this fake does not know is not taken for a tag


def test_the_scalers_warm_adapter_launches_lists_and_starts_on_the_fake(ec2: FakeBlockEc2, clock: Clock) -> None:
    pool = PoolSettings("gpu-t4-spot", "spot", (T4,), ("self-hosted", "t4"), "default", 10,
                        launch_template_id=TEMPLATE["LaunchTemplateId"], subnet_ids=(SUBNET,))  # fmt: skip
    fleet = Ec2Fleet(ec2, "local")
    hosts, errors = fleet.launch_warm(pool, 2, "warm-gpu-t4-spot-1")
    assert (len(hosts), errors) == (2, [])
    assert all(h.warm and h.launched_at == clock() for h in hosts)
    assert all(ec2.instances[h.id].tags[WARM] == "true" for h in hosts)
    first, second = (h.id for h in hosts)
    assert fleet.hosts([pool.name]) != []  # preparing: running, as EC2 lists it
    ec2.guest_powers_off(first)
    assert {h.id: h.state for h in fleet.warm_hosts([pool.name])} == {first: "stopping", second: "running"}
    assert fleet.start(first) == "IncorrectInstanceState"
    clock.advance(TRANSITION_S)
    assert fleet.start(first) is None
    assert fleet.start("i-0000000000000dead") == "InvalidInstanceID.NotFound"
    assert {h.id: h.state for h in fleet.warm_hosts([pool.name])} == {first: "pending", second: "running"}
