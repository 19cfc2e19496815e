"""The Lambda entry points, wired as in AWS: settings loaded once, clients from the environment."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from estate.local.aws_models import checked
from estate.local.fake_block_ec2 import FakeBlockEc2
from estate.local.plane import LocalPlane
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.core.fleet_state import QUEUED, Job
from lambda_src.core.settings import ControlPlaneSettings
from lambda_src.functions import handlers
from tests.conftest import EXAMPLE_CONFIGS, WORKING_HOURS, fixed_clock

CONTEXT = SimpleNamespace(invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:runner-estate-local-scale-up")


@pytest.fixture
def wired(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    local = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    monkeypatch.setattr(handlers, "clock", local.clock)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    # As shipped: the settings round-trip through the JSON file the package carries.
    shipped = ControlPlaneSettings.from_dict(json.loads(json.dumps(local.settings.to_dict())))
    monkeypatch.setattr(handlers, "_settings", lambda: shipped)
    caches = (handlers._webhook_ports, handlers._control_plane, handlers._block_manager)
    for cached in caches:
        cached.cache_clear()
    yield local
    for cached in caches:
        cached.cache_clear()
    local.stop()


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_webhook_handler_answers_in_the_function_url_shape(wired: LocalPlane, capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps({"action": "queued", "workflow_job": {"id": 5, "labels": ["self-hosted", "linux", "x64", "gpu", "t4"]}})
    signature = "sha256=" + hmac.new(wired.webhook_secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    event = {"headers": {"x-github-event": "workflow_job", "x-hub-signature-256": signature}, "body": body, "isBase64Encoded": False}
    answer = handlers.webhook_handler(event, CONTEXT)
    assert answer["statusCode"] == 202
    assert json.loads(answer["body"])["pool"] == "gpu-t4-spot"
    (metric,) = emitted(capsys)  # one EMF line per delivery, counted by outcome
    assert metric["queued"] == 1
    assert metric["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "runner-estate"  # type: ignore[index]


def test_webhook_handler_hides_storage_failures_behind_a_503(
    wired: LocalPlane, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(handlers._webhook_ports().ledger, "table_name", "no-such-table")
    body = json.dumps({"action": "queued", "workflow_job": {"id": 6, "labels": ["self-hosted", "linux", "x64", "gpu", "t4"]}})
    signature = "sha256=" + hmac.new(wired.webhook_secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    event = {"headers": {"x-github-event": "workflow_job", "x-hub-signature-256": signature}, "body": body}
    answer = handlers.webhook_handler(event, CONTEXT)
    assert answer["statusCode"] == 503
    assert "no-such-table" not in answer["body"]
    assert emitted(capsys)[-1]["failed"] == 1  # what the webhook-failing alarm watches


def test_scale_up_handler_reports_failed_messages_by_id(wired: LocalPlane) -> None:
    good = json.dumps({"job_id": 9, "pool": "gpu-t4-spot", "repo": "org/r", "labels": []})
    event = {"Records": [{"messageId": "m-good", "body": good}, {"messageId": "m-poison", "body": "{oops"}]}
    assert handlers.scale_up_handler(event, CONTEXT) == {"batchItemFailures": [{"itemIdentifier": "m-poison"}]}
    assert len(wired.running_instances("gpu-t4-spot")) == 1


def test_scheduled_handlers_return_their_summary(wired: LocalPlane) -> None:
    assert handlers.reconcile_handler({}, CONTEXT)["failed_pools"] == {}
    assert handlers.scale_down_handler({}, CONTEXT)["retired"] == 0


def test_capacity_block_handlers_run_cycles_and_report_failed_messages(wired: LocalPlane) -> None:
    manager = handlers._block_manager("123456789012")
    pool = wired.settings.pools["gpu-h100-cb"]
    fake = FakeBlockEc2(wired.clock, dict.fromkeys(pool.subnet_ids, "us-east-1a"))
    fake.add_block("cr-0a1b2c3d4e5f60718", "p5.48xlarge", total=1, start=wired.clock(), hours=24)
    manager.ec2 = BlockEc2(fake, wired.settings.environment)

    job = json.dumps({"job_id": 11, "pool": "gpu-h100-cb", "repo": "org/r", "labels": []})
    wired.plane.ledger.record_job(Job(11, "gpu-h100-cb", QUEUED, wired.clock(), "org/r"))
    event = {"Records": [{"messageId": "m-job", "body": job}, {"messageId": "m-poison", "body": "{oops"}]}
    assert handlers.cb_scale_up_handler(event, CONTEXT) == {"batchItemFailures": [{"itemIdentifier": "m-poison"}]}
    assert len(fake.live()) == 1

    summary = handlers.cb_manager_handler({"source": "aws.events", "detail-type": "Scheduled Event"}, CONTEXT)
    assert {p["pool"] for p in summary["pools"]} == {"gpu-h100-cb", "gpu-b200-cb"}
    stray = {"Records": [{"messageId": "m-stray", "body": json.dumps({"detail-type": "Something Else", "detail": {}})}]}
    assert handlers.cb_manager_handler(stray, CONTEXT) == {"batchItemFailures": []}


class CountingSsm:
    def __init__(self) -> None:
        self.value, self.reads = "first", 0

    def call(self, action: str, payload: dict[str, object]) -> dict[str, object]:
        checked("ssm", action, payload)
        self.reads += 1
        return {"Parameter": {"Value": self.value}}


def test_cached_secret_expires_and_refreshes_at_a_bounded_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("lambda_src.functions.handlers.time.monotonic", lambda: now[0])
    ssm = CountingSsm()
    cached = handlers.CachedParameter(ssm, "/x", ttl_s=300, min_refresh_s=30)  # type: ignore[arg-type]
    assert cached() == "first"
    ssm.value = "second"
    assert cached() == "first"  # cached
    assert cached.refresh() is False  # read 0 s ago: a forged-delivery flood cannot hammer SSM
    now[0] += 31
    assert cached.refresh() is True
    assert cached() == "second"
    ssm.value = "third"
    now[0] += 301
    assert cached() == "third"  # the TTL bounds how long a warm container keeps an old value
    assert ssm.reads == 3
