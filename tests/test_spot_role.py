"""The Spot service-linked role (issue 18.5): created once when asked, and its absence at run time
reported as what it is, never as a capacity shortfall that quietly fails over to on-demand."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.config.stack_config import parse_stack_config
from estate.derive.spot_role import plan_spot_role
from estate.local.aws_models import checked
from estate.preview import Registered, run_program
from lambda_src.aws.ec2_fleet import (
    SPOT_ROLE_ERROR,
    SPOT_ROLE_METRIC,
    SPOT_ROLE_NAME,
    Ec2Fleet,
    is_spot_role_error,
    spot_role_finding,
)
from lambda_src.core.settings import PoolSettings
from tests.conftest import MINIMAL_POOL, PROJECT_DIR, write_pool

ROLE_MESSAGE = "The provided credentials do not have permission to create the service-linked role for EC2 Spot Instances."
CAPACITY_ERRORS = ("UnfulfillableCapacity", "InsufficientInstanceCapacity")


def spot_pool(failover: tuple[str, ...] = CAPACITY_ERRORS) -> PoolSettings:
    return PoolSettings(
        name="cpu-spot",
        capacity_type="spot",
        instance_types=("m7i.2xlarge", "m6i.2xlarge"),
        labels=("self-hosted", "linux", "x64"),
        runner_group="Default",
        max_instances=4,
        failover_errors=failover,
        launch_template_id="lt-0",
        subnet_ids=("subnet-a",),
    )


class _Ec2:
    """CreateFleet as an account without the Spot role answers: spot refused, on-demand served."""

    def __init__(self, spot_error: dict[str, str] | None = None, raises: bool = False) -> None:
        self.spot_error = spot_error or {"ErrorCode": SPOT_ROLE_ERROR, "ErrorMessage": ROLE_MESSAGE}
        self.raises = raises
        self.markets: list[str] = []

    def create_fleet(self, **request: Any) -> dict[str, Any]:
        checked("ec2", "CreateFleet", request)
        market = request["TargetCapacitySpecification"]["DefaultTargetCapacityType"]
        self.markets.append(market)
        count = request["TargetCapacitySpecification"]["TotalTargetCapacity"]
        if market == "on-demand":
            return {"Instances": [{"InstanceIds": [f"i-od{n}" for n in range(count)]}], "Errors": []}
        if self.raises:
            raise _ClientError(self.spot_error["ErrorCode"], self.spot_error["ErrorMessage"])
        return {"Instances": [], "Errors": [dict(self.spot_error, LaunchTemplateAndOverrides={})] * 2}


class _ClientError(Exception):
    """Shaped as botocore's ClientError: the code and message under `response["Error"]`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"An error occurred ({code}) when calling the CreateFleet operation: {message}")
        self.response = {"Error": {"Code": code, "Message": message}}


@pytest.mark.parametrize(
    ("error", "raises"),
    [
        ({"ErrorCode": SPOT_ROLE_ERROR, "ErrorMessage": ROLE_MESSAGE}, False),
        ({"ErrorCode": f"Client.{SPOT_ROLE_ERROR}", "ErrorMessage": ROLE_MESSAGE}, False),
        # The shape that looks like capacity: a capacity code whose message names the role.
        ({"ErrorCode": "UnfulfillableCapacity", "ErrorMessage": ROLE_MESSAGE}, False),
        ({"ErrorCode": SPOT_ROLE_ERROR, "ErrorMessage": ROLE_MESSAGE}, True),
    ],
    ids=["own-code", "client-prefixed", "as-capacity", "raised"],
)
def test_a_missing_spot_role_is_reported_and_never_fails_over_silently(
    error: dict[str, str], raises: bool, caplog: pytest.LogCaptureFixture
) -> None:
    ec2 = _Ec2(error, raises)
    with caplog.at_level(logging.ERROR, logger="runner_estate.ec2"):
        result = Ec2Fleet(ec2=ec2, environment="prod").launch(spot_pool(), 2, "token")
    assert ec2.markets == ["spot"]  # no on-demand launch at on-demand prices
    assert result.instance_ids == []
    assert result.failed_over is False
    assert result.spot_role_missing is True
    assert set(result.errors) == {SPOT_ROLE_ERROR}  # what it is, not UnfulfillableCapacity
    assert result.counts()[SPOT_ROLE_METRIC] == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert SPOT_ROLE_NAME in record.getMessage()
    assert "create-service-linked-role --aws-service-name spot.amazonaws.com" in record.getMessage()
    # The metric filter's fields (components/scaler_functions.py): the count and the environment.
    fields = record.__dict__
    assert (fields[SPOT_ROLE_METRIC], fields["environment"], fields["pool"]) == (1, "prod", "cpu-spot")


