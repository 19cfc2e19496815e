"""The policy pack's rules: compliant and violating resources for each, the pack's validator
wiring, and `estate preview` failing on a mandatory violation."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from estate import cli
from estate.config.diagnostics import ConfigError
from estate.config.loader import load_pool
from estate.preview import Preview, Registered, run_program
from lambda_src.aws.ec2_fleet import Ec2Fleet
from lambda_src.core.settings import ControlPlaneSettings
from policy import rules
from tests.conftest import PROJECT_DIR, write_pool


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


ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
TEAM_POLICY = "arn:aws:iam::123456789012:policy/team/extra-for-runners"
PARAMETERS = "arn:aws:ssm:us-east-1:123456789012:parameter"
# What AmazonSSMManagedInstanceCore grants on parameters, written inline.
READ_ALL_PARAMETERS = {"Sid": "Params", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"], "Resource": "*"}


RECIPE_DISK = [{"deviceName": "/dev/sda1", "ebs": {"encrypted": "true"}}]
RECIPE = {"blockDeviceMappings": RECIPE_DISK}
BUILD_INFRA = {"instanceMetadataOptions": {"httpTokens": "required"}, "terminateInstanceOnFailure": True}


def attach(arn: str) -> dict[str, Any]:
    return {"role": "pool-role", "policyArn": arn}


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
        # 17.9: managed policies, however they are attached, and inline documents
        (rules.ROLE_POLICY_ATTACHMENT, attach(ADMIN), ["no-broad-managed-policies"]),
        (rules.ROLE_POLICY_ATTACHMENT, attach(SSM_CORE), ["no-broad-managed-policies"]),
        (rules.ROLE_POLICY_ATTACHMENT, attach("arn:aws:iam::aws:policy/service-role/AmazonEC2RoleforSSM"), ["no-broad-managed-policies"]),
        (rules.ROLE_POLICY_ATTACHMENT, attach(TEAM_POLICY), ["managed-policies-reported"]),
        ("aws:iam/policyAttachment:PolicyAttachment", {"policyArn": ADMIN, "roles": ["runners"]}, ["no-broad-managed-policies"]),
        (
            "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive",
            {"policyArns": [SSM_CORE]},
            ["no-broad-managed-policies"],
        ),
        (rules.ROLE, {"managedPolicyArns": [ADMIN]}, ["no-broad-managed-policies"]),
        (rules.ROLE, {"inlinePolicies": [{"name": "x", **policy(READ_ALL_PARAMETERS)}]}, ["no-broad-secret-reads"]),
        (
            rules.ROLE,
            {"inlinePolicies": [{"name": "x", **policy({"Sid": "A", "Effect": "Allow", "Action": "ssm:*", "Resource": "*"})}]},
            ["no-wildcard-iam-actions", "no-broad-secret-reads"],
        ),
        (rules.ROLE_POLICY, policy(READ_ALL_PARAMETERS), ["no-broad-secret-reads"]),
        (rules.ROLE_POLICY, policy({**READ_ALL_PARAMETERS, "Resource": f"{PARAMETERS}/*"}), ["no-broad-secret-reads"]),
        (rules.ROLE_POLICY, policy({**READ_ALL_PARAMETERS, "Resource": f"{PARAMETERS}/runner-estate/prod/jit/*"}), []),
        (rules.ROLE_POLICY, policy({**READ_ALL_PARAMETERS, "Effect": "Deny"}), []),
        (
            rules.ROLE_POLICY,
            policy(
                {
                    "Sid": "S",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": "arn:aws:secretsmanager:*:*:secret:*",
                }
            ),
            ["no-broad-secret-reads"],
        ),
        (
            rules.ROLE_POLICY,
            policy({"Sid": "N", "Effect": "Allow", "Action": "ssm:GetParameter", "NotResource": f"{PARAMETERS}/x"}),
            ["no-wildcard-iam-actions", "no-broad-secret-reads"],
        ),
        # issue 20: the estate's images
        (rules.IMAGE_RECIPE, {"blockDeviceMappings": [{"deviceName": "/dev/sda1", "ebs": {"encrypted": "true"}}]}, []),
        (
            rules.IMAGE_RECIPE,
            {"blockDeviceMappings": [{"deviceName": "/dev/sda1", "ebs": {"volumeSize": 30}}]},
            ["image-volumes-encrypted"],
        ),
        (rules.IMAGE_RECIPE, {"parentImage": "ami-0123456789abcdef0"}, ["image-volumes-encrypted"]),
        (rules.IMAGE_RECIPE, {"blockDeviceMappings": [{"deviceName": "/dev/sdb", "noDevice": True}, *RECIPE_DISK]}, []),
        (rules.IMAGE_INFRASTRUCTURE, BUILD_INFRA, []),
        (rules.IMAGE_INFRASTRUCTURE, {**BUILD_INFRA, "instanceMetadataOptions": {"httpTokens": "optional"}}, ["image-builds-imdsv2"]),
        (rules.IMAGE_INFRASTRUCTURE, {**BUILD_INFRA, "instanceMetadataOptions": None}, ["image-builds-imdsv2"]),
        (rules.IMAGE_INFRASTRUCTURE, {**BUILD_INFRA, "keyPair": "ops"}, ["image-builds-no-key-pair"]),
        (rules.IMAGE_INFRASTRUCTURE, {**BUILD_INFRA, "terminateInstanceOnFailure": False}, ["image-builds-no-key-pair"]),
        (rules.IMAGE_DISTRIBUTION, {"distributions": [{"region": "us-east-1", "amiDistributionConfiguration": {"name": "x"}}]}, []),
        (
            rules.IMAGE_DISTRIBUTION,
            {"distributions": [{"region": "us-east-1", "amiDistributionConfiguration": {"launchPermission": {"userGroups": ["all"]}}}]},
            ["images-private"],
        ),
        (rules.IMAGE_COMPONENT, {"data": "phases: [{name: build, steps: []}]"}, []),
        (rules.IMAGE_COMPONENT, {"data": "commands: [export GH=ghp_" + "a" * 36 + "]"}, ["no-secrets-in-images"]),
        (rules.IMAGE_RECIPE, {**RECIPE, "userDataBase64": base64.b64encode(b"AKIAABCDEFGHIJKLMNOP").decode()}, ["no-secrets-in-images"]),
    ],
)
def test_rules(kind: str, props: dict[str, Any], expected: list[str]) -> None:
    assert names(kind, props) == expected


def test_only_what_config_lets_a_pool_opt_into_is_advisory() -> None:
    """Public runner groups, unchecked managed policies, unchecked security groups and IMDSv1
    each need an explicit opt-out in config; the pack reports them. Everything else is mandatory."""
    advisory = {r.name for r in rules.RULES if not r.mandatory} | {r.name for r in rules.STACK_RULES if not r.mandatory}
    assert advisory == {
        "runner-groups-not-public",
        "managed-policies-reported",
        "unchecked-security-groups-reported",
        "imdsv1-opt-out-reported",
    }


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
    assert [str(v) for v in rules.check_stack([r.stack_resource() for r in records])] == []


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


def test_preview_fails_on_a_broad_managed_policy_a_fork_attaches(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """17.9 as the issue found it: AdministratorAccess on a runner role passed `preview`."""
    attached = Registered(rules.ROLE_POLICY_ATTACHMENT, "pool-admin", "pool", attach(ADMIN))
    monkeypatch.setattr("estate.preview.run_program", lambda *a, **k: Preview([attached], []))
    assert cli.main(["preview"]) == cli.EXIT_POLICY
    assert f"no-broad-managed-policies (mandatory): pool-admin: {ADMIN} allows every action" in capsys.readouterr().err


# ---- stack rules: the security groups runner hosts use -----------------------------------


def resource(kind: str, name: str, props: dict[str, Any], **dependencies: list[str]) -> rules.StackResource:
    return rules.StackResource(kind, name, f"urn:{name}", props, {k: v for k, v in dependencies.items()}, f"{name}-id")


def runner_template(*groups: Any) -> rules.StackResource:
    """A launch template using `groups` (ids) and depending on the groups of this program among them."""
    ours = [f"urn:{g.removesuffix('-id')}" for g in groups if isinstance(g, str) and not g.startswith("sg-")]
    return resource(
        rules.LAUNCH_TEMPLATE, "pool-lt", template(networkInterfaces=[{"securityGroups": list(groups)}]), networkInterfaces=ours
    )


RUNNERS = resource(rules.SECURITY_GROUP, "runners", {"egress": [{"cidrBlocks": ["0.0.0.0/0"]}]})
SSH_FROM_VPC = {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/16"]}


def stack_names(resources: list[rules.StackResource]) -> list[tuple[str, str]]:
    return [(v.rule, v.message) for v in rules.check_stack(resources)]


def test_a_runner_group_of_ours_passes_and_an_unused_group_may_admit_https() -> None:
    endpoints = resource(rules.SECURITY_GROUP, "endpoints", {"ingress": [{"fromPort": 443, "cidrBlocks": ["10.0.0.0/16"]}]})
    assert stack_names([RUNNERS, endpoints, runner_template("runners-id")]) == []


@pytest.mark.parametrize(
    "extra",
    [
        [],  # the group's own inline rule (below)
        [resource(rules.SECURITY_GROUP_RULE, "ssh", {"type": "ingress", **SSH_FROM_VPC}, securityGroupId=["urn:runners"])],
        [resource(rules.INGRESS_RULE, "ssh", {"cidrIpv4": "10.0.0.0/16", "fromPort": 22, "toPort": 22}, securityGroupId=["urn:runners"])],
        [resource(rules.SECURITY_GROUP_RULE, "ssh", {"type": "ingress", "securityGroupId": "runners-id", **SSH_FROM_VPC})],
    ],
    ids=["inline", "rule-resource", "vpc-ingress-rule", "rule-by-id"],
)
def test_any_ingress_on_a_runner_group_of_ours_is_refused(extra: list[rules.StackResource]) -> None:
    """The no-open-ingress rule lets SSH from the VPC through; a runner's group admits nothing."""
    group = resource(rules.SECURITY_GROUP, "runners", {"ingress": [SSH_FROM_VPC]}) if not extra else RUNNERS
    found = stack_names([group, *extra, runner_template("runners-id")])
    assert [name for name, _ in found] == ["runner-security-groups-admit-nothing"]
    assert "security group runners admits ingress from 10.0.0.0/16 on port 22" in found[0][1]


