"""Lambda entry points. Settings and clients are built once per cold start.

The webhook path imports only the stdlib AWS client (no boto3), so its cold start stays
small; the scaler handlers import boto3 for EC2 when they first run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from lambda_src.aws.ledger import Ledger
from lambda_src.aws.sigv4_client import AwsJsonClient
from lambda_src.core.fleet_state import Job
from lambda_src.core.job_messages import job_message
from lambda_src.core.settings import ControlPlaneSettings
from lambda_src.functions import webhook
from lambda_src.functions.metrics import emf_line

if TYPE_CHECKING:
    from lambda_src.functions.block_manager import BlockManager
    from lambda_src.functions.control_plane import ControlPlane
    from lambda_src.functions.redelivery import Redeliverer
    from lambda_src.functions.spot_events import SpotEvents
    from lambda_src.functions.sweeper import Sweeper

logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))
log = logging.getLogger("runner_estate.handlers")

# The one clock every function reads (Lambda's wall time); tests fix it by replacing this.
clock: Callable[[], float] = time.time


def _now() -> float:
    return clock()


class SqsQueues:
    """Sends each queued job to its pool's queue."""

    def __init__(self, sqs: AwsJsonClient, settings: ControlPlaneSettings) -> None:
        self.sqs = sqs
        self.settings = settings

    def enqueue(self, job: Job, delivery: str) -> None:
        self.sqs.call("SendMessage", {"QueueUrl": self.settings.pool(job.pool).queue_url, "MessageBody": job_message(job, delivery)})


class CachedParameter:
    """A SecureString (the webhook secret, the App key), read once and kept for `ttl_s`, so a
    rotated value reaches every warm container within that time; `refresh` re-reads sooner,
    at most once per `min_refresh_s` (a flood of forged deliveries cannot hammer SSM)."""

    def __init__(self, ssm: AwsJsonClient, name: str, ttl_s: float = 300.0, min_refresh_s: float = 30.0) -> None:
        self.ssm = ssm
        self.name = name
        self.ttl_s = ttl_s
        self.min_refresh_s = min_refresh_s
        self._value: str | None = None
        self._read_at = 0.0

    def __call__(self) -> str:
        if self._value is None or time.monotonic() - self._read_at > self.ttl_s:
            self._read()
        assert self._value is not None
        return self._value

    def refresh(self) -> bool:
        if time.monotonic() - self._read_at < self.min_refresh_s:
            return False
        self._read()
        return True

    def _read(self) -> None:
        found = self.ssm.call("GetParameter", {"Name": self.name, "WithDecryption": True})
        self._value = str(found["Parameter"]["Value"])
        self._read_at = time.monotonic()


@cache
def _settings() -> ControlPlaneSettings:
    return ControlPlaneSettings.load()


@cache
def _webhook_ports() -> webhook.WebhookPorts:
    s = _settings()
    secret = CachedParameter(AwsJsonClient("ssm", s.region), s.webhook_secret_parameter)
    ledger = Ledger(AwsJsonClient("dynamodb", s.region), s.table_name, s.ledger_ttl_s, _now)
    queue = SqsQueues(AwsJsonClient("sqs", s.region), s)
    return webhook.WebhookPorts(
        lambda: secret().encode(), ledger, queue, s.routing, {}, refresh_secret=secret.refresh, reusing_pool_of=s.reusing_pool_of
    )


@cache
def _control_plane(account: str) -> ControlPlane:
    import boto3  # deferred with the rest of the scaler: the webhook needs none of it

    from lambda_src.aws.ec2_fleet import Ec2Fleet
    from lambda_src.aws.jit_parameters import JitParameters
    from lambda_src.functions.control_plane import ControlPlane
    from lambda_src.github.client import GithubApp, GithubClient

    s = _settings()
    ssm = AwsJsonClient("ssm", s.region)
    return ControlPlane(
        settings=s,
        ledger=Ledger(AwsJsonClient("dynamodb", s.region), s.table_name, s.ledger_ttl_s, _now),
        fleet=Ec2Fleet(boto3.client("ec2", region_name=s.region, config=_retry_config()), s.environment),
        jit=JitParameters(ssm, s.jit_parameter_prefix, f"arn:aws:ec2:{s.region}:{account}:instance/"),
        github=GithubClient(
            s.api_url,
            s.org,
            s.app_id,
            CachedParameter(ssm, s.app_key_parameter),
            s.installation_id,
            clock=_now,
            more_apps=[GithubApp(a.app_id, CachedParameter(ssm, a.key_parameter), a.installation_id) for a in s.more_apps],
        ),
        clock=_now,
    )


