"""A hostile job, played through IAM: what the credentials of the host a job runs on let it do.

moto evaluates no IAM conditions, so the real documents the program registers (the offline
preview of the prod stack) are evaluated with tests/iam_eval.py. Everything is discovered from
the program rather than listed here: every role EC2 may assume is a role a job holds (runner
hosts, capacity-block nodes); every SQS queue, SecureString, role and Lambda function of the
program is a target. A new queue or secret is covered the day it is added; a queue a job may
send to by design has to be named in MAY_SEND.

Instances carry the tags our launch code gives them (the real Ec2Fleet and BlockEc2 adapters
launch into a recorder, on top of the launch template's tags), and runner configs the name and
tag JitParameters gives them. Mock ARNs are rewritten to the ARNs AWS would assign, so that
wildcards in the documents meet realistic names.

Each attack also has a positive control (a host reads its own config; the scaler terminates its
own hosts), so a mistake in the setup cannot make every request look denied.

Not covered here, because IAM cannot express it: the slots of one capacity-block node share one
instance ARN, so the node role reads every slot's config on that node; 17.3 keeps the node
role's credentials away from jobs instead (lambda_src/host).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from estate.config.loader import load_estate
from estate.config.pool import Pool
from estate.derive.control_config import jit_parameter_prefix, pool_settings
from estate.local.aws_models import checked
from estate.preview import Registered, run_program
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.aws.ec2_fleet import Ec2Fleet
from lambda_src.aws.jit_parameters import JitParameters
from lambda_src.core.block_planner import Block
from tests.conftest import EXAMPLE_CONFIGS, PROJECT_DIR
from tests.iam_eval import ContextValue, Decision, Request, decide

ACCOUNT, REGION, ENV = "123456789012", "us-east-1", "prod"
POOLS = {p.name: p for p in load_estate([EXAMPLE_CONFIGS]).pools}
CB_POOLS = sorted(n for n, p in POOLS.items() if p.capacity_type == "capacity-block")
HOST_POOLS = sorted(n for n, p in POOLS.items() if p.capacity_type != "capacity-block")
INSTANCE_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/"


def may_send(pool: str) -> set[str]:
    """Queues a job on a host of `pool` may send to by design: its own node's slot reports
    (where the program has such a queue), never a job queue or the EventBridge events queue."""
    return {f"runner-estate-{ENV}-{pool}-slot-reports"}


# ---- the world the program builds -----------------------------------------------------------


@dataclass(frozen=True)
class Role:
    name: str
    arn: str
    documents: list[dict[str, Any]]
    trusted: str  # the service that assumes it
    pool: str | None  # the pool whose hosts hold it


@dataclass(frozen=True)
class Instance:
    id: str
    pool: str
    tags: Mapping[str, str]

    @property
    def arn(self) -> str:
        return f"{INSTANCE_ARN}{self.id}"


@dataclass(frozen=True)
class Parameter:
    name: str
    tags: Mapping[str, str]

    @property
    def arn(self) -> str:
        return f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{self.name}"


@dataclass
class World:
    roles: dict[str, Role]
    queues: dict[str, str]  # queue name -> ARN
    queue_policies: dict[str, dict[str, Any]]  # queue ARN -> its policy
    secrets: list[Parameter]  # every SecureString of the program
    table_arn: str
    functions: list[str]  # Lambda ARNs
    attachments: list[Registered] = field(default_factory=list)

    def decide(self, role: Role, action: str, resource: str, context: Mapping[str, ContextValue] = {}) -> Decision:
        return decide(Request(action, resource, context, principal=role.arn), role.documents, self.queue_policies.get(resource))


def _mock_arn(record: Registered) -> str:
    service = record.type.split(":")[1].split("/")[0]
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{record.name}"


def _real_arn(record: Registered) -> str | None:
    """The ARN AWS would give the resource (the mocks give every resource a made-up one)."""
    name = str(record.inputs.get("name") or record.name)
    return {
        "aws:ssm/parameter:Parameter": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{name.lstrip('/')}",
        "aws:sqs/queue:Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        "aws:dynamodb/table:Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
        "aws:cloudwatch/logGroup:LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}",
        "aws:cloudwatch/eventRule:EventRule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}",
        "aws:iam/role:Role": f"arn:aws:iam::{ACCOUNT}:role{record.inputs.get('path') or '/'}{name}",
        "aws:lambda/function:Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
    }.get(record.type)


def _realistic(text: str, arns: Mapping[str, str]) -> str:
    for mock in sorted(arns, key=len, reverse=True):
        text = re.sub(re.escape(mock) + r'(?=["/:])', arns[mock], text)
    return text


def build_world(records: list[Registered]) -> World:
    arns = {_mock_arn(r): real for r in records if (real := _real_arn(r)) is not None}
    by_type: dict[str, list[Registered]] = {}
    for r in records:
        by_type.setdefault(r.type.split(":")[-1], []).append(r)

    def documents_of(role: Registered) -> list[dict[str, Any]]:
        keys = {role.name, f"{role.name}-id", _mock_arn(role)}
        return [json.loads(_realistic(p.inputs["policy"], arns)) for p in by_type.get("RolePolicy", []) if p.inputs.get("role") in keys]

    roles = {}
    for r in by_type["Role"]:
        trust = json.loads(r.inputs["assumeRolePolicy"])["Statement"][0]["Principal"]["Service"]
        pool = r.parent if r.parent in POOLS and trust == "ec2.amazonaws.com" else None
        roles[r.name] = Role(r.name, str(_real_arn(r)), documents_of(r), trust, pool)
    queues = {str(q.inputs["name"]): str(_real_arn(q)) for q in by_type["Queue"]}
    by_url = {f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}": arn for name, arn in queues.items()}
    policies = {by_url[p.inputs["queueUrl"]]: json.loads(_realistic(p.inputs["policy"], arns)) for p in by_type.get("QueuePolicy", [])}
    secrets = [
        Parameter(str(p.inputs["name"]), p.inputs.get("tags") or {}) for p in by_type["Parameter"] if p.inputs.get("type") == "SecureString"
    ]
    (table,) = by_type["Table"]
    attachments = [r for r in records if "PolicyAttachment" in r.type or r.inputs.get("managedPolicyArns")]
    return World(roles, queues, policies, secrets, str(_real_arn(table)), [str(_real_arn(f)) for f in by_type["Function"]], attachments)


class _LaunchRecorder:
    """Stands in for EC2 at the boundary: keeps what our launch code asks for."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def create_fleet(self, **request: Any) -> dict[str, Any]:
        checked("ec2", "CreateFleet", request)
        self.requests.append(request)
        return {"Instances": [{"InstanceIds": ["i-0"]}]}

    def run_instances(self, **request: Any) -> dict[str, Any]:
        checked("ec2", "RunInstances", request)
        self.requests.append(request)
        return {"Instances": [{"InstanceId": "i-0", "LaunchTime": 0.0}]}

    def describe_subnets(self, SubnetIds: list[str]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        checked("ec2", "DescribeSubnets", {"SubnetIds": SubnetIds})
        return {"Subnets": [{"SubnetId": s, "AvailabilityZone": f"{REGION}a"} for s in SubnetIds]}


def launch_requests(pool: Pool) -> list[dict[str, Any]]:
    """What our launch code asks EC2 for a host of `pool`: a fresh host (CreateFleet), then a
    warm instance (RunInstances); or a capacity-block node (RunInstances into its block)."""
    ec2 = _LaunchRecorder()
    settings = pool_settings(pool, "lt-0", ("subnet-a",), "https://queue", security_group_ids=("sg-0",))
    if pool.capacity_type == "capacity-block":
        (named, *_) = settings.reservation_ids  # every example block pool names its block
        block = Block(named, pool.instance_types[0].name, f"{REGION}a", 1, 1, "active", 0.0, 1.0)
        BlockEc2(ec2=ec2, environment=ENV).launch(settings, block, 1, "token")
    else:
        Ec2Fleet(ec2=ec2, environment=ENV).launch(settings, 1, "token")
        Ec2Fleet(ec2=ec2, environment=ENV).launch_warm(settings, 1, "token")
    return ec2.requests


def launch_tags(pool: Pool, template: Registered) -> dict[str, str]:
    """The tags an instance of `pool` has: its launch template's, under those the launch call sets."""
    request = launch_requests(pool)[0]
    tags = {k: v for spec in template.inputs["tagSpecifications"] if spec["resourceType"] == "instance" for k, v in spec["tags"].items()}
    for spec in request["TagSpecifications"]:
        if spec["ResourceType"] == "instance":
            tags.update({t["Key"]: t["Value"] for t in spec["Tags"]})
    return tags


def instance_id(pool: str, n: int) -> str:
    return "i-0" + hashlib.sha256(f"{pool}/{n}".encode()).hexdigest()[:16]


class _ParameterRecorder:
    def __init__(self) -> None:
        self.put: list[dict[str, Any]] = []

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        assert operation == "PutParameter"
        checked("ssm", operation, body)
        self.put.append(body)
        return {}


def runner_config(instance: Instance, slot: int | None = None) -> Parameter:
    """The parameter our scaler (or block manager) writes for one host (or slot), as JitParameters writes it."""
    ssm = _ParameterRecorder()
    JitParameters(ssm=ssm, prefix=jit_parameter_prefix(ENV), instance_arn_prefix=INSTANCE_ARN).put(instance.id, "{}", slot)
    (body,) = ssm.put
    return Parameter(body["Name"], {t["Key"]: t["Value"] for t in body["Tags"]})


@pytest.fixture(scope="module")
def records() -> list[Registered]:
    return run_program(PROJECT_DIR, "prod").records


@pytest.fixture(scope="module")
def world(records: list[Registered]) -> World:
    return build_world(records)


@pytest.fixture(scope="module")
def instances(records: list[Registered]) -> dict[str, list[Instance]]:
    """Two live instances of every pool."""
    templates = {r.parent: r for r in records if r.type == "aws:ec2/launchTemplate:LaunchTemplate"}
    return {
        name: [Instance(instance_id(name, n), name, launch_tags(pool, templates[name])) for n in (1, 2)] for name, pool in POOLS.items()
    }


# ---- a job, and what it may ask -------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    role: Role
    host: Instance

    @property
    def context(self) -> dict[str, ContextValue]:
        """What every request signed with the host's role credentials carries."""
        return {"aws:PrincipalArn": self.role.arn, "ec2:SourceInstanceARN": self.host.arn, "aws:RequestedRegion": REGION}


def tag_context(tags: Mapping[str, str], service: str) -> dict[str, ContextValue]:
    found: dict[str, ContextValue] = {f"aws:ResourceTag/{k}": v for k, v in tags.items()}
    return found | {f"{service}:ResourceTag/{k}": v for k, v in tags.items()}


IMAGE_BUILD_ROLE = "images-build-role"  # held by Image Builder's build and test instances: no job runs there


def jobs(world: World, instances: dict[str, list[Instance]]) -> Iterator[Job]:
    ec2_roles = [r for r in world.roles.values() if r.trusted == "ec2.amazonaws.com"]
    assert {r.name for r in ec2_roles if r.pool is None} == {IMAGE_BUILD_ROLE}
    held = [r for r in ec2_roles if r.pool is not None]
    assert {r.pool for r in held} == set(POOLS), "every pool's hosts hold a role of the program"
    for role in held:
        assert role.pool is not None
        yield Job(role, instances[role.pool][0])


Attempt = tuple[str, str, dict[str, ContextValue]]  # action, resource, context


def permitted(world: World, instances: dict[str, list[Instance]], attempts: Callable[[Job], Iterator[Attempt]]) -> list[str]:
    """Every attempt some job's credentials allow, as a readable line."""
    found = []
    for job in jobs(world, instances):
        for action, resource, context in attempts(job):
            if world.decide(job.role, action, resource, {**job.context, **context}) is Decision.ALLOW:
                found.append(f"{job.role.name} on {job.host.id}: {action} {resource}")
    return found


def other_hosts(job: Job, instances: dict[str, list[Instance]]) -> list[Instance]:
    return [i for pool in instances.values() for i in pool if i.id != job.host.id]


READ_PARAMETER = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory")


def test_there_is_no_managed_policy_the_evaluator_cannot_see(world: World) -> None:
    assert world.attachments == []


def test_a_host_reads_and_deletes_its_own_runner_config(world: World, instances: dict[str, list[Instance]]) -> None:
    """The positive control: without it, a wrong setup would make every request look denied."""
    for job in jobs(world, instances):
        own = [runner_config(job.host)] + ([runner_config(job.host, 0), runner_config(job.host, 3)] if job.host.pool in CB_POOLS else [])
        for parameter in own:
            for action in ("ssm:GetParameter", "ssm:DeleteParameter"):
                decision = world.decide(job.role, action, parameter.arn, {**job.context, **tag_context(parameter.tags, "ssm")})
                assert decision is Decision.ALLOW, f"{job.role.name}: {action} {parameter.name}"


def test_a_job_cannot_read_retag_or_overwrite_another_hosts_or_slots_config(world: World, instances: dict[str, list[Instance]]) -> None:
    def attempts(job: Job) -> Iterator[Attempt]:
        for other in other_hosts(job, instances):
            for parameter in (runner_config(other), runner_config(other, 1)):
                context = tag_context(parameter.tags, "ssm")
                for action in (
                    *READ_PARAMETER,
                    "ssm:DeleteParameter",
                    "ssm:PutParameter",
                    "ssm:AddTagsToResource",
                    "ssm:LabelParameterVersion",
                ):
                    yield action, parameter.arn, context
                # Retagging it with the job's own host ARN would pass the tag condition.
                yield "ssm:AddTagsToResource", parameter.arn, {**context, "aws:TagKeys": ("runner-estate:instance-arn",)}

    assert permitted(world, instances, attempts) == []


def test_a_job_cannot_write_a_config_for_a_host_yet_to_boot(world: World, instances: dict[str, list[Instance]]) -> None:
    def attempts(job: Job) -> Iterator[Attempt]:
        parameter = runner_config(Instance("i-0ffffffffffffffff", job.host.pool, {}))
        yield "ssm:PutParameter", parameter.arn, {"aws:RequestTag/runner-estate:instance-arn": job.host.arn}
        yield "ssm:PutParameter", parameter.arn, {}

    assert permitted(world, instances, attempts) == []


def test_a_job_cannot_read_the_app_key_the_webhook_secret_or_any_secret(world: World, instances: dict[str, list[Instance]]) -> None:
    assert {"/runner-estate/prod/github-app/private-key", "/runner-estate/prod/github-app/webhook-secret"} <= {
        s.name for s in world.secrets
    }

    def attempts(job: Job) -> Iterator[Attempt]:
        for secret in world.secrets:
            for action in (*READ_PARAMETER, "ssm:DeleteParameter", "ssm:PutParameter", "ssm:AddTagsToResource"):
                yield action, secret.arn, tag_context(secret.tags, "ssm")

    assert permitted(world, instances, attempts) == []


def _queue_attempts(world: World, events: bool) -> Callable[[Job], Iterator[Attempt]]:
    def attempts(job: Job) -> Iterator[Attempt]:
        for name, arn in world.queues.items():
            if name.endswith("-events") is events and name not in may_send(job.host.pool):
                for action in ("sqs:SendMessage", "sqs:SendMessageBatch", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:PurgeQueue"):
                    yield action, arn, {}

    return attempts


def test_a_node_reports_on_its_own_pools_reports_queue(world: World, instances: dict[str, list[Instance]]) -> None:
    """The positive control of the queue tests, where the program has a reports queue."""
    for job in jobs(world, instances):
        for name in may_send(job.host.pool) & set(world.queues):
            assert world.decide(job.role, "sqs:SendMessage", world.queues[name], job.context) is Decision.ALLOW, name


def test_a_job_cannot_touch_the_job_queues_or_any_queue_but_its_reports(world: World, instances: dict[str, list[Instance]]) -> None:
    """Forged jobs would launch hosts; a received or deleted message would strand a job."""
    assert any(name.endswith(f"-{HOST_POOLS[0]}") for name in world.queues)
    assert permitted(world, instances, _queue_attempts(world, events=False)) == []


def test_a_job_cannot_send_to_the_capacity_block_events_queues(world: World, instances: dict[str, list[Instance]]) -> None:
    """Only EventBridge may deliver there: a forged expiration warning drains a block for good (17.2)."""
    assert [n for n in world.queues if n.endswith("-events")], "the example estate has capacity-block pools"
    assert permitted(world, instances, _queue_attempts(world, events=True)) == []


EC2_ON_INSTANCES = ("ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances", "ec2:RebootInstances",
                    "ec2:ModifyInstanceAttribute", "ec2:CreateTags", "ec2:DeleteTags")  # fmt: skip


def test_a_job_cannot_tag_stop_or_terminate_any_instance(world: World, instances: dict[str, list[Instance]]) -> None:
    """Its own host included: retagging it (another pool, another environment) would steer the control plane."""

    def attempts(job: Job) -> Iterator[Attempt]:
        for target in [job.host, *other_hosts(job, instances)]:
            context = tag_context(target.tags, "ec2")
            for action in EC2_ON_INSTANCES:
                yield action, target.arn, {**context, "aws:TagKeys": ("runner-estate:pool",), "aws:RequestTag/runner-estate:pool": "x"}

    assert permitted(world, instances, attempts) == []


def test_a_job_cannot_write_or_read_the_ledger(world: World, instances: dict[str, list[Instance]]) -> None:
    actions = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "GetItem", "Query", "Scan")

    def attempts(job: Job) -> Iterator[Attempt]:
        for resource in (world.table_arn, f"{world.table_arn}/index/open"):
            yield from ((f"dynamodb:{a}", resource, {}) for a in actions)

    assert permitted(world, instances, attempts) == []


def test_a_job_cannot_pass_roles_launch_or_change_the_control_plane(world: World, instances: dict[str, list[Instance]]) -> None:
    ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"

    def attempts(job: Job) -> Iterator[Attempt]:
        for role in world.roles.values():
            yield "iam:PassRole", role.arn, {"iam:PassedToService": role.trusted}
        for action, resource in (
            ("ec2:CreateLaunchTemplate", f"{ec2}:launch-template/*"),
            ("ec2:CreateLaunchTemplateVersion", f"{ec2}:launch-template/lt-0"),
            ("ec2:ModifyLaunchTemplate", f"{ec2}:launch-template/lt-0"),
            ("ec2:RunInstances", f"{ec2}:instance/*"),
            ("ec2:CreateFleet", f"{ec2}:fleet/*"),
            ("ec2:PurchaseCapacityBlock", f"{ec2}:capacity-reservation/*"),
        ):
            yield action, resource, {}
        for function in world.functions:
            for action in ("lambda:InvokeFunction", "lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration"):
                yield action, function, {}

    assert permitted(world, instances, attempts) == []


# ---- the image builds (issue 20) --------------------------------------------------------------


def test_an_image_build_reads_no_secret_and_touches_no_instance_queue_or_ledger(world: World, instances: dict[str, list[Instance]]) -> None:
    """A build runs downloads from the internet as root: its role may run the SSM agent, read
    components and write build logs, and reach nothing of the estate."""
    role = world.roles[IMAGE_BUILD_ROLE]
    context: dict[str, ContextValue] = {"aws:PrincipalArn": role.arn, "aws:RequestedRegion": REGION}
    attempts: list[tuple[str, str, dict[str, ContextValue]]] = []
    for secret in world.secrets:
        attempts += [(a, secret.arn, tag_context(secret.tags, "ssm")) for a in (*READ_PARAMETER, "ssm:PutParameter")]
    for pool in instances.values():
        for host in pool:
            attempts += [(a, host.arn, tag_context(host.tags, "ec2")) for a in EC2_ON_INSTANCES]
            attempts.append(("ssm:GetParameter", runner_config(host).arn, tag_context(runner_config(host).tags, "ssm")))
    attempts += [(a, arn, {}) for arn in world.queues.values() for a in ("sqs:SendMessage", "sqs:ReceiveMessage")]
    attempts += [(f"dynamodb:{a}", world.table_arn, {}) for a in ("PutItem", "GetItem", "Scan")]
    attempts += [("iam:PassRole", r.arn, {"iam:PassedToService": r.trusted}) for r in world.roles.values()]
    attempts.append(("ssm:PutParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/runner-estate/prod/images/cpu-x86_64", {}))
    allowed = [f"{a} {r}" for a, r, c in attempts if world.decide(role, a, r, {**context, **c}) is Decision.ALLOW]
    assert allowed == []
    component = f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:component/images-cpu-x86_64-os-abc1234/1.0.0/1"
    assert world.decide(role, "imagebuilder:GetComponent", component, context) is Decision.ALLOW  # the positive control


def test_only_the_launching_functions_resolve_the_images(world: World, instances: dict[str, list[Instance]]) -> None:
    """EC2 resolves `resolve:ssm:` with the caller's ssm:GetParameters: the scaler (and the block
    manager) may read the image parameters, and nothing else there; no job may."""
    parameter = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/runner-estate/prod/images/nvidia-x86_64"
    for name in ("scaler-scale_up-role", "scaler-reconcile-role", "scaler-cb_scale_up-role"):
        role = world.roles[name]
        assert world.decide(role, "ssm:GetParameters", parameter, {"aws:RequestedRegion": REGION}) is Decision.ALLOW, name
        assert world.decide(role, "ssm:PutParameter", parameter, {"aws:RequestedRegion": REGION}) is not Decision.ALLOW, name

    def attempts(job: Job) -> Iterator[Attempt]:
        yield from ((a, parameter, {}) for a in (*READ_PARAMETER, "ssm:PutParameter"))

    assert permitted(world, instances, attempts) == []


# ---- the control plane: each controller ends only what it owns (17.1) -----------------------

SCALER = ("scaler-scale_up-role", "scaler-reconcile-role", "scaler-scale_down-role")
BLOCK_MANAGER = ("scaler-cb_scale_up-role", "scaler-cb_manager-role")


def terminable(world: World, role: str, targets: list[Instance]) -> list[str]:
    found = []
    for target in targets:
        context = {"aws:PrincipalArn": world.roles[role].arn, "aws:RequestedRegion": REGION, **tag_context(target.tags, "ec2")}
        if world.decide(world.roles[role], "ec2:TerminateInstances", target.arn, context) is Decision.ALLOW:
            found.append(f"{target.pool}/{target.id}")
    return found


@pytest.mark.parametrize("role", SCALER)
def test_the_scaler_ends_its_hosts_and_never_a_capacity_block_node(world: World, instances: dict[str, list[Instance]], role: str) -> None:
    hosts = [i for p in HOST_POOLS for i in instances[p]]
    assert terminable(world, role, hosts) == [f"{i.pool}/{i.id}" for i in hosts]  # the positive control
    assert terminable(world, role, [i for p in CB_POOLS for i in instances[p]]) == []


def warm(target: Instance) -> Instance:
    """The same instance launched into its pool's stopped warm pool (lambda_src/aws/ec2_fleet.launch_warm)."""
    return Instance(target.id, target.pool, {**target.tags, "runner-estate:warm": "true"})


def startable(world: World, role: str, targets: list[Instance]) -> list[str]:
    found = []
    for target in targets:
        context = {"aws:PrincipalArn": world.roles[role].arn, "aws:RequestedRegion": REGION, **tag_context(target.tags, "ec2")}
        if world.decide(world.roles[role], "ec2:StartInstances", target.arn, context) is Decision.ALLOW:
            found.append(f"{target.pool}/{target.id}")
    return found


@pytest.mark.parametrize("role", ["scaler-scale_up-role", "scaler-reconcile-role"])
def test_the_scaler_starts_only_its_own_warm_instances(world: World, instances: dict[str, list[Instance]], role: str) -> None:
    hosts = [i for p in HOST_POOLS for i in instances[p]]
    assert startable(world, role, [warm(i) for i in hosts]) == [f"{i.pool}/{i.id}" for i in hosts]  # the positive control
    assert startable(world, role, hosts) == []  # not warm: an ordinary host is never started again
    assert startable(world, role, [warm(i) for p in CB_POOLS for i in instances[p]]) == []
    staging = {
        "runner-estate:managed": "true",
        "runner-estate:environment": "staging",
        "runner-estate:pool": HOST_POOLS[0],
        "runner-estate:warm": "true",
    }
    assert startable(world, role, [Instance("i-0bbbbbbbbbbbbbbbb", HOST_POOLS[0], staging)]) == []


def test_a_job_cannot_start_or_stop_a_warm_instance(world: World, instances: dict[str, list[Instance]]) -> None:
    """A job on a host must not wake (bill) or stop the stopped warm pool, its own pool's included."""

    def attempts(job: Job) -> Iterator[Attempt]:
        for target in [warm(i) for p in HOST_POOLS for i in instances[p]]:
            for action in ("ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances", "ec2:ModifyInstanceAttribute"):
                yield action, target.arn, tag_context(target.tags, "ec2")

    assert permitted(world, instances, attempts) == []


# ---- launching: from our templates, only instances tagged as the caller's pools --------------

LAUNCHERS = {"scaler-scale_up-role": HOST_POOLS, "scaler-reconcile-role": HOST_POOLS, **dict.fromkeys(BLOCK_MANAGER, CB_POOLS)}
EC2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"


@dataclass(frozen=True)
class Launch:
    """One launch call our code makes, as IAM sees it: the actions EC2 authorizes (CreateFleet
    also authorizes RunInstances for the caller), the tags the request gives the instance, and
    the other resources it names or creates."""

    pool: str
    actions: tuple[str, ...]
    instance_tags: Mapping[str, str]
    uses: tuple[tuple[str, Mapping[str, ContextValue]], ...]  # (ARN, what IAM knows of it)


def launches_of(pool: Pool) -> list[Launch]:
    """Every launch call of `pool` (`launch_requests`), as IAM sees it."""
    found = []
    for request in launch_requests(pool):
        fleet = "LaunchTemplateConfigs" in request
        spot = request.get("TargetCapacitySpecification", {}).get("DefaultTargetCapacityType") == "spot"
        arns = [f"arn:aws:ec2:{REGION}::image/ami-0", f"{EC2}:subnet/subnet-a", f"{EC2}:security-group/sg-0",
                f"{EC2}:volume/*", f"{EC2}:network-interface/*"]  # fmt: skip
        arns += [f"{EC2}:fleet/*"] * fleet + [f"{EC2}:spot-instances-request/*"] * spot
        uses: list[tuple[str, Mapping[str, ContextValue]]] = [(arn, {}) for arn in arns]
        if (
            block_id := request.get("CapacityReservationSpecification", {})
            .get("CapacityReservationTarget", {})
            .get("CapacityReservationId")
        ):
            uses.append((f"{EC2}:capacity-reservation/{block_id}", {}))  # named in the pool's config
        (tags,) = [
            {t["Key"]: t["Value"] for t in spec["Tags"]} for spec in request["TagSpecifications"] if spec["ResourceType"] == "instance"
        ]
        actions = ("ec2:CreateFleet", "ec2:RunInstances") if fleet else ("ec2:RunInstances",)
        found.append(Launch(pool.name, actions, tags, tuple(uses)))
    return found


def refused_parts(world: World, role: str, launch: Launch, template_tags: Mapping[str, str], instance_tags: Mapping[str, str]) -> list[str]:
    """The resources of the launch IAM refuses the role (the launch fails if any is refused)."""
    context: dict[str, ContextValue] = {"aws:PrincipalArn": world.roles[role].arn, "aws:RequestedRegion": REGION}
    requested: dict[str, ContextValue] = {f"aws:RequestTag/{k}": v for k, v in instance_tags.items()}
    requested["aws:TagKeys"] = tuple(instance_tags)
    parts: list[tuple[str, Mapping[str, ContextValue]]] = [
        (f"{EC2}:launch-template/lt-0", tag_context(template_tags, "ec2")),
        (f"{EC2}:instance/*", requested),
        *launch.uses,
    ]
    return [
        f"{action} {arn}"
        for action in launch.actions
        for arn, extra in parts
        if world.decide(world.roles[role], action, arn, {**context, **extra}) is not Decision.ALLOW
    ]


@pytest.fixture(scope="module")
def template_tags(records: list[Registered]) -> dict[str, dict[str, str]]:
    """Each pool's launch template's own tags, as the program registers them."""
    return {r.parent: dict(r.inputs["tags"]) for r in records if r.type == "aws:ec2/launchTemplate:LaunchTemplate" and r.parent}


@pytest.mark.parametrize("role", sorted(LAUNCHERS))
def test_a_launching_role_makes_each_launch_of_its_own_pools(world: World, template_tags: dict[str, dict[str, str]], role: str) -> None:
    for name in LAUNCHERS[role]:
        for launch in launches_of(POOLS[name]):
            assert refused_parts(world, role, launch, template_tags[name], launch.instance_tags) == [], name


@pytest.mark.parametrize("role", sorted(LAUNCHERS))
def test_a_launching_role_cannot_launch_for_another_pool_environment_or_template(
    world: World, template_tags: dict[str, dict[str, str]], role: str
) -> None:
    """A controller turned hostile (a forged webhook, a bug) still launches only what its pools would."""
    own = LAUNCHERS[role][0]
    (launch, *_) = launches_of(POOLS[own])
    template, tags = template_tags[own], dict(launch.instance_tags)
    for other in (n for n in POOLS if n not in LAUNCHERS[role]):  # the other controller's pools
        assert refused_parts(world, role, launch, template_tags[other], tags), f"{other}'s template"
        assert refused_parts(world, role, launch, template, {**tags, "runner-estate:pool": other}), f"{other}'s tag"
    assert refused_parts(world, role, launch, template, {**tags, "runner-estate:environment": "staging"})
    assert refused_parts(world, role, launch, template, {k: v for k, v in tags.items() if k != "runner-estate:managed"})
    assert refused_parts(world, role, launch, template, {})
    assert refused_parts(world, role, launch, {"team": "someone-elses"}, tags)  # a template that is not ours
    elsewhere = dataclasses.replace(launch, uses=tuple((arn.replace(REGION, "eu-west-1"), c) for arn, c in launch.uses))
    assert refused_parts(world, role, elsewhere, template, tags)


def into_block(launch: Launch, block_id: str, block_tags: Mapping[str, str]) -> Launch:
    """The same node launch into another capacity reservation, tagged `block_tags`."""
    uses = [u for u in launch.uses if ":capacity-reservation/" not in u[0]]
    return dataclasses.replace(launch, uses=(*uses, (f"{EC2}:capacity-reservation/{block_id}", tag_context(block_tags, "ec2"))))


@pytest.mark.parametrize("role", BLOCK_MANAGER)
def test_the_block_manager_launches_into_its_named_or_bought_blocks_only(
    world: World, template_tags: dict[str, dict[str, str]], role: str
) -> None:
    """Not into another team's capacity reservation, however the request names it."""
    pool = CB_POOLS[0]
    (launch,) = launches_of(POOLS[pool])
    template, tags = template_tags[pool], launch.instance_tags
    bought = {"runner-estate:managed": "true", "runner-estate:environment": ENV, "runner-estate:pool": pool}
    assert refused_parts(world, role, into_block(launch, "cr-0ffffffffffffffff", bought), template, tags) == []
    assert refused_parts(world, role, into_block(launch, "cr-0ffffffffffffffff", {}), template, tags)
    assert refused_parts(
        world, role, into_block(launch, "cr-0ffffffffffffffff", {**bought, "runner-estate:environment": "staging"}), template, tags
    )
    assert refused_parts(
        world, role, into_block(launch, "cr-0ffffffffffffffff", {**bought, "runner-estate:pool": HOST_POOLS[0]}), template, tags
    )


@pytest.mark.parametrize("role", BLOCK_MANAGER)
def test_the_block_manager_ends_its_nodes_and_never_a_scaler_host(world: World, instances: dict[str, list[Instance]], role: str) -> None:
    nodes = [i for p in CB_POOLS for i in instances[p]]
    assert terminable(world, role, nodes) == [f"{i.pool}/{i.id}" for i in nodes]
    assert terminable(world, role, [i for p in HOST_POOLS for i in instances[p]]) == []


@pytest.mark.parametrize("role", [*SCALER, *BLOCK_MANAGER, "scaler-webhook-role", "scaler-redeliver-role", "scaler-sweep-role"])
def test_no_controller_ends_an_instance_that_is_not_ours(world: World, role: str) -> None:
    staging = {"runner-estate:managed": "true", "runner-estate:environment": "staging", "runner-estate:pool": HOST_POOLS[0]}
    foreign = [Instance("i-0aaaaaaaaaaaaaaaa", HOST_POOLS[0], {}), Instance("i-0bbbbbbbbbbbbbbbb", HOST_POOLS[0], staging)]
    assert terminable(world, role, foreign) == []


def test_the_webhook_reads_its_secret_and_never_the_app_key(world: World) -> None:
    role = world.roles["scaler-webhook-role"]
    verdicts = {s.name: world.decide(role, "ssm:GetParameter", s.arn, tag_context(s.tags, "ssm")) for s in world.secrets}
    assert verdicts["/runner-estate/prod/github-app/webhook-secret"] is Decision.ALLOW
    assert {n for n, d in verdicts.items() if d is Decision.ALLOW} == {"/runner-estate/prod/github-app/webhook-secret"}


# ---- what outlived its purpose: only the sweeper removes it, and only ours (21.3) ------------

SWEEPER = "scaler-sweep-role"


def _leftover(kind: str, tags: Mapping[str, str]) -> tuple[str, dict[str, ContextValue]]:
    resource = f"arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/{kind[:3]}-0123456789abcdef0"
    return resource, tag_context(tags, "ec2")


def test_a_job_cannot_delete_or_list_leftovers(world: World, instances: dict[str, list[Instance]]) -> None:
    ours = {"runner-estate:managed": "true", "runner-estate:environment": ENV, "runner-estate:pool": HOST_POOLS[0]}

    def attempts(job: Job) -> Iterator[Attempt]:
        for kind, action in (("volume", "ec2:DeleteVolume"), ("network-interface", "ec2:DeleteNetworkInterface")):
            for tags in (ours, {}):
                resource, context = _leftover(kind, tags)
                yield action, resource, context
        yield "ssm:DescribeParameters", "*", {}
        yield "ec2:DescribeVolumes", "*", {}

    assert permitted(world, instances, attempts) == []


def test_the_sweeper_deletes_only_this_environments_leftovers(world: World) -> None:
    role = world.roles[SWEEPER]
    ours = {"runner-estate:managed": "true", "runner-estate:environment": ENV, "runner-estate:pool": HOST_POOLS[0]}
    staging = {**ours, "runner-estate:environment": "staging"}
    for kind, action in (("volume", "ec2:DeleteVolume"), ("network-interface", "ec2:DeleteNetworkInterface")):
        verdicts = []
        for tags in (ours, staging, {}):
            resource, context = _leftover(kind, tags)
            verdicts.append(world.decide(role, action, resource, {"aws:PrincipalArn": role.arn, **context}))
        assert verdicts == [Decision.ALLOW, Decision.IMPLICIT_DENY, Decision.IMPLICIT_DENY], action


def test_the_sweeper_ends_hosts_and_removed_pools_never_a_configured_node(world: World, instances: dict[str, list[Instance]]) -> None:
    hosts = [i for p in HOST_POOLS for i in instances[p]]
    assert terminable(world, SWEEPER, hosts) == [f"{i.pool}/{i.id}" for i in hosts]
    removed = {**instances[HOST_POOLS[0]][0].tags, "runner-estate:pool": "a-pool-taken-out-of-the-config"}
    assert terminable(world, SWEEPER, [Instance("i-0dddddddddddddddd", "gone", removed)]) == ["gone/i-0dddddddddddddddd"]
    assert terminable(world, SWEEPER, [i for p in CB_POOLS for i in instances[p]]) == []
    staging = {**removed, "runner-estate:environment": "staging"}
    assert terminable(world, SWEEPER, [Instance("i-0eeeeeeeeeeeeeeee", "gone", staging), Instance("i-0ffffffffffffffff", "x", {})]) == []


# ---- spot interruption events: only our rule may bring them (21.1) ---------------------------


def test_only_our_eventbridge_rule_may_send_a_spot_interruption_warning(world: World) -> None:
    """A forged warning would retire a host and re-run its job. The queue's own policy denies
    every sender but the rule, even one whose identity policy allows sqs:SendMessage on it."""
    arn = world.queues[f"runner-estate-{ENV}-spot-events"]
    policy = world.queue_policies[arn]
    (rule_arn,) = policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert rule_arn.startswith(f"arn:aws:events:{REGION}:{ACCOUNT}:rule/")
    by_rule = Request("sqs:SendMessage", arn, {"aws:SourceArn": rule_arn}, service="events.amazonaws.com")
    assert decide(by_rule, (), policy) is Decision.ALLOW
    other_rule = Request("sqs:SendMessage", arn, {"aws:SourceArn": f"{rule_arn}-other"}, service="events.amazonaws.com")
    assert decide(other_rule, (), policy) is not Decision.ALLOW
    admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}
    insider = Request("sqs:SendMessage", arn, {}, principal=f"arn:aws:iam::{ACCOUNT}:role/admin")
    assert decide(insider, (admin,), policy) is Decision.EXPLICIT_DENY