def test_a_group_found_by_its_arn_counts_as_ours() -> None:
    """In the real pack a created group's id is known only through its outputs (`arn`)."""
    group = rules.StackResource(
        rules.SECURITY_GROUP,
        "extra",
        "urn:extra",
        {"arn": "arn:aws:ec2:us-east-1:1:security-group/sg-0aaaaaaaaaaaaaaaa", "ingress": [SSH_FROM_VPC]},
    )
    host = resource(rules.INSTANCE, "box", {"vpcSecurityGroupIds": ["sg-0aaaaaaaaaaaaaaaa"]})
    assert [name for name, _ in stack_names([group, host])] == ["runner-security-groups-admit-nothing"]


def test_a_group_given_only_by_id_is_reported() -> None:
    found = stack_names([RUNNERS, runner_template("runners-id", "sg-0123456789abcdef0")])
    assert found == [
        (
            "unchecked-security-groups-reported",
            "uses security groups this program does not create (sg-0123456789abcdef0): no rule can check that they admit nothing in",
        )
    ]
    # During a first preview our group's id is not known yet; the count still holds.
    unknown = runner_template(None, "sg-0123456789abcdef0")
    unknown = rules.StackResource(unknown.type, unknown.name, unknown.urn, unknown.props, {"networkInterfaces": ["urn:runners"]})
    assert [name for name, _ in stack_names([RUNNERS, unknown])] == ["unchecked-security-groups-reported"]


