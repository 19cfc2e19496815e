"""IAM policy documents for runner hosts, as plain data: least privilege, no wildcard actions.

AWS's managed AmazonSSMManagedInstanceCore grants ssm:GetParameter(s) on every parameter,
which would let any job read every SecureString in the account (the GitHub App key among
them). Runner roles get only what Session Manager needs instead.
"""

from __future__ import annotations

from typing import Any

PolicyDocument = dict[str, Any]

SESSION_MANAGER_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
)
CLOUDWATCH_AGENT_NAMESPACE = "CWAgent"


def _doc(*statements: dict[str, Any]) -> PolicyDocument:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def ec2_assume_role_policy() -> PolicyDocument:
    return _doc({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"})


def session_manager_policy() -> PolicyDocument:
    # These actions take no resource-level scoping; the action list is what limits them.
    return _doc({"Sid": "SessionManager", "Effect": "Allow", "Action": list(SESSION_MANAGER_ACTIONS), "Resource": "*"})


def cloudwatch_agent_policy(log_group_arns: list[str]) -> PolicyDocument:
    """Ship the pool's own log files and agent metrics, nothing else."""
    return _doc(
        {
            "Sid": "OwnLogGroups",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [f"{arn}:*" for arn in log_group_arns],
        },
        {
            "Sid": "AgentMetrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": CLOUDWATCH_AGENT_NAMESPACE}},
        },
    )


def jit_parameter_policy(parameter_prefix_arn: str) -> PolicyDocument:
    """A host may read and delete only the runner config tagged with its own instance ARN."""
    return _doc(
        {
            "Sid": "OwnRunnerConfig",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:DeleteParameter"],
            "Resource": f"{parameter_prefix_arn}*",
            "Condition": {"StringEquals": {"ssm:resourceTag/runner-estate:instance-arn": "${ec2:SourceInstanceARN}"}},
        }
    )


def slot_report_policy(queue_arn: str) -> PolicyDocument:
    """A capacity-block node reports free and faulty slots on its pool's events queue, and
    may do nothing else with it."""
    return _doc({"Sid": "SlotReports", "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": queue_arn})


def events_queue_policy(queue_arn: str, rule_arns: list[str]) -> PolicyDocument:
    """Only our EventBridge rules may deliver to an events queue (a capacity-block pool's, the
    spot interruptions'): a forged event would drain a block or a host. The deny also stops a
    principal of this account whose own policy would allow sending (it carries no aws:SourceArn)."""
    return _doc(
        {
            "Sid": "EventBridgeRules",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}},
        },
        {
            "Sid": "NobodyElse",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnNotEquals": {"aws:SourceArn": rule_arns}},
        },
    )


def image_build_policy(region: str, account: str) -> PolicyDocument:
    """The Image Builder build and test instances' role: what AWS's EC2InstanceProfileForImageBuilder
    and AmazonSSMManagedInstanceCore grant that a build uses — Run Command through the SSM agent
    (the actions Session Manager needs too), reading this account's components, writing the
    builds' logs — and nothing else: no parameter, secret or instance of the estate."""
    return _doc(
        {"Sid": "SsmAgent", "Effect": "Allow", "Action": list(SESSION_MANAGER_ACTIONS), "Resource": "*"},
        {
            "Sid": "Components",
            "Effect": "Allow",
            "Action": ["imagebuilder:GetComponent"],
            "Resource": f"arn:aws:imagebuilder:{region}:{account}:component/*",
        },
        {
            "Sid": "BuildLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/imagebuilder/*",
        },
    )


def image_parameter_read(parameter_arns: list[str]) -> dict[str, Any]:
    """EC2 resolves a launch template's `resolve:ssm:` image with the launching principal's
    ssm:GetParameters (EC2 User Guide, "Use a Systems Manager parameter instead of an AMI ID")."""
    return {"Sid": "ImageParameters", "Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": parameter_arns}