@cache
def _block_manager(account: str) -> BlockManager:
    import boto3

    from lambda_src.aws.block_ec2 import BlockEc2
    from lambda_src.functions.block_manager import BlockManager

    plane = _control_plane(account)
    s = plane.settings
    ec2 = BlockEc2(boto3.client("ec2", region_name=s.region, config=_retry_config()), s.environment)
    return BlockManager(settings=s, ledger=plane.ledger, ec2=ec2, jit=plane.jit, github=plane.github, clock=_now)


@cache
def _redeliverer(account: str) -> Redeliverer:
    from lambda_src.functions.redelivery import WEBHOOK_URL_VARIABLE, Redeliverer

    plane = _control_plane(account)
    return Redeliverer(plane.settings, plane.ledger, plane.github, _now, os.environ.get(WEBHOOK_URL_VARIABLE, ""))


@cache
def _spot_events(account: str) -> SpotEvents:
    from lambda_src.functions.spot_events import SpotEvents

    return SpotEvents(_control_plane(account))


@cache
def _sweeper(account: str) -> Sweeper:
    from lambda_src.aws.leftovers import LeftoverStore
    from lambda_src.functions.sweeper import Sweeper

    plane = _control_plane(account)
    s = plane.settings
    store = LeftoverStore(plane.fleet.ec2, AwsJsonClient("ssm", s.region), s.environment, s.jit_parameter_prefix)
    return Sweeper(s, plane.ledger, store, plane.github, _now)


def _retry_config() -> Any:
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3, read_timeout=10)


def _account(context: Any) -> str:
    """The account id, from this function's ARN (arn:aws:lambda:<region>:<account>:function:...)."""
    return str(context.invoked_function_arn).split(":")[4]


def _emit(function: str, counts: dict[str, float]) -> None:
    print(emf_line(_settings().environment, function, counts, _now()), flush=True)  # EMF lines go to stdout


def webhook_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        answer = webhook.handle(event, _webhook_ports(), _now())
    except Exception:
        # Our own storage failed, not the sender's input: say so without details, and alarm.
        log.exception("webhook failed")
        answer = webhook.Response(503, {"error": "temporarily unavailable"}, "failed")
    _emit("webhook", {answer.outcome: 1})
    return answer.to_lambda()


def scale_up_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records", [])
    failures = _control_plane(_account(context)).scale_up(records)
    _emit("scale_up", {"messages": len(records), "failed_messages": len(failures)})
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


def reconcile_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    summary = _control_plane(_account(context)).reconcile().summary()
    _emit("reconcile", _numbers(summary))
    return summary


def scale_down_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    summary = _control_plane(_account(context)).scale_down().summary()
    _emit("scale_down", _numbers(summary))
    return summary


def redeliver_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Every few minutes: failed webhook deliveries are sent again, once each."""
    summary = _redeliverer(_account(context)).run().summary()
    _emit("redeliver", _numbers(summary))
    return summary


def spot_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Each batch of the spot-events queue: EC2's interruption warnings and rebalance hints."""
    records = event.get("Records", [])
    failures, report = _spot_events(_account(context)).handle(records)
    _emit("spot", {**_numbers(report.summary()), "failed_events": float(len(failures))})
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


def sweep_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Every ten minutes: what has no live owner (from tags and names, not the ledger) is removed."""
    summary = _sweeper(_account(context)).run().summary()
    _emit("sweep", _numbers(summary))
    return summary


def cb_scale_up_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records", [])
    failures = _block_manager(_account(context)).scale_up(records)
    _emit("cb_scale_up", {"messages": len(records), "failed_messages": len(failures)})
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


def cb_manager_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Every minute (a scheduled event), and for each batch of a pool's events queue."""
    manager = _block_manager(_account(context))
    if "Records" in event:
        failures = manager.handle_events(event["Records"])
        _emit("cb_manager", {"events": len(event["Records"]), "failed_events": len(failures)})
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}
    summaries = manager.manage()
    counts = {k: float(sum(s[k] for s in summaries)) for k in ("launched", "issued", "deregistered", "retired", "overran", "idle_gpus")}
    _emit("cb_manager", counts)
    return {"pools": summaries}


def _numbers(summary: dict[str, Any]) -> dict[str, float]:
    """A cycle's summary as counts: launched hosts, failed pools, and the rest as they are."""
    counts = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
    counts["launched"] = float(sum(summary.get("launched", {}).values()))
    counts["failed_pools"] = float(len(summary.get("failed_pools", {})))  # repo_errors is a count already
    return counts
