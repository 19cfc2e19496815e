"""SpotInterruptions: EC2's spot interruption warnings and rebalance recommendations, brought by
an EventBridge rule to an SQS queue (with a dead-letter queue and its alarm) that only that rule
may send to: a forged warning would retire a host and re-run its job. ScalerFunctions wires the
queue to its `spot` function (lambda_src/functions/spot_events.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.alarms import alarm_name, dlq_alarm
from estate.derive import iam_policies
from lambda_src.core.interruptions import DETAIL_TYPES

MAX_RECEIVE_COUNT = 5
HANDLER_TIMEOUT_S = 60
# A warning is worth acting on for its two minutes and the re-run decision after; older is history.
RETENTION_S = 3600


@dataclass(frozen=True)
class SpotInterruptionsArgs:
    environment: str
    tags: dict[str, str]
    alarm_topic_arn: pulumi.Input[str]


class SpotInterruptions(pulumi.ComponentResource):
    queue_arn: pulumi.Output[str]
    queue_url: pulumi.Output[str]

    def __init__(self, name: str, args: SpotInterruptionsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:SpotInterruptions", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"runner-estate-{args.environment}-spot-events"
        dlq = aws.sqs.Queue(
            f"{name}-dlq", name=f"{prefix}-dlq", message_retention_seconds=1209600, sqs_managed_sse_enabled=True, tags=args.tags, opts=child
        )
        queue = aws.sqs.Queue(
            f"{name}-queue",
            name=prefix,
            visibility_timeout_seconds=2 * HANDLER_TIMEOUT_S,
            message_retention_seconds=RETENTION_S,
            sqs_managed_sse_enabled=True,
            redrive_policy=dlq.arn.apply(lambda arn: json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": MAX_RECEIVE_COUNT})),
            tags=args.tags,
            opts=child,
        )
        dlq_alarm(
            f"{name}-dlq-alarm",
            alarm_name(args.environment, "spot-events-dlq"),
            "Spot interruption events the spot function failed 5 times (runbook: spot interruptions)",
            dlq,
            args.alarm_topic_arn,
            args.tags,
            child,
        )
        pattern = {"source": ["aws.ec2"], "detail-type": list(DETAIL_TYPES)}
        rule = aws.cloudwatch.EventRule(f"{name}-rule", event_pattern=json.dumps(pattern), tags=args.tags, opts=child)
        aws.cloudwatch.EventTarget(f"{name}-target", rule=rule.name, arn=queue.arn, opts=child)
        aws.sqs.QueuePolicy(
            f"{name}-policy",
            queue_url=queue.url,
            policy=pulumi.Output.all(queue.arn, rule.arn).apply(lambda a: json.dumps(iam_policies.events_queue_policy(a[0], [a[1]]))),
            opts=child,
        )
        self.queue_arn = queue.arn
        self.queue_url = queue.url
        self.register_outputs({"queue_url": self.queue_url})