def test_a_pool_may_fail_over_on_it_but_only_by_naming_it_and_never_silently(caplog: pytest.LogCaptureFixture) -> None:
    ec2 = _Ec2()
    with caplog.at_level(logging.ERROR, logger="runner_estate.ec2"):
        result = Ec2Fleet(ec2=ec2, environment="prod").launch(spot_pool((*CAPACITY_ERRORS, SPOT_ROLE_ERROR)), 2, "token")
    assert ec2.markets == ["spot", "on-demand"]
    assert (result.failed_over, result.spot_role_missing, len(result.instance_ids)) == (True, True, 2)
    assert [r for r in caplog.records if r.levelno == logging.ERROR and "failing over to on-demand" in r.getMessage()]


def test_a_real_capacity_shortfall_still_fails_over() -> None:
    ec2 = _Ec2({"ErrorCode": "InsufficientInstanceCapacity", "ErrorMessage": "We currently do not have sufficient capacity."})
    result = Ec2Fleet(ec2=ec2, environment="prod").launch(spot_pool(), 2, "token")
    assert ec2.markets == ["spot", "on-demand"]
    assert (result.failed_over, result.spot_role_missing) == (True, False)
    assert result.counts()[SPOT_ROLE_METRIC] == 0


def test_other_errors_raised_by_create_fleet_still_raise() -> None:
    ec2 = _Ec2({"ErrorCode": "InvalidLaunchTemplateId.NotFound", "ErrorMessage": "no such template"}, raises=True)
    with pytest.raises(_ClientError):
        Ec2Fleet(ec2=ec2, environment="prod").launch(spot_pool(), 1, "token")


def test_the_spot_role_error_is_recognised_whatever_carries_it() -> None:
    assert is_spot_role_error(SPOT_ROLE_ERROR)
    assert is_spot_role_error(f"Client.{SPOT_ROLE_ERROR}")
    assert is_spot_role_error("UnfulfillableCapacity", ROLE_MESSAGE)
    assert not is_spot_role_error("UnfulfillableCapacity", "There is no Spot capacity available that matches your request.")
    assert not is_spot_role_error("InsufficientInstanceCapacity")


def test_the_preflight_verdict_for_doctor() -> None:
    assert spot_role_finding([SPOT_ROLE_NAME, "other"], ["cpu-spot"], created_by_stack=False)[0] == "ok"
    assert spot_role_finding([], [], created_by_stack=False)[0] == "ok"
    assert spot_role_finding([], ["cpu-spot"], created_by_stack=True)[0] == "warn"
    verdict, detail = spot_role_finding(["other"], ["cpu-spot", "gpu-spot"], created_by_stack=False)
    assert verdict == "fail"
    assert "cpu-spot, gpu-spot" in detail
    assert "create-service-linked-role" in detail


# ---- who creates the role -----------------------------------------------------------------

STACK: dict[str, Any] = {
    "environment": "prod",
    "region": "us-east-1",
    "github": {"org": "example-org", "app_id": 42},
    "secrets": {"github_app_private_key": "/x/key", "webhook_secret": "/x/hook"},
}
ASKS = MINIMAL_POOL.replace("  runners_maximum_count: 4\n", "  runners_maximum_count: 4\n  create_service_linked_role_spot: true\n")


