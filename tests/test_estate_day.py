"""The estate for a day as deployed: every controller over one EC2, one ledger and one GitHub,
hundreds of runners, blocks starting and ending, stopped warm pools filling ahead of the rushes
and started for their jobs. Not one wrongful termination, not one stranded job, not one warm
instance left running without a job."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from estate.local.fake_block_ec2 import FakeBlockEc2
from estate.local.plane import LocalPlane
from lambda_src.functions.block_manager import BlockManager
from tests.conftest import EXAMPLE_CONFIGS, INSTANTS, fixed_clock
from tests.estate_day import Day, day_blocks, pr_day


@pytest.fixture
def day(moto_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[Day]:
    caplog.set_level(logging.WARNING)  # a day of INFO lines costs more than the day
    midnight = INSTANTS["weekday-night"].replace(hour=0, minute=0, second=0)
    local = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, midnight), endpoint=moto_url).start()
    local.serve_webhook()
    subnets = local.settings.pools["gpu-h100-cb"].subnet_ids
    ec2 = FakeBlockEc2(local.clock, {s: f"us-east-1{'ab'[i % 2]}" for i, s in enumerate(subnets)})
    manager = BlockManager(local.settings, local.plane.ledger, None, local.plane.jit, local.plane.github, local.clock, lambda s: None)  # type: ignore[arg-type]
    day = Day(local, ec2, manager, pr_day(seed=0), day_blocks())
    day.start()
    yield day
    local.stop()


def test_a_day_of_the_whole_estate_ends_no_running_job_and_strands_none(day: Day) -> None:
    day.run(hours=24)
    assert day.violations == []
    assert [(j.labels, j.at) for j in day.stranded()] == []
    assert day.peak_runners >= 150  # hundreds of runners of ours at once, beside 150 foreign ones
    assert day.terminations > 0

    # The warm pools ran beside the other controllers: launched ahead of the rushes (the launch
    # history says when), prepared and stopped, started for jobs, and each started one ended as
    # a fresh host does: stopped after its job, then terminated.
    warm = day.warm_instances()
    print("warm pools over the day:", day.warm_figures())
    assert day.warm_launched == {i.id for i in warm}  # what the control plane reported is what EC2 has
    assert day.warm_prepared > 0
    assert day.warm_started == set(day.ec2.starts)
    assert len(day.warm_started) > 0
    assert day.warm_up_without_a_job() == []
    assert [i.id for i in warm if i.started and i.state != "terminated"] == []
    assert day.warm_ended == day.warm_started  # reported as ended, not as retired warm instances
    assert not day.warm_retired & day.warm_started