def test_the_packs_stack_validator_reports_with_the_resources_urn() -> None:
    from policy.__main__ import stack_validator  # the wiring only; the pack itself is never built here

    (rule,) = [r for r in rules.STACK_RULES if r.name == "runner-security-groups-admit-nothing"]
    group = SimpleNamespace(resource_type=rules.SECURITY_GROUP, name="runners", urn="urn:runners", props={"ingress": [SSH_FROM_VPC]},
                            property_dependencies={})  # fmt: skip
    lt = SimpleNamespace(
        resource_type=rules.LAUNCH_TEMPLATE,
        name="pool-lt",
        urn="urn:pool-lt",
        props={"networkInterfaces": [{"securityGroups": ["sg-0aaaaaaaaaaaaaaaa"]}]},
        property_dependencies={"networkInterfaces": [group]},
    )
    reported: list[tuple[str, str | None]] = []
    stack_validator(rule)(SimpleNamespace(resources=[group, lt]), lambda message, urn: reported.append((message, urn)))
    assert [urn for _, urn in reported] == ["urn:pool-lt"]


# ---- config and pack agree (one rule: policy.rules.managed_policy_finding) ---------------


def pool_with(tmp_path: Path, runner: str = "", estate: str = "") -> Path:
    text = EXTRA_POOL.format(runner=runner, estate=estate)
    return write_pool(tmp_path, "cpu-extra", text)


