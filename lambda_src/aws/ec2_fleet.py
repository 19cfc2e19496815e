"""EC2 for the scaler: launch with CreateFleet (instant), list and terminate our hosts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lambda_src.core.settings import PoolSettings
from lambda_src.core.tags import ENVIRONMENT, MANAGED, POOL, runner_tags

log = logging.getLogger("runner_estate.ec2")

# Errors worth another attempt later (throttling, transient capacity); everything else is a bug or a limit.
RETRYABLE_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "InsufficientInstanceCapacity", "InternalError", "Unavailable"}
)


@dataclass
class LaunchResult:
    instance_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # EC2 error codes, for logs and failover
    failed_over: bool = False


@dataclass(frozen=True)
class Host:
    id: str
    pool: str
    launched_at: float
    state: str


@dataclass
class Ec2Fleet:
    ec2: Any  # boto3 EC2 client
    environment: str

    def launch(self, pool: PoolSettings, count: int, client_token: str) -> LaunchResult:
        """Launch `count` hosts across the pool's types and subnets; a spot shortfall whose
        error the pool lists in `failover_errors` is retried once as on-demand."""
        result = LaunchResult()
        market = "on-demand" if pool.capacity_type == "on-demand" else "spot"
        self._fleet(pool, count, market, client_token, result)
        missing = count - len(result.instance_ids)
        if missing > 0 and market == "spot" and set(result.errors) & set(pool.failover_errors):
            log.warning("pool %s: spot gave %d of %d (%s); failing over to on-demand", pool.name, count - missing, count, result.errors)
            result.failed_over = True
            self._fleet(pool, missing, "on-demand", f"{client_token}-od", result)
        return result

    def _fleet(self, pool: PoolSettings, count: int, market: str, token: str, result: LaunchResult) -> None:
        spot_price = {"MaxPrice": pool.max_spot_price} if pool.max_spot_price and market == "spot" else {}
        overrides = [
            {"InstanceType": itype, **({"SubnetId": subnet} if subnet else {}), **spot_price}
            for itype in pool.instance_types
            for subnet in (pool.subnet_ids or ("",))
        ]
        template = {"LaunchTemplateId": pool.launch_template_id, "Version": "$Default"}
        request: dict[str, Any] = {
            "Type": "instant",
            "ClientToken": token[:64],
            "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": template, "Overrides": overrides}],
            "TargetCapacitySpecification": {"TotalTargetCapacity": count, "DefaultTargetCapacityType": market},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(runner_tags(self.environment, pool.name, pool.labels))}],
        }
        if market == "spot":
            # Upstream's strategy names are EC2 Fleet's own.
            request["SpotOptions"] = {"AllocationStrategy": pool.allocation_strategy}
        else:
            request["OnDemandOptions"] = {"AllocationStrategy": "lowest-price"}
        answer = self.ec2.create_fleet(**request)
        for group in answer.get("Instances", []):
            result.instance_ids += group.get("InstanceIds", [])
        result.errors += [e.get("ErrorCode", "Unknown") for e in answer.get("Errors", [])]

    def hosts(self, pools: list[str]) -> list[Host]:
        """Our pending and running hosts of these pools in this environment, from EC2 itself."""
        if not pools:
            return []
        return [
            Host(inst["InstanceId"], tags.get(POOL, ""), inst["LaunchTime"].timestamp(), inst["State"]["Name"])
            for inst, tags in live_instances(self.ec2, self.environment, pools)
        ]

    def terminate(self, instance_ids: list[str]) -> None:
        if instance_ids:
            self.ec2.terminate_instances(InstanceIds=instance_ids)


def live_instances(ec2: Any, environment: str, pools: list[str] | None = None) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """(instance, its tags) for every pending or running instance of ours in this environment."""
    filters = [
        {"Name": f"tag:{MANAGED}", "Values": ["true"]},
        {"Name": f"tag:{ENVIRONMENT}", "Values": [environment]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ]
    if pools is not None:
        filters.append({"Name": f"tag:{POOL}", "Values": pools})
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                yield inst, {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]