def plan(tmp_path: Path, pools: dict[str, str], **stack: Any) -> tuple[bool, list[str]]:
    estate = load_estate([write_pool(tmp_path, name, text) for name, text in pools.items()])
    decided, warnings = plan_spot_role(parse_stack_config({**STACK, **stack}, "Pulumi.prod.yaml"), estate, "Pulumi.prod.yaml")
    return decided.create, [str(w) for w in warnings]


def test_nothing_is_created_unless_asked(tmp_path: Path) -> None:
    """The role is account-wide and creating it when it exists fails: never a default."""
    assert plan(tmp_path, {"cpu": MINIMAL_POOL}) == (False, [])


def test_the_upstream_pool_key_asks_for_it_and_is_acted_on(tmp_path: Path) -> None:
    assert plan(tmp_path, {"cpu": ASKS, "cpu-b": ASKS}) == (True, [])
    pool_warnings = [str(w) for w in load_estate([write_pool(tmp_path, "cpu", ASKS)]).warnings]
    assert not [w for w in pool_warnings if "create_service_linked_role_spot" in w]  # no longer "not acted on"


def test_the_stack_key_decides_over_the_pools(tmp_path: Path) -> None:
    assert plan(tmp_path, {"cpu": MINIMAL_POOL}, create_service_linked_role_spot=True) == (True, [])
    created, warnings = plan(tmp_path, {"cpu": ASKS}, create_service_linked_role_spot=False)
    assert created is False
    (warning,) = warnings
    assert "runner-estate:create_service_linked_role_spot" in warning
    assert "cpu" in warning


def test_the_stack_key_is_a_boolean() -> None:
    with pytest.raises(ConfigError) as info:
        parse_stack_config({**STACK, "create_service_linked_role_spot": "maybe"}, "Pulumi.prod.yaml")
    assert info.value.key == "runner-estate:create_service_linked_role_spot"


def program(tmp_path: Path, pools: dict[str, str], **stack: Any) -> list[Registered]:
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, text in pools.items():
        write_pool(configs, name, text)
    config: dict[str, Any] = {
        "aws:region": "us-east-1",
        "runner-estate:environment": "prod",
        "runner-estate:github": {"org": "example", "app_id": 1, "installation_id": 2},
        "runner-estate:secrets": {"github_app_private_key": "/k", "webhook_secret": "/w"},
        "runner-estate:github_app_key": {"secure": "v1:x"},
        "runner-estate:webhook_secret_value": {"secure": "v1:y"},
        "runner-estate:runner_configs": str(configs),
        **{f"runner-estate:{k}": v for k, v in stack.items()},
    }
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump({"config": config}), encoding="utf-8")
    return run_program(PROJECT_DIR, "prod", stack_path=path).records


def test_the_program_creates_one_role_for_spot_when_pools_ask(tmp_path: Path) -> None:
    records = program(tmp_path, {"cpu": ASKS, "cpu-b": ASKS})
    (role,) = [r for r in records if r.type == "aws:iam/serviceLinkedRole:ServiceLinkedRole"]
    assert role.inputs["awsServiceName"] == "spot.amazonaws.com"
    assert role.parent == "scaler"
    # The missing role is a metric from both launching functions' logs, and an alarm.
    filters = [r for r in records if r.type == "aws:cloudwatch/logMetricFilter:LogMetricFilter"]
    assert sorted(f.inputs["logGroupName"] for f in filters) == [
        "/aws/lambda/runner-estate-prod-reconcile",
        "/aws/lambda/runner-estate-prod-scale-up",
    ]
    for f in filters:
        assert f.inputs["pattern"] == "{ $.spot_role_missing = 1 }"
        assert f.inputs["metricTransformation"]["dimensions"] == {"environment": "$.environment"}
    (alarm,) = [r for r in records if r.type.endswith(":MetricAlarm") and r.inputs["metricName"] == SPOT_ROLE_METRIC]
    assert alarm.inputs["dimensions"] == {"environment": "prod"}


def test_the_program_creates_no_role_by_default(tmp_path: Path) -> None:
    records = program(tmp_path, {"cpu": MINIMAL_POOL})
    assert not [r for r in records if r.type == "aws:iam/serviceLinkedRole:ServiceLinkedRole"]
