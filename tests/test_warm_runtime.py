"""Stopped warm pools at run time (issue 20.2): the ledger's memory of them and of each pool's
launches, the reconciler that keeps them, and the launch path that starts them, on loopback
(moto_server models stop and start; GitHub is our fake)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estate.local.plane import LocalPlane
from lambda_src.aws.ledger import BOOTING, READY, STARTED, STARTING
from lambda_src.core.warm_pools import DEMAND_BUCKET_S, WEEK_S, demand_bucket
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
