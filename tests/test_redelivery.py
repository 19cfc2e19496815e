"""Missed webhooks are redelivered (issue 21.2): the pure choice of what to send again, and the
whole path on loopback — GitHub's delivery log in our fake, the real webhook, ledger and scaler."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from estate.local.fake_github import HOOK_ID
from estate.local.plane import LocalPlane
from lambda_src.core.redelivery import MAX_REDELIVERIES, REDELIVERY_WINDOW_S, Delivery, delivery_from_api, hook_for, plan_redeliveries
from lambda_src.functions.redelivery import Redeliverer
from tests.conftest import INSTANTS, WORKING_HOURS, served_example_plane

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL = "gpu-t4-spot"
NOW = WORKING_HOURS.timestamp()


def attempt(guid: str, status: int, ago: float, id_: int, event: str = "workflow_job") -> Delivery:
    return Delivery(id_, guid, NOW - ago, status, event, redelivery=False)


# ---- which deliveries are sent again ----------------------------------------------------


def test_failed_deliveries_are_chosen_oldest_first_and_successes_never() -> None:
    listed = [
        attempt("b", 503, 60, 4),
        attempt("ok", 202, 120, 3),
        attempt("a", 0, 300, 2),  # no answer: connection refused or a timeout
        attempt("c", 502, 400, 1),
        attempt("c", 202, 30, 5),  # c failed first, then someone redelivered it successfully
    ]
    assert [d.guid for d in plan_redeliveries(listed, (), NOW)] == ["a", "b"]


def test_a_client_error_is_not_sent_again_but_a_timeout_or_throttle_is() -> None:
    listed = [attempt(g, s, 60, i) for i, (g, s) in enumerate([("sig", 401), ("bad", 400), ("big", 413), ("slow", 408), ("busy", 429)])]
    assert sorted(d.guid for d in plan_redeliveries(listed, (), NOW)) == ["busy", "slow"]


def test_each_delivery_is_sent_again_once_its_latest_attempt_is_the_one() -> None:
    listed = [attempt("a", 503, 600, 1), Delivery(7, "a", NOW - 60, 503, "workflow_job", redelivery=True)]
    assert [d.id for d in plan_redeliveries(listed, (), NOW)] == [7]
    assert plan_redeliveries(listed, {"a"}, NOW) == []  # the ledger remembers it was redelivered


def test_only_the_window_and_only_our_event_and_at_most_a_pass_worth() -> None:
    old = attempt("old", 503, REDELIVERY_WINDOW_S + 1, 1)
    ping = attempt("ping", 503, 10, 2, event="ping")
    assert plan_redeliveries([old, ping], (), NOW) == []
    many = [attempt(f"g{i}", 503, 1000 - i, i) for i in range(MAX_REDELIVERIES + 20)]
    chosen = plan_redeliveries(many, (), NOW)
    assert len(chosen) == MAX_REDELIVERIES
    assert chosen[0].guid == "g0"


def test_a_listing_item_is_read_as_github_writes_it() -> None:
    guid = "58474f00-b361-11eb-836d-0e4f3503ccbe"
    item: dict[str, Any] = {"id": 42, "guid": guid, "delivered_at": "2021-05-12T20:33:44Z", "redelivery": False,
            "status": "failed to connect", "status_code": 502, "event": "workflow_job", "action": "queued"}  # fmt: skip
    found = delivery_from_api(item)
    assert found is not None
    assert (found.id, found.status_code, found.worth_retrying) == (42, 502, True)
    assert delivery_from_api({"id": "x"}) is None
    assert delivery_from_api({**item, "status_code": None}) == Delivery(42, guid, found.delivered_at, 0, "workflow_job")


def test_the_hook_is_found_by_our_url_whatever_its_trailing_slash() -> None:
    hooks = [{"id": 1, "config": {"url": "https://elsewhere.example/hook"}}, {"id": 2, "config": {"url": "https://x.lambda-url.aws/"}}]
    assert hook_for(hooks, "https://x.lambda-url.aws") == 2
    assert hook_for(hooks, "https://nowhere.example") is None


# ---- end to end on loopback ---------------------------------------------------------------


@pytest.fixture(params=sorted(INSTANTS))
def local(request: pytest.FixtureRequest, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    with served_example_plane(moto_url, monkeypatch, INSTANTS[request.param]) as plane:
        yield plane


@pytest.fixture
def one(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    """The same plane at one fixed instant, for the cases whose answer does not depend on the hour."""
    with served_example_plane(moto_url, monkeypatch, WORKING_HOURS) as plane:
        yield plane


def ledger_down(monkeypatch: pytest.MonkeyPatch, local: LocalPlane) -> None:
    """DynamoDB refuses every write of the webhook: it answers 503, as in Lambda."""

    def refuse(job: Any) -> bool:
        raise ConnectionError("DynamoDB unavailable")

    monkeypatch.setattr(local.ports.ledger, "record_job", refuse)


def test_a_job_whose_delivery_met_an_outage_is_redelivered_once_and_served(local: LocalPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        ledger_down(patch, local)
        job = local.github.queue_job(T4)
    assert local.github.deliveries[-1][0] == 503
    local.pump()
    assert local.running_instances(POOL) == []  # nothing heard of it

    local.clock.advance(300)
    report = local.redeliverer.run()
    assert report.summary()["redelivered"] == 1
    assert report.failed == 1
    assert [(h.redelivery, h.status_code) for h in local.github.hook_deliveries] == [(False, 503), (True, 202)]
    assert local.plane.ledger.job(job.id) is not None
    local.pump()
    assert len(local.running_instances(POOL)) == 1

    local.clock.advance(300)
    assert local.redeliverer.run().redelivered == []  # succeeded: never again
    assert len(local.github.hook_deliveries) == 2


def test_a_redelivery_that_fails_again_is_not_repeated(one: LocalPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger_down(monkeypatch, one)
    one.github.queue_job(T4)
    one.clock.advance(300)
    assert len(one.redeliverer.run().redelivered) == 1
    one.clock.advance(300)
    assert one.redeliverer.run().redelivered == []
    assert [h.status_code for h in one.github.hook_deliveries] == [503, 503]


def test_no_answer_at_all_is_redelivered_and_a_refused_signature_is_not(one: LocalPlane) -> None:
    one.github.webhook_down = True
    down = one.github.queue_job(T4)
    one.github.webhook_down = False
    one.github.webhook_secret = "not-the-secret"  # a wrong secret, on purpose
    one.github.queue_job(T4)
    one.github.webhook_secret = one.webhook_secret
    assert [h.status_code for h in one.github.hook_deliveries] == [0, 401]
    one.clock.advance(60)
    assert len(one.redeliverer.run().redelivered) == 1
    assert one.plane.ledger.job(down.id) is not None


def test_queued_then_completed_both_lost_are_redelivered_in_order_and_launch_nothing(one: LocalPlane) -> None:
    one.github.webhook_down = True
    job = one.github.queue_job(T4)
    one.github.finish_job(job.id)  # cancelled before any runner took it
    one.github.webhook_down = False
    one.clock.advance(120)
    assert len(one.redeliverer.run().redelivered) == 2
    stored = one.plane.ledger.job(job.id)
    assert stored is not None
    assert stored.state == "completed"
    one.pump()
    one.plane.reconcile()
    assert one.running_instances(POOL) == []


def test_github_refusing_a_redelivery_leaves_it_for_the_next_pass(one: LocalPlane) -> None:
    one.github.webhook_down = True
    one.github.queue_job(T4)
    one.github.webhook_down = False
    one.github.fail_next(502, "/attempts", times=4)  # every retry of the one request
    one.clock.advance(60)
    first = one.redeliverer.run()
    assert (first.redelivered, first.errors) == ([], 1)
    one.clock.advance(300)
    assert len(one.redeliverer.run().redelivered) == 1


def test_the_listing_is_paged_and_bounded_by_the_window(one: LocalPlane) -> None:
    one.github.webhook_down = True
    old = one.github.queue_job(T4)  # fails, then ages out of the window
    one.clock.advance(REDELIVERY_WINDOW_S + 60)
    for _ in range(3):
        one.github.queue_job(T4)
    one.github.webhook_down = False
    for _ in range(230):
        one.github.send_job_event(one.github.queue_job(T4, send=False), "completed")  # answered 202
    one.clock.advance(60)
    before = one.github.calls_to("/deliveries?")
    report = one.redeliverer.run()
    assert len(report.redelivered) == 3
    assert one.github.calls_to("/deliveries?") - before == 3  # 234 recent attempts: three pages of 100
    assert one.plane.ledger.job(old.id) is None


def test_the_hook_comes_from_the_stack_or_is_found_or_its_absence_is_loud(one: LocalPlane) -> None:
    assert one.redeliverer.hook_id() == HOOK_ID  # found among the org's hooks by our URL
    lost = Redeliverer(one.settings, one.plane.ledger, one.plane.github, one.clock, webhook_url="https://elsewhere.example/hook")
    assert lost.run().hook_missing == 1
    named = Redeliverer(replace(one.settings, webhook_id=HOOK_ID), one.plane.ledger, one.plane.github, one.clock)
    assert named.hook_id() == HOOK_ID
    assert named.run().hook_missing == 0


def test_a_lost_delivery_no_longer_waits_for_the_repository_scan(one: LocalPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repository with no job in the scan window is never scanned: before redelivery, its
    lost job was found by nothing."""
    with monkeypatch.context() as patch:
        ledger_down(patch, one)
        one.github.queue_job(T4, repo="example-org/quiet")
    one.clock.advance(60)
    one.plane.reconcile()
    assert one.running_instances(POOL) == []
    one.redeliverer.run()
    one.pump()
    assert len(one.running_instances(POOL)) == 1