def lambda_assume_role_policy() -> PolicyDocument:
    return _doc({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"})


def _logs(log_group_arn: str) -> dict[str, Any]:
    return {"Sid": "OwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{log_group_arn}:*"}


LEDGER_READ_WRITE = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:Scan")


def webhook_policy(log_group_arn: str, secret_arn: str, table_arn: str, queue_arns: list[str]) -> PolicyDocument:
    """Read the webhook secret, record jobs, enqueue them. Nothing else."""
    return _doc(
        _logs(log_group_arn),
        {"Sid": "WebhookSecret", "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": secret_arn},
        {"Sid": "Ledger", "Effect": "Allow", "Action": ["dynamodb:UpdateItem", "dynamodb:PutItem"], "Resource": table_arn},
        {"Sid": "PoolQueues", "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": queue_arns},
    )


def redelivery_policy(log_group_arn: str, app_key_arns: list[str], table_arn: str) -> PolicyDocument:
    """Mint GitHub tokens (to list the org hook's deliveries and ask for redeliveries) and
    remember in the ledger what was sent again. No EC2, SSM runner configs or queues."""
    return _doc(
        _logs(log_group_arn),
        {"Sid": "AppKey", "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": app_key_arns},
        {
            "Sid": "Ledger",
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
            "Resource": [table_arn, f"{table_arn}/index/*"],
        },
    )


def sweeper_policy(
    *,
    environment: str,
    scaled_pools: list[str],
    all_pools: list[str],
    log_group_arn: str,
    app_key_arns: list[str],
    jit_prefix_arn: str,
    table_arn: str,
    region: str,
) -> PolicyDocument:
    """What the sweeper needs to find and remove what has no live owner: read EC2's and SSM's
    listings, delete runner configs, and delete or terminate only what carries this
    environment's tags — volumes and network interfaces, instances of the ordinary pools (past
    their lifetime), and instances of a pool no longer configured. It can never end a node of a
    configured capacity-block pool (those are the block manager's)."""
    ours = {"aws:ResourceTag/runner-estate:environment": environment, "aws:ResourceTag/runner-estate:managed": "true"}
    return _doc(
        _logs(log_group_arn),
        {"Sid": "AppKey", "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": app_key_arns},
        {
            "Sid": "Ledger",
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
            "Resource": [table_arn, f"{table_arn}/index/*"],
        },
        # Describe calls take no resource-level scoping; the action list is what limits them.
        {
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:DescribeNetworkInterfaces", "ssm:DescribeParameters"],
            "Resource": "*",
        },
        {"Sid": "RunnerConfigs", "Effect": "Allow", "Action": ["ssm:DeleteParameter"], "Resource": f"{jit_prefix_arn}*"},
        {
            "Sid": "TerminateOurs",
            "Effect": "Allow",
            "Action": ["ec2:TerminateInstances"],
            "Resource": "*",
            "Condition": {"StringEquals": {**ours, "aws:ResourceTag/runner-estate:pool": sorted(scaled_pools)}},
        },
        {
            "Sid": "TerminateRetiredPools",
            "Effect": "Allow",
            "Action": ["ec2:TerminateInstances"],
            "Resource": "*",
            "Condition": {"StringEquals": ours, "StringNotEquals": {"aws:ResourceTag/runner-estate:pool": sorted(all_pools)}},
        },
        {
            "Sid": "DeleteLeftovers",
            "Effect": "Allow",
            "Action": ["ec2:DeleteVolume", "ec2:DeleteNetworkInterface"],
            "Resource": [f"arn:aws:ec2:{region}:*:volume/*", f"arn:aws:ec2:{region}:*:network-interface/*"],
            "Condition": {"StringEquals": ours},
        },
    )


def _control_plane_basics(
    environment: str, pools: list[str], log_group_arn: str, app_key_arns: list[str], jit_prefix_arn: str, table_arn: str
) -> list[dict[str, Any]]:
    """What every scaler function does: log, mint GitHub tokens (with any of the Apps' keys),
    store runner configs, keep the ledger, and terminate instances — only those tagged as this
    environment's and as one of the pools this controller owns (the scaler never ends a
    capacity-block node, nor the reverse)."""
    ours = {
        "StringEquals": {
            "aws:ResourceTag/runner-estate:environment": environment,
            "aws:ResourceTag/runner-estate:managed": "true",
            "aws:ResourceTag/runner-estate:pool": sorted(pools),
        }
    }
    return [
        _logs(log_group_arn),
        {"Sid": "AppKey", "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": app_key_arns},
        {
            "Sid": "RunnerConfigs",
            "Effect": "Allow",
            "Action": ["ssm:PutParameter", "ssm:DeleteParameter", "ssm:AddTagsToResource"],
            "Resource": f"{jit_prefix_arn}*",
        },
        {"Sid": "Ledger", "Effect": "Allow", "Action": list(LEDGER_READ_WRITE), "Resource": [table_arn, f"{table_arn}/index/*"]},
        {"Sid": "TerminateOurs", "Effect": "Allow", "Action": ["ec2:TerminateInstances"], "Resource": "*", "Condition": ours},
    ]


def _launch_and_tag(
    sid: str, launch_actions: list[str], tagged_by: list[str], *, region: str, environment: str, pools: list[str], uses: list[str]
) -> list[dict[str, Any]]:
    """Launching, the one place launch permissions are scoped, for the scaler and the block
    manager: only from this environment's launch templates of `pools` (their own tags), only an
    instance the request tags as one of `pools` in this environment, only in this region; and
    tagging only as part of a create call (never existing resources).

    The request tags are checked on the instance alone: every launch call of ours tags its
    instances itself (lambda_src/aws), while volumes and network interfaces take their tags from
    the launch template, which EC2 may not count as request tags. `uses` names the other
    resource types a launch creates or reads (volume, subnet, ...), in this region."""
    ours = {"runner-estate:environment": environment, "runner-estate:managed": "true", "runner-estate:pool": sorted(pools)}
    arns = [f"arn:aws:ec2:{region}:{'' if kind in ('image', 'snapshot') else '*'}:{kind}/*" for kind in uses]
    return [
        {
            "Sid": f"{sid}FromOurTemplates",
            "Effect": "Allow",
            "Action": launch_actions,
            "Resource": f"arn:aws:ec2:{region}:*:launch-template/*",
            "Condition": {"StringEquals": {f"aws:ResourceTag/{k}": v for k, v in ours.items()}},
        },
        {
            "Sid": f"{sid}OurInstances",
            "Effect": "Allow",
            "Action": launch_actions,
            "Resource": f"arn:aws:ec2:{region}:*:instance/*",
            "Condition": {"StringEquals": {f"aws:RequestTag/{k}": v for k, v in ours.items()}},
        },
        {"Sid": f"{sid}Uses", "Effect": "Allow", "Action": launch_actions, "Resource": arns},
        {
            "Sid": "TagAtLaunch",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": "*",
            "Condition": {"StringEquals": {"ec2:CreateAction": tagged_by}},
        },
    ]


# What a launch of ours creates or reads besides the instance and its template: the image and its
# snapshots, the subnet and groups of its network interface, its volumes and interface, and for
# CreateFleet the (instant) fleet and, in spot pools, the spot requests.
LAUNCH_USES = ["image", "snapshot", "subnet", "security-group", "volume", "network-interface"]
FLEET_USES = ["fleet", "spot-instances-request"]


def _our_blocks(region: str, environment: str, pools: list[str], reservation_ids: list[str]) -> list[dict[str, Any]]:
    """The capacity reservations a node may be launched into: those named in the pools' config,
    and those tagged as this environment's block of one of `pools`."""
    arn = f"arn:aws:ec2:{region}:*:capacity-reservation/"
    tagged = {"aws:ResourceTag/runner-estate:environment": environment, "aws:ResourceTag/runner-estate:pool": sorted(pools)}
    named = sorted(set(reservation_ids))
    return [
        *(
            [{"Sid": "IntoNamedBlocks", "Effect": "Allow", "Action": ["ec2:RunInstances"], "Resource": [arn + r for r in named]}]
            * bool(named)
        ),
        {
            "Sid": "IntoTaggedBlocks",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": arn + "*",
            "Condition": {"StringEquals": tagged},
        },
    ]


def scaler_policy(
    *,
    environment: str,
    pools: list[str],
    log_group_arn: str,
    app_key_arns: list[str],
    jit_prefix_arn: str,
    table_arn: str,
    runner_role_arns: list[str],
    region: str,
    launches: bool,
    queue_arns: list[str] | None = None,
    image_parameter_arns: list[str] | None = None,
) -> PolicyDocument:
    """What scale-up, reconcile and scale-down need. Terminating is limited to instances tagged
    as this environment's and as one of `pools` (the ordinary pools); tagging to create calls;
    launching to our templates of `pools` and instances tagged as theirs (`_launch_and_tag`)."""
    statements: list[dict[str, Any]] = [
        *_control_plane_basics(environment, pools, log_group_arn, app_key_arns, jit_prefix_arn, table_arn),
        # Describe calls take no resource-level scoping; the action list is what limits them.
        {"Sid": "Describe", "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"},
    ]
    if launches:
        statements += [
            *_launch_and_tag(
                "Launch",
                ["ec2:CreateFleet", "ec2:RunInstances"],
                ["CreateFleet", "RunInstances"],
                region=region,
                environment=environment,
                pools=pools,
                uses=[*LAUNCH_USES, *FLEET_USES],
            ),
            {
                # A stopped warm instance is started for a job (issue 20.2): only one of ours, of these
                # pools and marked warm at its launch (core/tags.WARM; no role may tag after launch).
                "Sid": "StartWarm",
                "Effect": "Allow",
                "Action": ["ec2:StartInstances"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "aws:ResourceTag/runner-estate:environment": environment,
                        "aws:ResourceTag/runner-estate:managed": "true",
                        "aws:ResourceTag/runner-estate:pool": sorted(pools),
                        "aws:ResourceTag/runner-estate:warm": "true",
                    }
                },
            },
            {
                "Sid": "DescribeForFleet",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:DescribeImages",
                    "ec2:DescribeSubnets",
                ],
                "Resource": "*",
            },
            {"Sid": "PassRunnerRoles", "Effect": "Allow", "Action": ["iam:PassRole"], "Resource": runner_role_arns},
        ]
        if image_parameter_arns:
            statements.append(image_parameter_read(image_parameter_arns))
    if queue_arns:
        statements.append(
            {
                "Sid": "PoolQueues",
                "Effect": "Allow",
                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
                "Resource": queue_arns,
            }
        )
    return _doc(*statements)


