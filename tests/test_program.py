"""The Pulumi program under mocks: the security properties of what it registers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.preview import Registered, run_program
from lambda_src.core import tags
from tests.conftest import EXAMPLE_CONFIGS, PROJECT_DIR

POOLS = load_estate([EXAMPLE_CONFIGS]).pools


@pytest.fixture(scope="module")
def prod() -> list[Registered]:
    return run_program(PROJECT_DIR, "prod").records


def of_type(records: list[Registered], suffix: str) -> list[Registered]:
    return [r for r in records if r.type.endswith(suffix)]


def policy_statements(records: list[Registered]) -> list[dict[str, Any]]:
    found = []
    for r in records:
        for key in ("policy", "assumeRolePolicy"):
            if key in r.inputs:
                found += json.loads(r.inputs[key])["Statement"]
    return found


def test_every_launch_template_requires_imdsv2(prod: list[Registered]) -> None:
    templates = of_type(prod, ":LaunchTemplate")
    assert len(templates) == len(POOLS)
    for t in templates:
        assert t.inputs["metadataOptions"]["httpTokens"] == "required", t.name


def test_every_volume_is_encrypted_gp3_sized_from_config(prod: list[Registered]) -> None:
    sizes = {p.name: p.runner.block_device_mappings[0].volume_size for p in POOLS}
    for t in of_type(prod, ":LaunchTemplate"):
        disks = t.inputs["blockDeviceMappings"]
        assert all(d["ebs"]["encrypted"] == "true" for d in disks), t.name
        assert disks[0]["ebs"]["volumeType"] == "gp3"
        assert disks[0]["ebs"]["volumeSize"] == sizes[t.parent or ""]


def test_no_ingress_from_anywhere(prod: list[Registered]) -> None:
    for sg in of_type(prod, ":SecurityGroup"):
        for rule in sg.inputs.get("ingress", []):
            assert "0.0.0.0/0" not in rule.get("cidrBlocks", []), sg.name
            assert "::/0" not in rule.get("ipv6CidrBlocks", []), sg.name
    assert not of_type(prod, ":SecurityGroupRule")
    assert not of_type(prod, ":SecurityGroupIngressRule")


def test_runner_security_group_admits_nothing(prod: list[Registered]) -> None:
    (runners,) = [sg for sg in of_type(prod, ":SecurityGroup") if sg.name == "network-runners"]
    assert runners.inputs.get("ingress", []) == []
    for t in of_type(prod, ":LaunchTemplate"):
        assert t.inputs["networkInterfaces"][0]["securityGroups"] == ["network-runners-id"]


def test_no_iam_statement_has_a_wildcard_action(prod: list[Registered]) -> None:
    statements = policy_statements(prod)
    assert statements
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        assert all("*" not in a for a in actions), s


def runner_statements(prod: list[Registered]) -> list[dict[str, Any]]:
    pools = {p.name for p in POOLS}
    return policy_statements([r for r in of_type(prod, ":RolePolicy") if r.parent in pools])


def test_runner_roles_read_only_their_own_runner_config(prod: list[Registered]) -> None:
    reads = [s for s in runner_statements(prod) if any(a.startswith(("ssm:GetParameter", "secretsmanager:", "kms:")) for a in s["Action"])]
    assert len(reads) == len(POOLS)
    for s in reads:
        assert s["Action"] == ["ssm:GetParameter", "ssm:DeleteParameter"]
        assert s["Resource"] == "arn:aws:ssm:us-east-1:123456789012:parameter/runner-estate/prod/jit/*"
        assert s["Condition"] == {"StringEquals": {"ssm:resourceTag/runner-estate:instance-arn": "${ec2:SourceInstanceARN}"}}
    assert not of_type(prod, ":RolePolicyAttachment")  # no managed policies by default (SSM core reads every parameter)


def test_log_permissions_are_scoped_to_the_pools_own_groups(prod: list[Registered]) -> None:
    for policy in [r for r in of_type(prod, ":RolePolicy") if r.name.endswith("-cloudwatch-agent")]:
        (logs,) = [s for s in json.loads(policy.inputs["policy"])["Statement"] if s["Sid"] == "OwnLogGroups"]
        assert all(arn.endswith(f"{policy.parent}-log-{arn.rsplit('-log-', 1)[1]}") for arn in logs["Resource"])


def test_one_fleet_per_pool_each_with_template_role_and_profile(prod: list[Registered]) -> None:
    fleets = [r.name for r in prod if r.type == "runner-estate:index:RunnerFleet"]
    assert sorted(fleets) == sorted(p.name for p in POOLS)
    for pool in POOLS:
        children = Counter(r.type.rsplit(":", 1)[1] for r in prod if r.parent == pool.name)
        assert children["LaunchTemplate"] == 1
        assert children["Role"] == 1
        assert children["InstanceProfile"] == 1


def test_instances_are_tagged_as_ours_with_pool_and_labels(prod: list[Registered]) -> None:
    by_pool = {p.name: p for p in POOLS}
    for t in of_type(prod, ":LaunchTemplate"):
        pool = by_pool[t.parent or ""]
        kinds = {spec["resourceType"] for spec in t.inputs["tagSpecifications"]}
        assert kinds == {"instance", "volume", "network-interface"}
        for spec in t.inputs["tagSpecifications"]:
            assert spec["tags"][tags.MANAGED] == "true"
            assert spec["tags"][tags.POOL] == pool.name
            assert spec["tags"][tags.ENVIRONMENT] == "prod"
            assert spec["tags"][tags.LABELS].split(",") == list(pool.base_labels)


def test_every_taggable_resource_is_marked_as_ours(prod: list[Registered]) -> None:
    taggable = [r for r in prod if "tags" in r.inputs]
    assert len(taggable) > 50
    for r in taggable:
        assert r.inputs["tags"][tags.MANAGED] == "true", r.name


def test_nothing_is_launched_at_deploy_time(prod: list[Registered]) -> None:
    launched = [r for r in prod if r.type.split(":")[-1] in {"Instance", "Fleet", "SpotFleetRequest", "SpotInstanceRequest", "Group"}]
    assert launched == []


def test_capacity_block_pools_launch_into_blocks(prod: list[Registered]) -> None:
    for t in of_type(prod, ":LaunchTemplate"):
        market = t.inputs.get("instanceMarketOptions", {}).get("marketType")
        assert market == ("capacity-block" if (t.parent or "").endswith("-cb") else None), t.name


def test_ephemeral_hosts_terminate_when_they_power_off(prod: list[Registered]) -> None:
    assert {t.inputs["instanceInitiatedShutdownBehavior"] for t in of_type(prod, ":LaunchTemplate")} == {"terminate"}


def test_new_vpc_spans_the_configured_zones_with_nat_per_zone(prod: list[Registered]) -> None:
    subnets = of_type(prod, ":Subnet")
    zones = {s.inputs["availabilityZone"] for s in subnets}
    assert zones == {"us-east-1a", "us-east-1b", "us-east-1c"}
    assert len(of_type(prod, ":NatGateway")) == 3
    private = [s for s in subnets if "-private-" in s.name]
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in private)
    services = sorted(e.inputs["serviceName"].rsplit(".", 1)[1] for e in of_type(prod, ":VpcEndpoint"))
    assert services == ["ec2messages", "logs", "s3", "ssm", "ssmmessages"]


def test_every_child_is_parented_to_its_component_and_names_are_unique(prod: list[Registered]) -> None:
    components = {r.name for r in prod if r.type.startswith("runner-estate:index:")}
    for r in prod:
        if r.type.startswith("aws:"):
            assert r.parent in components, r.name
    names = Counter((r.type, r.name) for r in prod)
    assert max(names.values()) == 1


# ---- other stack shapes ------------------------------------------------------------------


def stack_file(tmp_path: Path, **network: Any) -> Path:
    config: dict[str, Any] = {
        "aws:region": "eu-west-1",
        "runner-estate:environment": "staging",
        "runner-estate:github": {"org": "example", "app_id": 1, "installation_id": 2},
        "runner-estate:runner_groups": {n: {"repositories": ["app"]} for n in ("gpu", "gpu-h100", "gpu-b200")},
        "runner-estate:secrets": {"github_app_private_key": "/k", "webhook_secret": "/w"},
        "runner-estate:github_app_key": {"secure": "v1:x"},
        "runner-estate:webhook_secret_value": {"secure": "v1:y"},
        "runner-estate:buildkite_agent_token": {"secure": "v1:z"},
        "runner-estate:runner_configs": str(EXAMPLE_CONFIGS),
    }
    if network:
        config["runner-estate:network"] = network
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(yaml.safe_dump({"config": config}), encoding="utf-8")
    return path


def test_bring_your_own_network_creates_no_vpc(tmp_path: Path) -> None:
    path = stack_file(tmp_path, vpc_id="vpc-0abc", subnet_ids=["subnet-01", "subnet-02"])
    records = run_program(PROJECT_DIR, "staging", stack_path=path).records
    assert not of_type(records, ":Vpc")
    assert not of_type(records, ":Subnet")
    (sg,) = of_type(records, ":SecurityGroup")
    assert sg.inputs["vpcId"] == "vpc-0abc"


def test_zones_are_looked_up_when_not_given_and_one_nat_is_the_default(tmp_path: Path) -> None:
    records = run_program(PROJECT_DIR, "staging", stack_path=stack_file(tmp_path)).records
    assert {s.inputs["availabilityZone"] for s in of_type(records, ":Subnet")} == {"eu-west-1a", "eu-west-1b"}
    assert len(of_type(records, ":NatGateway")) == 1
    assert [e.inputs["serviceName"] for e in of_type(records, ":VpcEndpoint")] == ["com.amazonaws.eu-west-1.s3"]


def test_public_runner_subnets_without_nat(tmp_path: Path) -> None:
    records = run_program(PROJECT_DIR, "staging", stack_path=stack_file(tmp_path, nat="none", runner_subnets="public")).records
    assert not of_type(records, ":NatGateway")
    for t in of_type(records, ":LaunchTemplate"):
        assert t.inputs["networkInterfaces"][0]["associatePublicIpAddress"] == "true"
    assert all(not sg.inputs.get("ingress") for sg in of_type(records, ":SecurityGroup"))


def test_private_runners_without_nat_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="need nat") as info:
        run_program(PROJECT_DIR, "staging", stack_path=stack_file(tmp_path, nat="none"))
    assert info.value.file == "Pulumi.staging.yaml"
    assert info.value.key == "runner-estate:network"


def test_unknown_stack_key_is_refused(tmp_path: Path) -> None:
    path = stack_file(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["config"]["runner-estate:netwrok"] = {"nat": "none"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="unknown key") as info:
        run_program(PROJECT_DIR, "staging", stack_path=path)
    assert info.value.key == "runner-estate:netwrok"


def test_bad_pool_file_stops_the_program_before_any_resource(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "broken.yaml").write_text("matcherConfig: {labelMatchers: [[self-hosted]]}\nrunner_config: {runner_os: linux}\n")
    path = stack_file(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["config"]["runner-estate:runner_configs"] = str(configs)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match=r"broken\.yaml: pool 'broken': runner_config\.runner_architecture: required key is missing"):
        run_program(PROJECT_DIR, "staging", stack_path=path)


def test_the_two_secrets_must_be_set_and_encrypted(tmp_path: Path) -> None:
    path = stack_file(tmp_path)
    config = yaml.safe_load(path.read_text())["config"]
    config["runner-estate:webhook_secret_value"] = "plain-text"
    path.write_text(yaml.safe_dump({"config": config}))
    with pytest.raises(ConfigError) as plain:
        run_program(PROJECT_DIR, "staging", stack_path=path)
    assert (plain.value.key, "must be a secret" in plain.value.message) == ("runner-estate:webhook_secret_value", True)
    del config["runner-estate:github_app_key"]
    path.write_text(yaml.safe_dump({"config": config}))
    with pytest.raises(ConfigError) as missing:
        run_program(PROJECT_DIR, "staging", stack_path=path)
    assert missing.value.key == "runner-estate:github_app_key"
    assert "pulumi config set --secret" in missing.value.message
