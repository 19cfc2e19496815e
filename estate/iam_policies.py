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
