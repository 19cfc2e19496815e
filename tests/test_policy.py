"""The policy pack's rules: compliant and violating resources for each, the pack's validator
wiring, and `estate preview` failing on a mandatory violation."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest

from estate import cli
from estate.preview import Preview, Registered, run_program
from policy import rules
from tests.conftest import PROJECT_DIR


def names(kind: str, props: dict[str, Any]) -> list[str]:
    return [v.rule for v in rules.check(kind, "r", props)]


def template(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "metadataOptions": {"httpTokens": "required"},
        "blockDeviceMappings": [{"deviceName": "/dev/sda1", "ebs": {"encrypted": "true"}}],
        "userData": base64.b64encode(b"#!/bin/bash\npython3 -m lambda_src.host.bootstrap\n").decode(),
    }
    props.update(overrides)
    return props


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"policy": json.dumps({"Version": "2012-10-17", "Statement": list(statements)})}


@pytest.mark.parametrize(
    ("kind", "props", "expected"),
    [
        (rules.LAUNCH_TEMPLATE, template(), []),
        (rules.LAUNCH_TEMPLATE, template(metadataOptions={"httpTokens": "optional"}), ["imdsv2-required"]),
        (rules.LAUNCH_TEMPLATE, template(metadataOptions=None), ["imdsv2-required"]),
        (
            rules.LAUNCH_TEMPLATE,
            template(blockDeviceMappings=[{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}]),
            ["encrypted-volumes"],
        ),
        (rules.VOLUME, {"encrypted": False}, ["encrypted-volumes"]),
        (
            rules.LAUNCH_TEMPLATE,
            template(userData=base64.b64encode(b"export T=ghp_" + b"a" * 36).decode()),
            ["no-secrets-in-user-data-or-env"],
        ),
        (rules.LAUNCH_TEMPLATE, template(userData="-----BEGIN RSA PRIVATE KEY-----"), ["no-secrets-in-user-data-or-env"]),
        (rules.LAMBDA_FUNCTION, {"environment": {"variables": {"KEY": "AKIAABCDEFGHIJKLMNOP"}}}, ["no-secrets-in-user-data-or-env"]),
        (rules.LAMBDA_FUNCTION, {"environment": {"variables": {"TABLE": "ledger"}}}, []),
        ("aws:iam/rolePolicy:RolePolicy", policy({"Sid": "A", "Action": ["ec2:DescribeInstances"], "Resource": "*"}), []),
        ("aws:iam/rolePolicy:RolePolicy", policy({"Sid": "A", "Action": "ec2:*", "Resource": "*"}), ["no-wildcard-iam-actions"]),
        ("aws:iam/policy:Policy", policy({"Sid": "A", "NotAction": ["iam:*"], "Resource": "*"}), ["no-wildcard-iam-actions"]),
        (rules.SECURITY_GROUP, {"ingress": [{"cidrBlocks": ["10.0.0.0/8"], "fromPort": 443}]}, []),
        (rules.SECURITY_GROUP, {"ingress": [{"cidrBlocks": ["0.0.0.0/0"], "fromPort": 22}]}, ["no-open-ingress"]),
        (rules.SECURITY_GROUP_RULE, {"type": "ingress", "ipv6CidrBlocks": ["::/0"], "fromPort": 22}, ["no-open-ingress"]),
        (rules.SECURITY_GROUP_RULE, {"type": "egress", "cidrBlocks": ["0.0.0.0/0"]}, []),
        (rules.INGRESS_RULE, {"cidrIpv4": "0.0.0.0/0", "fromPort": 22}, ["no-open-ingress"]),
        (rules.RUNNER_GROUP, {"visibility": "selected", "allowsPublicRepositories": False}, []),
        (rules.RUNNER_GROUP, {"visibility": "all", "allowsPublicRepositories": False}, ["runner-groups-selected"]),
        (rules.RUNNER_GROUP, {"visibility": "selected", "allowsPublicRepositories": True}, ["runner-groups-not-public"]),
    ],
)
def test_rules(kind: str, props: dict[str, Any], expected: list[str]) -> None:
    assert names(kind, props) == expected


def test_public_runner_groups_are_advisory_everything_else_mandatory() -> None:
    assert {r.name for r in rules.RULES if not r.mandatory} == {"runner-groups-not-public"}


def test_the_packs_validator_reports_through_pulumi_policys_callback() -> None:
    from policy.__main__ import validator  # the wiring only; the pack itself is never built here

    (rule,) = [r for r in rules.RULES if r.name == "imdsv2-required"]
    reported: list[tuple[str, str | None]] = []
    args = SimpleNamespace(resource_type=rules.LAUNCH_TEMPLATE, props={"metadataOptions": {"httpTokens": "optional"}})
    validator(rule)(args, lambda message, urn: reported.append((message, urn)))
    assert reported == [("metadataOptions.httpTokens is 'optional'; IMDSv2 needs 'required'", None)]


def test_the_example_estate_passes_every_rule() -> None:
    records = run_program(PROJECT_DIR, "prod").records
    assert [str(v) for r in records for v in rules.check(r.type, r.name, r.inputs)] == []


def test_preview_fails_on_a_mandatory_violation(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bad = Registered(rules.LAUNCH_TEMPLATE, "pool-lt", "pool", template(metadataOptions={"httpTokens": "optional"}))
    monkeypatch.setattr("estate.preview.run_program", lambda *a, **k: Preview([bad], []))
    assert cli.main(["preview"]) == cli.EXIT_POLICY
    assert "policy: imdsv2-required (mandatory): pool-lt: metadataOptions.httpTokens is 'optional'" in capsys.readouterr().err


def test_preview_only_notes_an_advisory_violation(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    public = Registered(rules.RUNNER_GROUP, "group", "github", {"visibility": "selected", "allowsPublicRepositories": True})
    monkeypatch.setattr("estate.preview.run_program", lambda *a, **k: Preview([public], []))
    assert cli.main(["preview"]) == 0
    assert "runner-groups-not-public (advisory)" in capsys.readouterr().err