EXTRA_POOL = """\
matcherConfig:
  exactMatch: true
  labelMatchers: [[self-hosted, linux, x64, extra]]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [extra]
  instance_types: [m7i.large]
  runners_maximum_count: 2
{runner}
estate:
  runner_group: gpu
{estate}
"""


@pytest.mark.parametrize("arn", [ADMIN, SSM_CORE, "arn:aws:iam::aws:policy/PowerUserAccess", "arn:aws:iam::aws:policy/ReadOnlyAccess"])
def test_validate_refuses_what_the_pack_refuses_even_with_the_opt_out(tmp_path: Path, arn: str) -> None:
    """17.9: these passed `validate`; now they are refused with the pack's own words."""
    path = pool_with(tmp_path, f"  runner_iam_role_managed_policy_arns: [{arn}]", "  allow_unchecked_managed_policies: true")
    with pytest.raises(ConfigError) as info:
        load_pool(path)
    assert info.value.key == "runner_config.runner_iam_role_managed_policy_arns[0]"
    assert info.value.message == f"refused: {rules.managed_policy_finding(arn)[1]}"
    assert [v.rule for v in rules.check(rules.ROLE_POLICY_ATTACHMENT, "a", attach(arn))] == ["no-broad-managed-policies"]


def test_an_unchecked_managed_policy_needs_the_opt_out_and_is_then_reported(tmp_path: Path) -> None:
    path = pool_with(tmp_path, f"  runner_iam_role_managed_policy_arns: [{TEAM_POLICY}]")
    with pytest.raises(ConfigError, match=r"set estate\.allow_unchecked_managed_policies: true"):
        load_pool(path)
    path = pool_with(tmp_path, f"  runner_iam_role_managed_policy_arns: [{TEAM_POLICY}]", "  allow_unchecked_managed_policies: true")
    _, warnings = load_pool(path)
    assert [f"{w.key}: {w.message}" for w in warnings if w.key and "managed" in w.key] == [
        f"estate.allow_unchecked_managed_policies: security opt-out: every job of this pool holds {TEAM_POLICY}"
    ]


def test_an_additional_security_group_needs_the_opt_out_and_is_then_reported(tmp_path: Path) -> None:
    gid = "sg-0123456789abcdef0"
    path = pool_with(tmp_path, f"  runner_additional_security_group_ids: [{gid}]")
    with pytest.raises(ConfigError, match=r"set estate\.allow_unchecked_security_groups: true") as info:
        load_pool(path)
    assert info.value.key == "runner_config.runner_additional_security_group_ids[0]"
    with pytest.raises(ConfigError, match="is not a security group id"):
        load_pool(pool_with(tmp_path, "  runner_additional_security_group_ids: [default]", "  allow_unchecked_security_groups: true"))
    _, warnings = load_pool(
        pool_with(tmp_path, f"  runner_additional_security_group_ids: [{gid}]", "  allow_unchecked_security_groups: true")
    )
    assert any(w.key == "estate.allow_unchecked_security_groups" and gid in w.message for w in warnings)


def test_opted_out_extras_reach_the_program_and_the_pack_reports_them(tmp_path: Path) -> None:
    """With both opt-outs, the offline preview of a real stack registers the attachment and the
    extra group, and the pack reports each (advisory): `validate` and `preview` say the same."""
    configs = tmp_path / "configs"
    configs.mkdir()
    for example in ("cpu-x64-spot.yaml",):
        (configs / example).write_text((PROJECT_DIR / "runner_configs" / example).read_text())
    pool_with(
        configs,
        f"  runner_iam_role_managed_policy_arns: [{TEAM_POLICY}]\n  runner_additional_security_group_ids: [sg-0123456789abcdef0]",
        "  allow_unchecked_managed_policies: true\n  allow_unchecked_security_groups: true",
    )
    records = run_program(PROJECT_DIR, "staging", stack_path=stack_file(tmp_path, configs)).records
    found = [v for r in records for v in rules.check(r.type, r.name, r.inputs)] + rules.check_stack([r.stack_resource() for r in records])
    assert sorted((v.rule, v.mandatory, v.resource) for v in found) == [
        ("managed-policies-reported", False, "cpu-extra-extra-policy-0"),
        ("unchecked-security-groups-reported", False, "cpu-extra-lt"),
    ]
    assert "sg-0123456789abcdef0" in next(v.message for v in found if v.rule.startswith("unchecked"))


