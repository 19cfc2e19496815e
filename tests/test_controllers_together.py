"""The controllers as deployed: scale-up, reconcile and scale-down beside the capacity-block
manager, over one EC2, one ledger and one GitHub. Each acts only on what it owns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from estate.local.fake_block_ec2 import FakeBlockEc2
from estate.local.plane import LocalPlane
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.aws.ec2_fleet import Ec2Fleet
from lambda_src.core.planner import LISTING_GRACE_S
from lambda_src.functions.block_manager import BlockManager
from tests.conftest import EXAMPLE_CONFIGS, WORKING_HOURS, fixed_clock

CB_POOL = "gpu-h100-cb"
BLOCK = "cr-0a1b2c3d4e5f60718"  # the reservation the example pool names
H100 = ["self-hosted", "linux", "x64", "gpu", "h100"]
T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
HOUR = 3600.0


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    plane.serve_webhook()
    yield plane
    plane.stop()


@pytest.fixture
def ec2(local: LocalPlane) -> FakeBlockEc2:
    """One EC2 for every controller (moto has no capacity blocks, so it is our boundary fake)."""
    subnets = local.settings.pools[CB_POOL].subnet_ids
    fake = FakeBlockEc2(local.clock, {s: f"us-east-1{'ab'[i % 2]}" for i, s in enumerate(subnets)})
    local.plane.fleet = Ec2Fleet(fake, local.settings.environment)
    return fake


@pytest.fixture
def manager(local: LocalPlane, ec2: FakeBlockEc2) -> BlockManager:
    return BlockManager(
        settings=local.settings,
        ledger=local.plane.ledger,
        ec2=BlockEc2(ec2, local.settings.environment),
        jit=local.plane.jit,
        github=local.plane.github,
        clock=local.clock,
        sleep=lambda s: None,
    )


def deliver(local: LocalPlane, manager: BlockManager) -> None:
    """SQS to the function each pool's queue is wired to, as the event source mappings do."""

    def either(records: list[dict[str, Any]]) -> list[str]:
        return sorted(set(local.plane.scale_up(records)) | set(manager.scale_up(records)))

    local.pump(either)


def every_controller(local: LocalPlane, manager: BlockManager) -> None:
    local.plane.reconcile()
    local.plane.scale_down()
    manager.manage()


def test_the_scaler_never_touches_a_capacity_block_node(local: LocalPlane, ec2: FakeBlockEc2, manager: BlockManager) -> None:
    ec2.add_block(BLOCK, "p5.48xlarge", total=2, start=local.clock(), hours=24)
    local.github.queue_job(H100)
    local.github.queue_job(T4)
    deliver(local, manager)
    (node,) = ec2.live(BLOCK)
    hosts = [i for i in ec2.live() if i != node]
    assert len(hosts) == 1

    # Well past the scaler's grace for a host without a runner config, and its boot timeout.
    for _ in range(int((LISTING_GRACE_S + 15 * 60) // 60)):
        local.clock.advance(60)
        every_controller(local, manager)
    assert node in ec2.live(BLOCK)
    assert local.plane.ledger.instance(node, live_only=True) is not None
