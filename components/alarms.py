"""Where the estate's alarms go, and the alarms several components raise the same way.

AlarmTopic is the one SNS topic every alarm notifies (or, when the stack names one, an existing
topic instead). Ours is encrypted with a customer managed KMS key: CloudWatch cannot publish to
a topic under the AWS managed key `alias/aws/sns`, whose policy no one can extend, so an alarm
on such a topic would notify nobody (Amazon SNS developer guide, "Key management":
compatibility between event sources from AWS services and encrypted topics).

Every alarm has a physical name, `runner-estate-<env>-<what>`, so the runbook can name it, and
notifies the topic when it fires and when it clears.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from estate.config.stack_config import AlarmSettings


def alarm_name(environment: str, what: str) -> str:
    """The physical name of one of our alarms (docs/runbook.md lists them)."""
    return f"runner-estate-{environment}-{what}"


def topic_name(environment: str) -> str:
    return f"runner-estate-{environment}-alarms"


def key_alias(environment: str) -> str:
    return f"alias/runner-estate-{environment}-alarms"


def metric_alarm(
    resource_name: str, *, name: str, topic_arn: pulumi.Input[str], opts: pulumi.ResourceOptions, **alarm: Any
) -> aws.cloudwatch.MetricAlarm:
    """A MetricAlarm with its stable physical name that notifies the alarm topic on ALARM and OK."""
    return aws.cloudwatch.MetricAlarm(resource_name, name=name, alarm_actions=[topic_arn], ok_actions=[topic_arn], opts=opts, **alarm)


def dlq_alarm(
    resource_name: str,
    name: str,
    description: str,
    dlq: aws.sqs.Queue,
    topic_arn: pulumi.Input[str],
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> None:
    """Alarm as soon as one message lands in a dead-letter queue: work was given up on."""
    metric_alarm(
        resource_name,
        name=name,
        topic_arn=topic_arn,
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


def topic_policy(topic_arn: str, account: str, region: str, budgets: bool = False) -> dict[str, Any]:
    """Only CloudWatch alarms of this account (and region) may publish to the topic, and, where
    the stack has a budget, AWS Budgets for this account's budgets."""
    budget_statement = {
        "Sid": "BudgetsOfThisAccount",
        "Effect": "Allow",
        "Principal": {"Service": "budgets.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": topic_arn,
        "Condition": {
            "StringEquals": {"aws:SourceAccount": account},
            "ArnLike": {"aws:SourceArn": f"arn:aws:budgets::{account}:*"},
        },
    }
    return {
        "Version": "2012-10-17",
        "Statement": [
            *([budget_statement] if budgets else []),
            {
                "Sid": "CloudWatchAlarmsOfThisAccount",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{region}:{account}:alarm:*"},
                },
            },
        ],
    }


def key_policy(account: str, region: str, budgets: bool = False) -> dict[str, Any]:
    """The topic key: the account administers it (IAM decides who), SNS uses it for the
    account's principals, and CloudWatch (and, with a budget, AWS Budgets) may encrypt
    notifications for this account."""
    root = f"arn:aws:iam::{account}:root"
    budget_statement = {
        "Sid": "BudgetsOfThisAccount",
        "Effect": "Allow",
        "Principal": {"Service": "budgets.amazonaws.com"},
        "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:SourceAccount": account}},
    }
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": [
                    "kms:DescribeKey",
                    "kms:GetKeyPolicy",
                    "kms:PutKeyPolicy",
                    "kms:GetKeyRotationStatus",
                    "kms:EnableKeyRotation",
                    "kms:DisableKeyRotation",
                    "kms:ListResourceTags",
                    "kms:TagResource",
                    "kms:UntagResource",
                    "kms:UpdateKeyDescription",
                    "kms:EnableKey",
                    "kms:DisableKey",
                    "kms:ScheduleKeyDeletion",
                    "kms:CancelKeyDeletion",
                    "kms:CreateAlias",
                    "kms:UpdateAlias",
                    "kms:DeleteAlias",
                    "kms:ListGrants",
                    "kms:RevokeGrant",
                ],
                "Resource": "*",
            },
            {
                "Sid": "AccountUsesItThroughSns",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": f"sns.{region}.amazonaws.com", "kms:CallerAccount": account}},
            },
            {
                "Sid": "CloudWatchAlarmsOfThisAccount",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            },
            *([budget_statement] if budgets else []),
        ],
    }


@dataclass(frozen=True)
class AlarmTopicArgs:
    environment: str
    region: str
    settings: AlarmSettings
    tags: dict[str, str]
    budgets: bool = False  # the stack's budget notifies the topic too (components/budget.py)


class AlarmTopic(pulumi.ComponentResource):
    """The topic every alarm notifies: ours (encrypted, CloudWatch-only publishing, the
    stack's subscriptions) or the existing one the stack names."""

    topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: AlarmTopicArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:AlarmTopic", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s, env = args.settings, args.environment
        if s.topic_arn is not None:
            # Someone else's topic: its key, policy and subscriptions are its owner's to set.
            self.topic_arn = pulumi.Output.from_input(s.topic_arn)
            self.register_outputs({"topic_arn": self.topic_arn})
            return
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id
        key_id: pulumi.Input[str]
        if s.kms_key is not None:
            key_id = s.kms_key
        else:
            key = aws.kms.Key(
                f"{name}-key",
                description=f"runner-estate {env}: encrypts the alarm topic; CloudWatch may use it for this account's alarms",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                policy=account.apply(lambda a: json.dumps(key_policy(a, args.region, args.budgets))),
                tags=args.tags,
                opts=child,
            )
            aws.kms.Alias(f"{name}-key-alias", name=key_alias(env), target_key_id=key.key_id, opts=child)
            key_id = key.arn
        topic = aws.sns.Topic(f"{name}-topic", name=topic_name(env), kms_master_key_id=key_id, tags=args.tags, opts=child)
        aws.sns.TopicPolicy(
            f"{name}-topic-policy",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, account).apply(lambda a: json.dumps(topic_policy(a[0], a[1], args.region, args.budgets))),
            opts=child,
        )
        for address in s.emails:
            # Named by the address, so adding or removing one leaves the others alone.
            digest = hashlib.sha256(address.lower().encode()).hexdigest()[:12]
            aws.sns.TopicSubscription(f"{name}-email-{digest}", topic=topic.arn, protocol="email", endpoint=address, opts=child)
        if s.https_endpoint is not None:
            aws.sns.TopicSubscription(f"{name}-https", topic=topic.arn, protocol="https", endpoint=s.https_endpoint, opts=child)
        self.topic_arn = topic.arn
        self.register_outputs({"topic_arn": self.topic_arn})