def stack_file(tmp_path: Path, configs: Path) -> Path:
    config: dict[str, Any] = {
        "aws:region": "eu-west-1",
        "runner-estate:environment": "staging",
        "runner-estate:github": {"org": "example", "app_id": 1, "installation_id": 2},
        "runner-estate:runner_groups": {"gpu": {"repositories": ["app"]}},
        "runner-estate:secrets": {"github_app_private_key": "/k", "webhook_secret": "/w"},
        "runner-estate:github_app_key": {"secure": "v1:x"},
        "runner-estate:webhook_secret_value": {"secure": "v1:y"},
        "runner-estate:runner_configs": str(configs),
        "runner-estate:network": {"vpc_id": "vpc-0abc", "subnet_ids": ["subnet-01", "subnet-02"]},
    }
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(yaml.safe_dump({"config": config}), encoding="utf-8")
    return path


def test_the_documented_imdsv1_opt_out_passes_the_pack_with_an_advisory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 19.8: `estate.allow_imdsv1: true`, documented as an opt-out, was blocked by the
    mandatory imdsv2-required rule, so it could not be used."""
    configs = tmp_path / "configs"
    configs.mkdir()
    pool_with(configs, "  runner_metadata_options: {http_tokens: optional}", "  allow_imdsv1: true")
    preview = run_program(PROJECT_DIR, "staging", stack_path=stack_file(tmp_path, configs))
    (template,) = [r for r in preview.records if r.type == rules.LAUNCH_TEMPLATE]
    assert template.inputs["metadataOptions"]["httpTokens"] == "optional"
    found = [v for r in preview.records for v in rules.check(r.type, r.name, r.inputs)]
    assert [(v.rule, v.mandatory, v.resource) for v in found] == [("imdsv1-opt-out-reported", False, "cpu-extra-lt")]
    # Through the CLI: exit 0, the advisory on stderr.
    monkeypatch.setattr("estate.preview.run_program", lambda *a, **k: preview)
    assert cli.main(["preview"]) == 0
    assert "policy: imdsv1-opt-out-reported (advisory): cpu-extra-lt: metadataOptions.httpTokens is 'optional'" in capsys.readouterr().err


def test_only_the_program_s_opt_out_tag_lets_imdsv1_pass() -> None:
    """A launch template without the tag the program sets for the opt-out stays refused."""
    optional = {"metadataOptions": {"httpTokens": "optional"}}
    assert names(rules.LAUNCH_TEMPLATE, optional) == ["imdsv2-required"]
    tagged = {**optional, "tags": {rules.IMDSV1_OPT_OUT_TAG: "true"}}
    assert names(rules.LAUNCH_TEMPLATE, tagged) == ["imdsv1-opt-out-reported"]
    assert names(rules.LAUNCH_TEMPLATE, {**optional, "tags": {rules.IMDSV1_OPT_OUT_TAG: "false"}}) == ["imdsv2-required"]
    required = {"metadataOptions": {"httpTokens": "required"}, "tags": {rules.IMDSV1_OPT_OUT_TAG: "true"}}
    assert names(rules.LAUNCH_TEMPLATE, required) == []


class _RunInstancesRecorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def run_instances(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        return {"Instances": []}


def test_a_warm_instance_joins_the_opted_in_groups_a_fresh_host_joins(tmp_path: Path) -> None:
    """A warm instance (and a capacity-block node) names its own network interface at launch,
    which replaces the launch template's: the scaler's settings carry the same groups as the
    template, so a started warm host is the fresh host's equal."""
    configs = tmp_path / "configs"
    configs.mkdir()
    extra = "sg-0123456789abcdef0"
    pool_with(configs, f"  runner_additional_security_group_ids: [{extra}]", "  allow_unchecked_security_groups: true")
    records = run_program(PROJECT_DIR, "staging", stack_path=stack_file(tmp_path, configs)).records
    template = next(r for r in records if r.name == "cpu-extra-lt")
    (interface,) = template.inputs["networkInterfaces"]
    groups = list(interface["securityGroups"])
    assert groups[1:] == [extra]
    function = next(r for r in records if r.type == "aws:lambda/function:Function")
    settings = ControlPlaneSettings.from_dict(json.loads(function.inputs["code"].assets["lambda_src/control_plane.json"].text))
    pool = settings.pools["cpu-extra"]
    assert list(pool.security_group_ids) == groups
    ec2 = _RunInstancesRecorder()
    Ec2Fleet(ec2=ec2, environment="staging").launch_warm(pool, 1, "token")
    (request,) = ec2.requests
    assert request["NetworkInterfaces"][0]["Groups"] == groups
