"""Cost-allocation tags (issue 22.3): every resource the program registers that AWS bills carries
`runner-estate:environment`, and those of one pool (or Buildkite queue) `runner-estate:pool`, so
Cost Explorer and the stack's budget can split the bill. A new resource type must be placed in
one list or the other before the program may register it."""

from __future__ import annotations

import pytest

from estate.config.loader import load_estate
from estate.preview import Registered, run_program
from lambda_src.core.tags import ENVIRONMENT, POOL
from tests.conftest import EXAMPLE_CONFIGS, PROJECT_DIR

# AWS bills these (or, for a launch template and a CloudFormation stack, what they create).
BILLED = {
    "aws:budgets/budget:Budget": "after an account's first two, $0.02 a day",
    "aws:cloudformation/stack:Stack": "the Buildkite queue's instances, volumes and functions: the stack passes its tags on",
    "aws:cloudwatch/dashboard:Dashboard": "$3 a month; PutDashboard takes no tags (the one exception, below)",
    "aws:cloudwatch/logGroup:LogGroup": "ingestion and storage",
    "aws:cloudwatch/metricAlarm:MetricAlarm": "per alarm metric",
    "aws:dynamodb/table:Table": "requests and storage",
    "aws:ec2/capacityBlockReservation:CapacityBlockReservation": "the block's upfront fee",
    "aws:ec2/eip:Eip": "public IPv4 addresses",
    "aws:ec2/launchTemplate:LaunchTemplate": "free itself; the instances and volumes it launches are tagged by its tag specifications",
    "aws:ec2/natGateway:NatGateway": "hours and data processed",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "interface endpoints by the hour",
    "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": "the images it distributes: their EBS snapshots",
    "aws:imagebuilder/image:Image": "the build: its build and test instances, and the image's snapshots",
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": "the build instances, tagged by its resource tags",
    "aws:kms/key:Key": "a customer managed key by the month",
    "aws:lambda/function:Function": "requests and duration",
    "aws:sns/topic:Topic": "publishes and deliveries",
    "aws:sqs/queue:Queue": "requests",
    "aws:ssm/parameter:Parameter": "Advanced parameters and higher throughput",
}
NOT_BILLED = {
    "aws:cloudwatch/eventRule:EventRule",  # schedules and AWS service events on the default bus are free
    "aws:cloudwatch/eventTarget:EventTarget",
    "aws:cloudwatch/logMetricFilter:LogMetricFilter",
    "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/routeTable:RouteTable",
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:ec2/subnet:Subnet",
    "aws:ec2/vpc:Vpc",
    "aws:iam/instanceProfile:InstanceProfile",
    "aws:imagebuilder/component:Component",  # Image Builder itself is free: what a build runs on is billed
    "aws:imagebuilder/imagePipeline:ImagePipeline",
    "aws:imagebuilder/imageRecipe:ImageRecipe",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/serviceLinkedRole:ServiceLinkedRole",
    "aws:kms/alias:Alias",
    "aws:lambda/eventSourceMapping:EventSourceMapping",
    "aws:lambda/functionUrl:FunctionUrl",
    "aws:lambda/permission:Permission",
    "aws:sns/topicPolicy:TopicPolicy",
    "aws:sns/topicSubscription:TopicSubscription",
    "aws:sqs/queuePolicy:QueuePolicy",
    "github:index/actionsRunnerGroup:ActionsRunnerGroup",
    "github:index/organizationWebhook:OrganizationWebhook",
}
UNTAGGABLE = {"aws:cloudwatch/dashboard:Dashboard"}
ESTATE = load_estate([EXAMPLE_CONFIGS])
OWNERS = [p.name for p in ESTATE.pools] + [q.name for q in ESTATE.queues]


@pytest.fixture(scope="module", params=["prod", "staging"])
def records(request: pytest.FixtureRequest) -> list[Registered]:
    return run_program(PROJECT_DIR, str(request.param)).records


def owner(record: Registered) -> str | None:
    """The pool (or Buildkite queue) a resource is for: its fleet's or queue's component, or a
    per-pool resource of the scaler or the alarms, which are named after the pool."""
    for name in OWNERS:
        if record.parent == name or any(record.name.startswith(f"{c}-{name}-") for c in ("scaler", "estate-alarms")):
            return name
    return None


def test_every_registered_type_is_judged_billed_or_not(records: list[Registered]) -> None:
    types = {r.type for r in records if not r.type.startswith(("pulumi:providers:", "runner-estate:index:"))}
    assert sorted(types - set(BILLED) - NOT_BILLED) == []


def test_every_billed_resource_carries_the_environment_and_its_pool(records: list[Registered]) -> None:
    environment = next(r.inputs["tags"][ENVIRONMENT] for r in records if r.type == "aws:dynamodb/table:Table")
    checked = 0
    for r in records:
        if r.type not in BILLED or r.type in UNTAGGABLE:
            continue
        tags = r.inputs.get("tags", {})
        assert tags.get(ENVIRONMENT) == environment, r.name
        pool = owner(r)
        if pool is not None:
            assert tags.get(POOL) == pool, r.name
        checked += 1
    assert checked > 50


def test_what_a_launch_template_starts_carries_them_too(records: list[Registered]) -> None:
    templates = [r for r in records if r.type == "aws:ec2/launchTemplate:LaunchTemplate"]
    assert len(templates) == len(ESTATE.pools)
    for template in templates:
        specs = {s["resourceType"]: s["tags"] for s in template.inputs["tagSpecifications"]}
        assert {"instance", "volume"} <= set(specs), template.name
        for tags in specs.values():
            assert ENVIRONMENT in tags
            assert tags[POOL] == owner(template), template.name


def test_each_pool_owns_resources(records: list[Registered]) -> None:
    """The ownership rule above finds every pool's resources (a renamed component would hide them)."""
    owned = {owner(r) for r in records if r.type in BILLED}
    assert set(OWNERS) <= owned
