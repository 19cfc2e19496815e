"""The model check itself (estate/local/aws_models.py): it refuses what the services refuse, so the
check on every request of the suite cannot pass vacuously, and it is wired in everywhere."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from estate.local import aws_models
from estate.local.aws_models import ModelViolationError, check, problems, service_model, uncompilable_patterns
from estate.local.fake_block_ec2 import FakeBlockEc2
from lambda_src.aws.sigv4_client import SERVICES, AwsJsonClient

GOOD_FLEET: dict[str, Any] = {
    "Type": "instant",
    "ClientToken": "t-1",
    "LaunchTemplateConfigs": [
        {"LaunchTemplateSpecification": {"LaunchTemplateId": "lt-0", "Version": "$Default"}, "Overrides": [{"InstanceType": "m7i.2xlarge"}]}
    ],
    "TargetCapacitySpecification": {"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "spot"},
}

# The operations our code sends (lambda_src, estate/local): each must exist in its model, and
# every pattern in its input must be one this check can apply.
OUR_OPERATIONS = {
    "dynamodb": ["UpdateItem", "PutItem", "GetItem", "DeleteItem", "Query", "Scan", "CreateTable", "TransactWriteItems"],
    "sqs": ["SendMessage", "ReceiveMessage", "DeleteMessage", "GetQueueUrl", "GetQueueAttributes", "CreateQueue"],
    "ssm": ["PutParameter", "GetParameter", "DeleteParameter", "DescribeParameters", "ListTagsForResource"],
    "ec2": [
        "CreateFleet",
        "RunInstances",
        "DescribeInstances",
        "StartInstances",
        "TerminateInstances",
        "DescribeCapacityReservations",
        "DescribeSubnets",
        "DescribeCapacityBlockOfferings",
        "PurchaseCapacityBlock",
        "CreateLaunchTemplate",
        "CreateVpc",
        "CreateSubnet",
        "DescribeImages",
    ],
}


@pytest.fixture
def refusals() -> Iterator[list[str]]:
    """The violations this test provokes on purpose, taken off the suite-wide record."""
    yield aws_models.VIOLATIONS
    aws_models.VIOLATIONS.clear()


def test_a_valid_request_passes() -> None:
    check("ec2", "CreateFleet", GOOD_FLEET)
    check("ssm", "PutParameter", {"Name": "/runner-estate/prod/jit/i-0", "Value": "x" * 5000, "Type": "SecureString", "Tier": "Advanced"})


@pytest.mark.parametrize(
    ("service", "operation", "params", "reason"),
    [
        ("ssm", "PutParameter", {"Name": "/p", "Value": "v", "Typ": "SecureString"}, "Unknown parameter"),
        ("ssm", "PutParameter", {"Name": "/p", "Type": "SecureString"}, "Missing required parameter"),
        ("ssm", "PutParameter", {"Name": "/p", "Value": "v", "Tier": "advanced"}, "not one of ParameterTier"),
        ("ssm", "PutParameter", {"Name": "/" + "p" * 2048, "Value": "v"}, "length 2049, at most 2048"),
        ("ssm", "PutParameter", {"Name": "/p", "Value": "v", "Overwrite": "yes"}, "Invalid type"),
        ("ssm", "PutParameter", {"Name": "/p", "Value": "v", "Tags": [{"Key": "k", "Value": "a;b"}]}, "pattern"),
        ("ssm", "GetParameters", {"Names": [f"/p{i}" for i in range(11)]}, "11 items, at most 10"),
        ("sqs", "SendMessage", {"QueueUrl": "u", "MessageBody": "b", "DelaySeconds": "0"}, "Invalid type"),
        ("sqs", "ReceiveMessage", {"QueueUrl": "u", "WaitTimeSeconds": 20, "MessageSystemAttributeNames": ["Everything"]}, "not one of"),
        ("dynamodb", "UpdateItem", {"TableName": "t", "Key": {"pk": {"S": "x"}}, "ReturnValue": "ALL_NEW"}, "Unknown parameter"),
        ("dynamodb", "Query", {"TableName": "t", "IndexName": "by state", "KeyConditionExpression": "a = :a"}, "pattern"),
        ("ec2", "CreateFleet", {**GOOD_FLEET, "Type": "Instant"}, "not one of FleetType"),
        ("ec2", "DescribeCapacityReservations", {"MaxResults": 1001}, "above the maximum 1000"),
        ("ssm", "DescribeParameters", {"MaxResults": 51}, "above the maximum 50"),
        ("ec2", "TerminateInstance", {"InstanceIds": ["i-0"]}, "no operation"),
    ],
)
def test_a_request_the_service_refuses_is_refused(service: str, operation: str, params: dict[str, Any], reason: str) -> None:
    found = problems(service, operation, params)
    assert found, f"{service} {operation} {params} passed"
    assert any(reason in p for p in found), found


def test_an_instance_type_that_does_not_exist_is_refused_with_its_neighbours() -> None:
    config = {**GOOD_FLEET["LaunchTemplateConfigs"][0], "Overrides": [{"InstanceType": "m7g.24xlarge"}]}
    fleet = {**GOOD_FLEET, "LaunchTemplateConfigs": [config]}
    (found,) = problems("ec2", "CreateFleet", fleet)
    assert "'m7g.24xlarge' is not one of InstanceType" in found
    assert "m7g.16xlarge" in found


def test_a_sensitive_value_is_never_shown() -> None:
    (found,) = problems("ssm", "PutParameter", {"Name": "/p", "Value": "v", "Tier": "Basic", "Type": "SecureString"})
    assert "Basic" in found  # Tier is not sensitive
    secret = "ghs_secret-value"
    found_all = problems("ssm", "PutParameter", {"Name": "/p", "Value": secret, "AllowedPattern": "x" * 1025})
    assert found_all
    assert all(secret not in p for p in found_all)


def test_every_stdlib_client_request_is_checked_before_it_is_sent(refusals: list[str]) -> None:
    """No endpoint listens on port 9: the request is refused before any attempt to send it."""
    client = AwsJsonClient("ssm", "us-east-1", endpoint_url="http://127.0.0.1:9", attempts=1, sleep=lambda s: None)
    with pytest.raises(ModelViolationError, match="WithDecrypt"):
        client.call("GetParameter", {"Name": "/p", "WithDecrypt": True})
    assert len(refusals) == 1


def test_every_boto3_request_is_checked_too(refusals: list[str]) -> None:
    """botocore itself would let an unknown instance type through: the service refuses it."""
    import boto3

    ec2 = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x").client(
        "ec2", endpoint_url="http://127.0.0.1:9"
    )
    with pytest.raises(ModelViolationError, match="InstanceType"):
        ec2.create_launch_template(LaunchTemplateName="lt", LaunchTemplateData={"InstanceType": "m7g.24xlarge"})
    assert len(refusals) == 1


def test_our_ec2_fake_checks_what_it_is_handed(refusals: list[str]) -> None:
    fake = FakeBlockEc2(clock=lambda: 0.0, subnets={"subnet-a": "us-east-1a"})
    with pytest.raises(ModelViolationError, match="DefaultTargetCapacityType"):
        fake.create_fleet(**{**GOOD_FLEET, "TargetCapacitySpecification": {"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "Spot"}})
    with pytest.raises(ModelViolationError, match="MarketType"):
        fake.run_instances(MinCount=1, MaxCount=1, InstanceMarketOptions={"MarketType": "capacity_block"})
    assert len(refusals) == 2


def test_a_refusal_the_code_swallows_still_fails_the_test(refusals: list[str]) -> None:
    with contextlib.suppress(ModelViolationError):  # as a slot report's sender does: logged, not raised
        aws_models.checked("sqs", "SendMessage", {"QueueUrl": "u"})
    assert refusals, "the suite-wide fixture would fail this test"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_our_json_client_names_each_service_as_its_model_does(service: str) -> None:
    signing_name, version, target = SERVICES[service]
    meta = service_model(service).metadata
    assert meta["protocol"] == "json" or "json" in meta.get("protocols", [])
    assert (signing_name, version, target) == (meta.get("signingName", meta["endpointPrefix"]), meta["jsonVersion"], meta["targetPrefix"])


@pytest.mark.parametrize(("service", "operation"), [(s, o) for s, ops in OUR_OPERATIONS.items() for o in ops])
def test_every_pattern_of_the_operations_we_call_is_checked(service: str, operation: str) -> None:
    assert operation in service_model(service).operation_names
    assert uncompilable_patterns(service, operation) == []