def block_manager_policy(
    *,
    environment: str,
    pools: list[str],
    log_group_arn: str,
    app_key_arns: list[str],
    jit_prefix_arn: str,
    table_arn: str,
    node_role_arns: list[str],
    region: str,
    queue_arns: list[str],
    buys_blocks: bool,
    image_parameter_arns: list[str] | None = None,
    reservation_ids: list[str] | None = None,
) -> PolicyDocument:
    """What cb_scale_up and cb_manager need: launch nodes into capacity blocks, read them,
    terminate only this environment's nodes of `pools` (the capacity-block pools), and (only
    where a pool renews) buy a block. Nodes go only into the blocks the pools name
    (`reservation_ids`) or that are tagged as one of them in this environment (bought by the
    stack or the manager): never into another team's capacity reservation."""
    statements: list[dict[str, Any]] = [
        *_control_plane_basics(environment, pools, log_group_arn, app_key_arns, jit_prefix_arn, table_arn),
        {
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeInstances",
                "ec2:DescribeCapacityReservations",
                "ec2:DescribeSubnets",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:DescribeImages",
            ],
            "Resource": "*",
        },
        *_launch_and_tag(
            "LaunchIntoBlocks",
            ["ec2:RunInstances"],
            ["RunInstances", "PurchaseCapacityBlock"],
            region=region,
            environment=environment,
            pools=pools,
            uses=LAUNCH_USES,
        ),
        *_our_blocks(region, environment, pools, reservation_ids or []),
        {"Sid": "PassNodeRoles", "Effect": "Allow", "Action": ["iam:PassRole"], "Resource": node_role_arns},
        {
            "Sid": "Queues",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
            "Resource": queue_arns,
        },
    ]
    if image_parameter_arns:
        statements.append(image_parameter_read(image_parameter_arns))
    if buys_blocks:
        statements.append(
            {
                "Sid": "BuyNextBlock",
                "Effect": "Allow",
                "Action": ["ec2:DescribeCapacityBlockOfferings", "ec2:PurchaseCapacityBlock"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
            }
        )
    return _doc(*statements)
