"""ScalerFunctions under mocks: what the control plane deploys and its security properties."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from estate.config.loader import load_estate
from estate.preview import Registered, run_program
from lambda_src.core.settings import ControlPlaneSettings
from lambda_src.functions.redelivery import WEBHOOK_URL_VARIABLE
from tests.conftest import EXAMPLE_CONFIGS, PROJECT_DIR

POOLS = load_estate([EXAMPLE_CONFIGS]).pools
# Every function the example estate deploys (it has capacity-block pools).
FUNCTIONS = ("webhook", "scale_up", "reconcile", "scale_down", "redeliver", "sweep", "spot", "cb_scale_up", "cb_manager")


@pytest.fixture(scope="module")
def scaler() -> list[Registered]:
    return [r for r in run_program(PROJECT_DIR, "prod").records if r.parent == "scaler"]


def of_type(records: list[Registered], suffix: str) -> list[Registered]:
    return [r for r in records if r.type.endswith(suffix)]


def policy_of(records: list[Registered], function: str) -> list[dict[str, Any]]:
    (policy,) = [r for r in of_type(records, ":RolePolicy") if r.name == f"scaler-{function}-policy"]
    statements: list[dict[str, Any]] = json.loads(policy.inputs["policy"])["Statement"]
    return statements


def actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements for a in s["Action"]}


def test_one_queue_and_dead_letter_queue_with_an_alarm_per_pool(scaler: list[Registered]) -> None:
    queues = {q.inputs["name"]: q for q in of_type(scaler, ":Queue")}
    for pool in POOLS:
        main, dlq = queues[f"runner-estate-prod-{pool.name}"], queues[f"runner-estate-prod-{pool.name}-dlq"]
        redrive = json.loads(main.inputs["redrivePolicy"])
        assert redrive["maxReceiveCount"] == 3
        assert isinstance(redrive["maxReceiveCount"], int)
        assert main.inputs["sqsManagedSseEnabled"]
        assert dlq.inputs["sqsManagedSseEnabled"]
    alarms = [a for a in of_type(scaler, ":MetricAlarm") if a.name.endswith("-dlq-alarm")]
    assert len(alarms) == len(POOLS)
    assert all(a.inputs["metricName"] == "ApproximateNumberOfMessagesVisible" and a.inputs["threshold"] == 0 for a in alarms)


def test_scale_up_reads_every_pool_queue_with_partial_batch_failures(scaler: list[Registered]) -> None:
    mappings = of_type(scaler, ":EventSourceMapping")
    block_pools = [p for p in POOLS if p.capacity_type == "capacity-block"]
    # + each capacity-block pool's events and slot-reports queues, + the spot interruption events queue
    assert len(mappings) == len(POOLS) + 2 * len(block_pools) + 1
    assert all(m.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)


def test_every_function_alarms_on_its_own_errors(scaler: list[Registered]) -> None:
    """A function that raises emits none of its counters: Lambda's Errors metric must alarm."""
    functions = {f.inputs["name"] for f in of_type(scaler, ":Function")}
    alarmed = {a.inputs["dimensions"]["FunctionName"] for a in of_type(scaler, ":MetricAlarm") if a.inputs["metricName"] == "Errors"}
    assert alarmed == functions
    assert len(functions) == len(FUNCTIONS)


def test_ledger_and_webhook_endpoint_are_protected_from_deletion(scaler: list[Registered]) -> None:
    (table,) = of_type(scaler, ":Table")
    (url,) = of_type(scaler, ":FunctionUrl")
    (webhook,) = [f for f in of_type(scaler, ":Function") if f.name == "scaler-webhook"]
    assert table.protect
    assert url.protect
    assert webhook.protect
    assert table.inputs["ttl"] == {"attributeName": "expires_at", "enabled": True}
    assert table.inputs["serverSideEncryption"]["enabled"] is True


def test_secrets_are_secure_strings_and_never_in_function_environments(scaler: list[Registered]) -> None:
    params = of_type(scaler, ":Parameter")
    assert {p.inputs["type"] for p in params} == {"SecureString"}
    assert {p.inputs["name"] for p in params} == {
        "/runner-estate/prod/github-app/private-key",
        "/runner-estate/prod/github-app/private-key-2345678",  # the extra App's (github.extra_apps)
        "/runner-estate/prod/github-app/webhook-secret",
    }
    for fn in of_type(scaler, ":Function"):
        if fn.name == "scaler-redeliver":  # our webhook's URL, how it finds the org hook; nothing secret
            assert set(fn.inputs["environment"]["variables"]) == {WEBHOOK_URL_VARIABLE}
        else:
            assert "environment" not in fn.inputs


