"""CapacityBlockFleet: everything one capacity-block pool needs beside the shared control
plane — its nodes' launch template and role (a RunnerFleet whose user-data starts the GPU
slot manager), the EventBridge rules that bring Capacity Block and instance-state events to
the manager through an SQS queue with a DLQ, and, only when the pool says `purchase: true`,
the block itself, bought from the cheapest offering within its price limit.

Two queues reach the manager, kept apart because a job on a node holds the node's role: the
events queue only EventBridge may send to (a forged expiration warning would drain a block),
and the slot-reports queue only the pool's nodes may send to (each report is then checked to
come from the node it names)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.alarms import alarm_name, dlq_alarm
from components.runner_fleet import RunnerFleet, RunnerFleetArgs
from estate.config.pool import Pool
from estate.derive import iam_policies
from estate.derive.host_user_data import node_user_data
from estate.derive.images import STOCK, BootImage, ImagePlan
from lambda_src.core.block_planner import CB_DETAIL_TYPES, CB_WARNING_TYPES, STATE_CHANGE
from lambda_src.core.tags import POOL

EVENTS_MAX_RECEIVE_COUNT = 5
MANAGER_TIMEOUT_S = 120


@dataclass(frozen=True)
class CapacityBlockFleetArgs:
    pool: Pool
    environment: str
    security_group_id: pulumi.Input[str]
    public_ip: bool
    log_retention_days: int
    tags: dict[str, str]
    jit_prefix: str  # "/runner-estate/<env>/jit/"
    jit_prefix_arn: pulumi.Input[str]
    runner_version: str
    runner_sha256: str | None
    alarm_topic_arn: pulumi.Input[str]  # the events DLQ's alarm notifies it
    boot: BootImage = STOCK
    images: ImagePlan = field(default_factory=lambda: ImagePlan((), {}))
    image_ready: Sequence[pulumi.Resource] = field(default=())


class CapacityBlockFleet(pulumi.ComponentResource):
    launch_template_id: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    events_queue_arn: pulumi.Output[str]
    events_queue_url: pulumi.Output[str]
    reports_queue_arn: pulumi.Output[str]
    reservation_ids: list[pulumi.Output[str]]
    log_group_names: list[str]
    purchase_usd: pulumi.Output[float] | None

    def __init__(self, name: str, args: CapacityBlockFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:CapacityBlockFleet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        pool, tags = args.pool, args.tags
        block = pool.spec.estate.capacity_block
        assert block is not None
        prefix = f"runner-estate-{args.environment}-{pool.name}"

        dlq = aws.sqs.Queue(f"{name}-events-dlq", name=f"{prefix}-events-dlq", message_retention_seconds=1209600,
                            sqs_managed_sse_enabled=True, tags=tags, opts=child)  # fmt: skip
        redrive = dlq.arn.apply(lambda arn: json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": EVENTS_MAX_RECEIVE_COUNT}))
        queue, reports = (
            aws.sqs.Queue(
                f"{name}-{suffix}",
                name=f"{prefix}-{suffix}",
                visibility_timeout_seconds=2 * MANAGER_TIMEOUT_S,
                message_retention_seconds=86400,
                sqs_managed_sse_enabled=True,
                redrive_policy=redrive,
                tags=tags,
                opts=child,
            )
            for suffix in ("events", "slot-reports")
        )
        description = f"Capacity-block events or slot reports of pool {pool.name} the manager gave up on (runbook: capacity blocks)"
        dlq_alarm(
            f"{name}-events-dlq-alarm",
            alarm_name(args.environment, f"{pool.name}-events-dlq"),
            description,
            dlq,
            args.alarm_topic_arn,
            tags,
            child,
        )

        # Both spellings of each Capacity Block event AWS documents, and instances ending
        # (a lost node is replaced while its block still has room).
        patterns = {
            "blocks": {"source": ["aws.ec2"], "detail-type": [*CB_DETAIL_TYPES, *CB_WARNING_TYPES]},
            "instances": {
                "source": ["aws.ec2"],
                "detail-type": [STATE_CHANGE],
                "detail": {"state": ["shutting-down", "terminated", "stopped"]},
            },
        }
        rules = []
        for label, pattern in patterns.items():
            rule = aws.cloudwatch.EventRule(f"{name}-{label}-rule", event_pattern=json.dumps(pattern), tags=tags, opts=child)
            aws.cloudwatch.EventTarget(f"{name}-{label}-target", rule=rule.name, arn=queue.arn, opts=child)
            rules.append(rule)
        aws.sqs.QueuePolicy(
            f"{name}-events-policy",
            queue_url=queue.url,
            policy=pulumi.Output.all(queue.arn, *[r.arn for r in rules]).apply(
                lambda a: json.dumps(iam_policies.events_queue_policy(a[0], list(a[1:])))
            ),
            opts=child,
        )

        fleet = RunnerFleet(
            name,
            RunnerFleetArgs(
                pool=pool,
                environment=args.environment,
                security_group_id=args.security_group_id,
                public_ip=args.public_ip,
                log_retention_days=args.log_retention_days,
                tags=tags,
                jit_prefix_arn=args.jit_prefix_arn,
                user_data=reports.url.apply(
                    lambda url: node_user_data(
                        pool, args.jit_prefix, args.runner_version, args.runner_sha256, url, baked=args.boot.path == "baked"
                    )
                ),
                boot=args.boot,
                images=args.images,
                image_ready=args.image_ready,
            ),
            opts=child,
        )
        # Nodes report free and faulty slots on their own queue, and may do nothing else with it.
        aws.iam.RolePolicy(
            f"{name}-slot-reports",
            role=fleet.role_name,
            policy=reports.arn.apply(lambda arn: json.dumps(iam_policies.slot_report_policy(arn))),
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-slot-reports-policy",
            queue_url=reports.url,
            policy=pulumi.Output.all(reports.arn, fleet.role_arn).apply(lambda a: json.dumps(_reports_queue_policy(a[0], a[1]))),
            opts=child,
        )

        self.reservation_ids = [pulumi.Output.from_input(rid) for rid in block.reservation_ids]
        self.purchase_usd = None
        if block.purchase:
            self._purchase(name, pool, tags)

        self.launch_template_id = fleet.launch_template_id
        self.role_arn = fleet.role_arn
        self.log_group_names = fleet.log_group_names
        self.events_queue_arn = queue.arn
        self.events_queue_url = queue.url
        self.reports_queue_arn = reports.arn
        self.register_outputs(
            {
                "launch_template_id": self.launch_template_id,
                "events_queue_url": self.events_queue_url,
                "reservation_ids": self.reservation_ids,
                "purchase_usd": self.purchase_usd,
            }
        )

    def _purchase(self, name: str, pool: Pool, tags: dict[str, str]) -> None:
        """Buy one block from the cheapest offering the API returns — refused above the price
        limit before anything is bought. Protected: deleting it would not refund it."""
        block = pool.spec.estate.capacity_block
        assert block is not None
        assert block.max_price_usd is not None
        assert block.duration_hours is not None
        offering = aws.ec2.get_capacity_block_offering_output(
            instance_type=pool.instance_types[0].name,
            instance_count=block.instance_count,
            capacity_duration_hours=block.duration_hours,
            opts=pulumi.InvokeOptions(parent=self),
        )
        limit = block.max_price_usd

        def within_limit(fee: Any) -> str:
            if float(fee) > limit:
                cost = f"the cheapest offering costs ${float(fee):,.2f}, above max_price_usd ${limit:,.2f}"
                raise pulumi.RunError(f"pool {pool.name}: estate.capacity_block: {cost}")
            # A warning, so every preview of this stack says that `up` spends money.
            pulumi.log.warn(
                f"pool {pool.name}: buys a capacity block of {block.instance_count} x {pool.instance_types[0].name} "
                f"for {block.duration_hours} h at ${float(fee):,.2f}"
            )
            return str(fee)

        checked = offering.upfront_fee.apply(within_limit)
        reservation = aws.ec2.CapacityBlockReservation(
            f"{name}-block",
            capacity_block_offering_id=pulumi.Output.all(offering.capacity_block_offering_id, checked).apply(lambda a: a[0]),
            instance_platform="Linux/UNIX",
            tags={**tags, POOL: pool.name},
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        self.reservation_ids.append(reservation.id)
        self.purchase_usd = checked.apply(float)


def _reports_queue_policy(queue_arn: str, node_role_arn: str) -> dict[str, Any]:
    """Only the pool's nodes may report on its slots."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OnlyThisPoolsNodes",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": node_role_arn}},
            }
        ],
    }
