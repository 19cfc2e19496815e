"""The stack's own settings: validated once, errors name the stack file and key."""

from __future__ import annotations

from typing import Any

import pytest

from estate.config.diagnostics import ConfigError
from estate.config.stack_config import parse_stack_config
from estate.derive.network_plan import plan_subnets

GOOD: dict[str, Any] = {
    "environment": "prod",
    "region": "us-east-1",
    "github": {"org": "example-org", "app_id": 42},
    "secrets": {"github_app_private_key": "/x/key", "webhook_secret": "/x/hook"},
}


def refused(**changes: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_stack_config({**GOOD, **changes}, "Pulumi.prod.yaml")
    assert info.value.file == "Pulumi.prod.yaml"
    return info.value


def test_defaults_are_a_new_two_zone_vpc_with_one_nat() -> None:
    stack = parse_stack_config(GOOD, "Pulumi.prod.yaml")
    assert stack.network.creates_vpc
    assert (stack.network.az_count, stack.network.nat, stack.network.runner_subnets) == (2, "single", "private")


def test_region_errors_name_the_aws_key() -> None:
    assert refused(region="mars-1").key == "aws:region"


def test_missing_secret_names() -> None:
    err = refused(secrets={"webhook_secret": "/x"})
    assert (err.key, err.message) == ("runner-estate:secrets.github_app_private_key", "required key is missing")


def test_secret_values_are_not_accepted_where_names_belong() -> None:
    assert refused(secrets={"github_app_private_key": "-----BEGIN RSA PRIVATE KEY-----", "webhook_secret": "/x"}).key == (
        "runner-estate:secrets.github_app_private_key"
    )


def test_bring_your_own_needs_vpc_and_subnets() -> None:
    assert "vpc_id and subnet_ids" in refused(network={"vpc_id": "vpc-0abc"}).message


def test_cidr_must_fit_subnets() -> None:
    assert "between /16 and /22" in refused(network={"cidr": "10.0.0.0/26"}).message
    assert "not an IPv4 CIDR" in refused(network={"cidr": "10.0.0.300/16"}).message


def test_one_zone_is_not_enough() -> None:
    assert "at least 2" in refused(network={"availability_zones": ["us-east-1a"]}).message


def test_retention_must_be_a_cloudwatch_value() -> None:
    assert refused(log_retention_days=10).key == "runner-estate:log_retention_days"


@pytest.mark.parametrize("zones", [2, 3, 4, 6])
def test_subnets_do_not_overlap_and_stay_inside_the_vpc(zones: int) -> None:
    import ipaddress

    vpc = ipaddress.IPv4Network("10.42.0.0/16")
    plan = plan_subnets(str(vpc), [f"z{i}" for i in range(zones)])
    blocks = [ipaddress.IPv4Network(c) for z in plan for c in (z.public_cidr, z.private_cidr)]
    assert len(blocks) == 2 * zones
    assert all(b.subnet_of(vpc) for b in blocks)
    assert all(not a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