def test_one_role_per_function_each_with_only_what_it_needs(scaler: list[Registered]) -> None:
    assert len(of_type(scaler, ":Role")) == len(FUNCTIONS)  # one each
    webhook = policy_of(scaler, "webhook")
    assert actions(webhook) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "ssm:GetParameter",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "sqs:SendMessage",
    }
    (secret,) = [s for s in webhook if s["Sid"] == "WebhookSecret"]
    assert secret["Resource"].endswith("webhook-secret")
    down = actions(policy_of(scaler, "scale_down"))
    assert not down & {"ec2:CreateFleet", "ec2:RunInstances", "iam:PassRole"}
    for name in ("scale_up", "reconcile", "scale_down"):
        statements = policy_of(scaler, name)
        (terminate,) = [s for s in statements if "ec2:TerminateInstances" in s["Action"]]
        assert terminate["Condition"]["StringEquals"]["aws:ResourceTag/runner-estate:environment"] == "prod"
        (config,) = [s for s in statements if s["Sid"] == "RunnerConfigs"]
        assert config["Resource"] == "arn:aws:ssm:us-east-1:123456789012:parameter/runner-estate/prod/jit/*"
        (key,) = [s for s in statements if s["Sid"] == "AppKey"]
        assert [arn.rsplit(":", 1)[1] for arn in key["Resource"]] == ["scaler-app-key", "scaler-app-key-2345678"]  # every App's key
    assert "sqs:ReceiveMessage" in actions(policy_of(scaler, "scale_up"))
    # Redelivery talks to GitHub and keeps its memory in the ledger: nothing of EC2, SSM configs or queues.
    assert actions(policy_of(scaler, "redeliver")) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "ssm:GetParameter",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
    }
    # Spot events drain warned hosts: the scaler's rights without launching, and only their own queue.
    spot = policy_of(scaler, "spot")
    assert not actions(spot) & {"ec2:CreateFleet", "ec2:RunInstances", "iam:PassRole"}
    (queue,) = [s for s in spot if s["Sid"] == "PoolQueues"]
    assert [arn.rsplit(":", 1)[1] for arn in queue["Resource"]] == ["scaler-spot-events-queue"]
    # The sweeper deletes and terminates only what carries this environment's tags.
    for statement in policy_of(scaler, "sweep"):
        if set(statement["Action"]) & {"ec2:DeleteVolume", "ec2:DeleteNetworkInterface", "ec2:TerminateInstances"}:
            assert statement["Condition"]["StringEquals"]["aws:ResourceTag/runner-estate:environment"] == "prod"


def test_functions_ship_lambda_src_with_the_compiled_settings(scaler: list[Registered]) -> None:
    functions = of_type(scaler, ":Function")
    assert {f.inputs["handler"] for f in functions} == {f"lambda_src.functions.handlers.{n}_handler" for n in FUNCTIONS}
    settings_file = "lambda_src/control_plane.json"
    builds = {json.dumps(sorted(f.inputs["code"].assets)) + f.inputs["code"].assets[settings_file].text for f in functions}
    assert len(builds) == 1  # one build of lambda_src for every function
    text = functions[0].inputs["code"].assets[settings_file].text
    settings = ControlPlaneSettings.from_dict(json.loads(text))
    assert set(settings.pools) == {p.name for p in POOLS}
    t4 = settings.pools["gpu-t4-spot"]
    assert t4.launch_template_id == "gpu-t4-spot-lt-id"
    assert t4.queue_url == "https://sqs.us-east-1.amazonaws.com/123456789012/runner-estate-prod-gpu-t4-spot"
    assert t4.subnet_ids
    assert t4.failover_errors
    assert t4.max_instances == 20
    # Names of the secret parameters only; the values (here the preview's placeholders) never.
    assert "BEGIN" not in text
    assert "[secret]" not in text


def test_launch_templates_boot_the_bootstrap_without_credentials() -> None:
    templates = [r for r in run_program(PROJECT_DIR, "prod").records if r.type.endswith(":LaunchTemplate")]
    for t in templates:
        script = base64.b64decode(t.inputs["userData"]).decode()
        program = "slot_manager" if (t.parent or "").endswith("-cb") else "bootstrap"
        assert f"python3 -m lambda_src.host.{program} --parameter-prefix /runner-estate/prod/jit/" in script
        assert "BEGIN" not in script
        assert "ghs_" not in script


def test_alarms_watch_the_counters_that_mean_jobs_may_wait(scaler: list[Registered]) -> None:
    watched = {
        (a.inputs["dimensions"].get("function", "scale_up+reconcile"), a.inputs["metricName"])
        for a in of_type(scaler, ":MetricAlarm")
        if a.inputs["namespace"] == "runner-estate"
    }
    assert watched == {
        ("webhook", "failed"),
        ("webhook", "unauthorised"),
        ("reconcile", "failed_pools"),
        ("reconcile", "repo_errors"),
        ("redeliver", "hook_missing"),
        ("scale_up+reconcile", "spot_role_missing"),  # from both functions' logs (tests/test_spot_role.py)
    }


def test_a_launching_roles_policy_is_applied_after_the_launch_templates_it_requires() -> None:
    """Its launch statements require each template's pool tag: on an update that adds the tag,
    the policy must not be tightened before the templates carry it."""
    records = run_program(PROJECT_DIR, "prod").records
    templates = {r.urn for r in records if r.type == "aws:ec2/launchTemplate:LaunchTemplate"}
    for function in ("scale_up", "reconcile", "cb_scale_up", "cb_manager"):
        (policy,) = [r for r in records if r.name == f"scaler-{function}-policy"]
        used = {urn for urns in policy.property_dependencies.values() for urn in urns} | set(policy.dependencies)
        assert used & templates, function
