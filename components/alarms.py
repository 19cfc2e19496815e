"""Alarms several components raise the same way."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


def dlq_alarm(name: str, description: str, dlq: aws.sqs.Queue, tags: dict[str, str], opts: pulumi.ResourceOptions) -> None:
    """Alarm as soon as one message lands in a dead-letter queue: work was given up on."""
    aws.cloudwatch.MetricAlarm(
        name,
        alarm_description=description,
        namespace="AWS/SQS",
        metric_name="ApproximateNumberOfMessagesVisible",
        dimensions={"QueueName": dlq.name},
        statistic="Maximum",
        period=60,
        evaluation_periods=1,
        threshold=0,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="notBreaching",
        tags=tags,
        opts=opts,
    )
