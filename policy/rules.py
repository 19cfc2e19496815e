"""Security-default rules over one resource's type and properties (camelCase, as Pulumi hands
them to policies and to mocks). Pure and stdlib-only: the Pulumi policy pack
(policy/__main__.py) and `estate preview` run the same functions.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Props = Mapping[str, Any]

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LAMBDA_FUNCTION = "aws:lambda/function:Function"
RUNNER_GROUP = "github:index/actionsRunnerGroup:ActionsRunnerGroup"
POLICY_TYPES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy", "aws:iam/role:Role")
ANYWHERE = {"0.0.0.0/0", "::/0"}

# Shapes of credentials that must never sit in user-data or a function's environment.
SECRET_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bA(KIA|SIA)[0-9A-Z]{16}\b"),
    re.compile(r"aws_secret_access_key\s*[=:]", re.IGNORECASE),
    re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}"),
)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    mandatory: bool
    check: Callable[[str, Props], Iterator[str]]  # (resource type, props) -> violation messages


def _imdsv2(kind: str, props: Props) -> Iterator[str]:
    if kind in (LAUNCH_TEMPLATE, INSTANCE):
        tokens = (props.get("metadataOptions") or {}).get("httpTokens")
        if tokens != "required":
            yield f"metadataOptions.httpTokens is {tokens!r}; IMDSv2 needs 'required'"


def _encrypted(kind: str, props: Props) -> Iterator[str]:
    if kind == LAUNCH_TEMPLATE:
        for i, disk in enumerate(props.get("blockDeviceMappings") or []):
            if str((disk.get("ebs") or {}).get("encrypted")).lower() != "true":
                yield f"blockDeviceMappings[{i}] ({disk.get('deviceName')}) is not encrypted"
    if kind == INSTANCE and not (props.get("rootBlockDevice") or {}).get("encrypted"):
        yield "rootBlockDevice is not encrypted"
    if kind == VOLUME and not props.get("encrypted"):
        yield "volume is not encrypted"


def _statements(kind: str, props: Props) -> Iterator[dict[str, Any]]:
    for key in ("policy", "assumeRolePolicy"):
        text = props.get(key)
        if kind in POLICY_TYPES and isinstance(text, str):
            try:
                document = json.loads(text)
            except ValueError:
                continue
            statements = document.get("Statement", [])
            yield from statements if isinstance(statements, list) else [statements]


def _no_wildcard_actions(kind: str, props: Props) -> Iterator[str]:
    for statement in _statements(kind, props):
        actions = statement.get("Action", [])
        for action in actions if isinstance(actions, list) else [actions]:
            if "*" in str(action):
                yield f"statement {statement.get('Sid', '(no Sid)')} allows {action!r}"
        if "NotAction" in statement:
            yield f"statement {statement.get('Sid', '(no Sid)')} uses NotAction (everything but a list)"


def _no_open_ingress(kind: str, props: Props) -> Iterator[str]:
    rules: list[Mapping[str, Any]] = []
    if kind == SECURITY_GROUP:
        rules = list(props.get("ingress") or [])
    elif kind == SECURITY_GROUP_RULE and props.get("type") == "ingress":
        rules = [props]
    elif kind == INGRESS_RULE:
        rules = [{"cidrBlocks": [props.get("cidrIpv4")], "ipv6CidrBlocks": [props.get("cidrIpv6")], "fromPort": props.get("fromPort")}]
    for rule in rules:
        blocks = set(rule.get("cidrBlocks") or []) | set(rule.get("ipv6CidrBlocks") or [])
        if blocks & ANYWHERE:
            yield f"ingress from {', '.join(sorted(blocks & ANYWHERE))} on port {rule.get('fromPort')}"


def _decoded_user_data(props: Props) -> str:
    text = str(props.get("userData") or "")
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return text


def _no_secret_in_boot_or_env(kind: str, props: Props) -> Iterator[str]:
    places: list[tuple[str, str]] = []
    if kind in (LAUNCH_TEMPLATE, INSTANCE):
        places.append(("userData", _decoded_user_data(props)))
    if kind == LAMBDA_FUNCTION:
        variables = ((props.get("environment") or {}).get("variables")) or {}
        places += [(f"environment.variables.{k}", str(v)) for k, v in variables.items()]
    for where, text in places:
        for pattern in SECRET_PATTERNS:
            if pattern.search(text):
                yield f"{where} holds something shaped like a credential ({pattern.pattern})"


def _runner_group_selected(kind: str, props: Props) -> Iterator[str]:
    if kind == RUNNER_GROUP and props.get("visibility") != "selected":
        yield f"visibility is {props.get('visibility')!r}: a runner group must name the repositories it serves ('selected')"


def _runner_group_not_public(kind: str, props: Props) -> Iterator[str]:
    if kind == RUNNER_GROUP and props.get("allowsPublicRepositories"):
        yield "public repositories may use this group: any fork's pull request can run code on its hosts"


RULES: tuple[Rule, ...] = (
    Rule("imdsv2-required", "Instances and launch templates require IMDSv2 session tokens.", True, _imdsv2),
    Rule("encrypted-volumes", "Every EBS volume is encrypted.", True, _encrypted),
    Rule("no-wildcard-iam-actions", "No IAM statement allows a wildcard action or uses NotAction.", True, _no_wildcard_actions),
    Rule("no-open-ingress", "No security group admits traffic from 0.0.0.0/0 or ::/0.", True, _no_open_ingress),
    Rule(
        "no-secrets-in-user-data-or-env", "No credential-shaped text in user-data or Lambda environments.", True, _no_secret_in_boot_or_env
    ),
    Rule("runner-groups-selected", "Runner groups are open only to the repositories they name.", True, _runner_group_selected),
    # Advisory: a stack may open a group to public repositories on purpose (every pool in it
    # must say estate.allow_public_repositories); the preview still says so.
    Rule("runner-groups-not-public", "Runner groups are closed to public repositories.", False, _runner_group_not_public),
)


@dataclass(frozen=True)
class Violation:
    rule: str
    mandatory: bool
    resource: str
    message: str

    def __str__(self) -> str:
        level = "mandatory" if self.mandatory else "advisory"
        return f"{self.rule} ({level}): {self.resource}: {self.message}"


def check(kind: str, name: str, props: Props) -> list[Violation]:
    """Every rule against one resource."""
    return [Violation(r.name, r.mandatory, name, message) for r in RULES for message in r.check(kind, props)]
