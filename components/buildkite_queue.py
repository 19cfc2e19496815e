"""BuildkiteQueue: one Buildkite Elastic CI Stack for AWS per agent queue, from the stack's
published template at a pinned version, in our network and with our defaults wherever the
template lets us choose (docs/buildkite.md lists where it does not)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from estate.config.buildkite_model import BuildkiteQueue as QueueConfig
from lambda_src.core.tags import POOL

TEMPLATE_URL = "https://s3.amazonaws.com/buildkite-aws-stack/{version}/aws-stack.yml"
# The template creates IAM roles with names and nests an AutoScaling scaler application.
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]


@dataclass(frozen=True)
class BuildkiteQueueArgs:
    queue: QueueConfig
    environment: str
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    agent_token_parameter: pulumi.Input[str]  # name of the SecureString holding the agent token
    log_retention_days: int
    tags: dict[str, str]


def stack_parameters(
    queue: QueueConfig, environment: str, vpc_id: str, subnet_ids: list[str], security_group_id: str, token_parameter: str, retention: int
) -> dict[str, str]:
    """The template's parameters for one queue: strings, as CloudFormation takes them."""
    s = queue.settings
    # `queue=` is not among them: the stack tags its agents with BuildkiteQueue itself.
    tags = {"runner-estate-environment": environment, **s.agent_tags}
    image: dict[str, str] = {}
    if s.image_id is not None:
        image["ImageId"] = s.image_id
    if s.image_id_parameter is not None:
        image["ImageIdParameter"] = s.image_id_parameter
    return {
        "BuildkiteQueue": s.queue,
        # A path, never the token: the instances read it from SSM at boot.
        "BuildkiteAgentTokenParameterStorePath": token_parameter,
        "BuildkiteAgentTags": ",".join(f"{k}={v}" for k, v in tags.items()),
        "VpcId": vpc_id,
        "Subnets": ",".join(subnet_ids),
        "SecurityGroupIds": security_group_id,
        "AssociatePublicIpAddress": "false",
        "KeyName": "",  # no SSH
        "InstanceOperatingSystem": "linux",
        "InstanceTypes": ",".join(s.instance_types),
        "MinSize": str(s.min_size),
        "MaxSize": str(s.max_size),
        "AgentsPerInstance": str(s.agents_per_instance),
        "OnDemandPercentage": "100" if s.capacity == "on-demand" else "0",
        "ScaleInIdlePeriod": str(s.scale_in_idle_seconds),
        "BuildkiteTerminateInstanceAfterJob": "true" if s.terminate_after_job else "false",
        "RootVolumeSize": str(s.root_volume_size_gb),
        "RootVolumeEncrypted": "true",
        "IMDSv2Tokens": "required",
        "LogRetentionDays": str(retention),
        "EnableCostAllocationTags": "true",
        "CostAllocationTagName": "runner-estate:environment",
        "CostAllocationTagValue": environment,
        **image,
    }


class BuildkiteQueue(pulumi.ComponentResource):
    stack_id: pulumi.Output[str]

    def __init__(self, name: str, args: BuildkiteQueueArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:BuildkiteQueue", name, None, opts)
        queue = args.queue
        parameters = pulumi.Output.all(args.vpc_id, args.subnet_ids, args.security_group_id, args.agent_token_parameter).apply(
            lambda v: stack_parameters(queue, args.environment, v[0], list(v[1]), v[2], v[3], args.log_retention_days)
        )
        extra_tags = {"buildkite:cluster": queue.settings.cluster_uuid} if queue.settings.cluster_uuid else {}
        stack = aws.cloudformation.Stack(
            f"{name}-stack",
            name=f"runner-estate-{args.environment}-bk-{queue.name}",
            template_url=TEMPLATE_URL.format(version=queue.settings.stack_version),
            parameters=parameters,
            capabilities=CAPABILITIES,
            # The queue is the estate's "pool" for cost allocation; the stack passes its tags to what it creates.
            tags={**args.tags, **extra_tags, "buildkite:queue": queue.settings.queue, POOL: queue.name},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.stack_id = stack.id
        self.register_outputs({"stack_id": self.stack_id})


@dataclass(frozen=True)
class BuildkiteQueuesArgs:
    queues: tuple[QueueConfig, ...]
    environment: str
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    agent_token: pulumi.Input[str]  # a Pulumi secret
    log_retention_days: int
    tags: dict[str, str]


class BuildkiteQueues(pulumi.ComponentResource):
    """Every queue of the estate, sharing one SecureString agent token."""

    stack_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: BuildkiteQueuesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:BuildkiteQueues", name, None, opts)
        token = aws.ssm.Parameter(
            f"{name}-agent-token",
            name=f"/runner-estate/{args.environment}/buildkite/agent-token",
            type="SecureString",
            value=pulumi.Output.secret(args.agent_token),
            description="Buildkite agent token; read by the queues' instances at boot",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.stack_ids = {
            queue.name: BuildkiteQueue(
                queue.name,
                BuildkiteQueueArgs(
                    queue,
                    args.environment,
                    args.vpc_id,
                    args.subnet_ids,
                    args.security_group_id,
                    token.name,
                    args.log_retention_days,
                    args.tags,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            ).stack_id
            for queue in args.queues
        }
        self.register_outputs({"stack_ids": self.stack_ids})
