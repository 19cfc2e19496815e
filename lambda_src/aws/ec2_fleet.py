"""EC2 for the scaler: launch with CreateFleet (instant), list and terminate our hosts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lambda_src.core.settings import PoolSettings
from lambda_src.core.tags import ENVIRONMENT, MANAGED, POOL, WARM, runner_tags

log = logging.getLogger("runner_estate.ec2")

# Errors worth another attempt later (throttling, transient capacity); everything else is a bug or a limit.
RETRYABLE_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "InsufficientInstanceCapacity", "InternalError", "Unavailable"}
)

# Spot needs the account-wide service-linked role AWSServiceRoleForEC2Spot. EC2 creates it on
# the first Spot request only if the caller may (our functions may not), so in an account that
# never used Spot every spot launch fails with this code; the stack creates the role when asked
# (`create_service_linked_role_spot`, docs/runbook.md "Spot service-linked role").
SPOT_SERVICE = "spot.amazonaws.com"
SPOT_ROLE_NAME = "AWSServiceRoleForEC2Spot"
SPOT_ROLE_ERROR = "AuthFailure.ServiceLinkedRoleCreationNotPermitted"
SPOT_ROLE_FIX = (
    f"create it once per account: `aws iam create-service-linked-role --aws-service-name {SPOT_SERVICE}`"
    " or set runner-estate:create_service_linked_role_spot: true and `pulumi up` (docs/runbook.md)"
)
# The count a CloudWatch Logs metric filter turns into the `spot_role_missing` metric (and alarm):
# the log record carries it as a field, so the filter matches only this record.
SPOT_ROLE_METRIC = "spot_role_missing"


def is_spot_role_error(code: str, message: str = "") -> bool:
    """Whether an EC2 error means the Spot service-linked role is missing, whatever code carries it:
    CreateFleet may report it under its own code (sometimes prefixed `Client.`) or as a capacity
    error whose message names the role."""
    bare = code.removeprefix("Client.").removeprefix("Server.")
    return bare == SPOT_ROLE_ERROR or "ServiceLinkedRole" in bare or "service-linked role" in message.lower()


def spot_role_finding(role_names: Iterable[str], spot_pools: Iterable[str], created_by_stack: bool) -> tuple[str, str]:
    """A preflight verdict (`estate doctor`): ("ok" | "warn" | "fail", detail). `role_names` are the
    IAM roles the account has (or just whether AWSServiceRoleForEC2Spot is among them)."""
    pools = sorted(spot_pools)
    if SPOT_ROLE_NAME in set(role_names):
        return "ok", f"{SPOT_ROLE_NAME} exists"
    if not pools:
        return "ok", f"{SPOT_ROLE_NAME} is missing, but no pool launches spot"
    if created_by_stack:
        return "warn", f"{SPOT_ROLE_NAME} is missing: the next `pulumi up` creates it (create_service_linked_role_spot)"
    return "fail", f"{SPOT_ROLE_NAME} is missing, so spot pools {', '.join(pools)} cannot launch: {SPOT_ROLE_FIX}"


@dataclass
class LaunchResult:
    instance_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # EC2 error codes, for logs and failover
    failed_over: bool = False
    spot_role_missing: bool = False  # spot was refused for want of the Spot service-linked role

    def counts(self) -> dict[str, int]:
        """What this launch adds to a cycle's counters (EMF metrics)."""
        return {SPOT_ROLE_METRIC: int(self.spot_role_missing), "failed_over": int(self.failed_over)}


@dataclass(frozen=True)
class Host:
    id: str
    pool: str
    launched_at: float
    state: str
    warm: bool = False  # launched into the pool's stopped warm pool (tag WARM)
    image_id: str = ""


# Start errors after which the instance is still a good warm instance, only not now.
START_LATER_CODES = frozenset({"InsufficientInstanceCapacity", "RequestLimitExceeded", "Throttling", "InternalError", "Unavailable"})


@dataclass
class Ec2Fleet:
    ec2: Any  # boto3 EC2 client
    environment: str

    def launch(self, pool: PoolSettings, count: int, client_token: str) -> LaunchResult:
        """Launch `count` hosts across the pool's types and subnets; a spot shortfall whose
        error the pool lists in `failover_errors` is retried once as on-demand.

        A missing Spot service-linked role is not a shortage: it is logged as an error (with its
        fix and the `spot_role_missing` count) and fails over to on-demand only when the pool
        names SPOT_ROLE_ERROR in `failover_errors` itself."""
        result = LaunchResult()
        market = "on-demand" if pool.capacity_type == "on-demand" else "spot"
        self._fleet(pool, count, market, client_token, result)
        missing = count - len(result.instance_ids)
        failover = set(pool.failover_errors)
        if result.spot_role_missing:
            fallback = " failing over to on-demand as the pool asks;" if SPOT_ROLE_ERROR in failover else ""
            log.error(
                "pool %s: spot refused, %s is missing (%s);%s %s",
                pool.name,
                SPOT_ROLE_NAME,
                SPOT_ROLE_ERROR,
                fallback,
                SPOT_ROLE_FIX,
                extra={SPOT_ROLE_METRIC: 1, "environment": self.environment, "pool": pool.name},
            )
            failover &= {SPOT_ROLE_ERROR}
        if missing > 0 and market == "spot" and set(result.errors) & failover:
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
        try:
            answer = self.ec2.create_fleet(**request)
        except Exception as exc:  # botocore's ClientError, read without importing botocore
            response = getattr(exc, "response", None)
            error = response.get("Error", {}) if isinstance(response, dict) else {}
            if market != "spot" or not is_spot_role_error(str(error.get("Code", "")), str(error.get("Message", ""))):
                raise
            answer = {"Errors": [{"ErrorCode": SPOT_ROLE_ERROR, "ErrorMessage": str(error.get("Message", ""))}]}
        for group in answer.get("Instances", []):
            result.instance_ids += group.get("InstanceIds", [])
        for error in answer.get("Errors", []):
            code = str(error.get("ErrorCode", "Unknown"))
            if market == "spot" and is_spot_role_error(code, str(error.get("ErrorMessage", ""))):
                result.spot_role_missing = True
                code = SPOT_ROLE_ERROR  # reported as what it is, never as a capacity shortfall
            result.errors.append(code)

    def hosts(self, pools: list[str]) -> list[Host]:
        """Our pending and running hosts of these pools in this environment, from EC2 itself."""
        if not pools:
            return []
        return [_host(inst, tags) for inst, tags in live_instances(self.ec2, self.environment, pools)]

    # ---- stopped warm pools -----------------------------------------------------------
    def launch_warm(self, pool: PoolSettings, count: int, client_token: str) -> tuple[list[Host], list[str]]:
        """Warm instances of the pool: RunInstances from its launch template, on-demand (a stopped
        spot instance may not be started again), with InstanceInitiatedShutdownBehavior=stop
        (CreateFleet cannot set it) and the WARM tag. Each boots once, prepares and powers off.
        Returns (what launched, EC2 error codes); the pool's types are tried in turn, until one
        gives at least one instance."""
        interface: dict[str, Any] = {"DeviceIndex": 0, "Groups": list(pool.security_group_ids),
                                     "AssociatePublicIpAddress": pool.public_ip, "DeleteOnTermination": True}  # fmt: skip
        if pool.subnet_ids:
            interface["SubnetId"] = pool.subnet_ids[sum(client_token.encode()) % len(pool.subnet_ids)]  # spread by launch
        tags = {**runner_tags(self.environment, pool.name, pool.labels), WARM: "true"}
        errors = []
        for index, itype in enumerate(pool.instance_types):
            try:
                answer = self.ec2.run_instances(
                    MinCount=1,  # what EC2 can give now: the rest is topped up next cycle
                    MaxCount=count,
                    ClientToken=f"{client_token[:60]}-{index}",
                    LaunchTemplate={"LaunchTemplateId": pool.launch_template_id, "Version": "$Default"},
                    InstanceType=itype,
                    InstanceInitiatedShutdownBehavior="stop",
                    NetworkInterfaces=[interface],
                    TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags)}],
                )
            except Exception as exc:  # botocore's ClientError: a capacity error tries the next type
                code = _error_code(exc)
                if code not in RETRYABLE_CODES and not code.startswith("Unsupported"):
                    raise
                errors.append(code)
                continue
            return [
                Host(i["InstanceId"], pool.name, _seconds(i["LaunchTime"]), "pending", True, i.get("ImageId", ""))
                for i in answer.get("Instances", [])
            ], errors
        return [], errors

    def warm_hosts(self, pools: list[str]) -> list[Host]:
        """The warm-tagged instances of these pools in this environment, in every state but gone."""
        if not pools:
            return []
        filters = [
            {"Name": f"tag:{MANAGED}", "Values": ["true"]},
            {"Name": f"tag:{ENVIRONMENT}", "Values": [self.environment]},
            {"Name": f"tag:{WARM}", "Values": ["true"]},
            {"Name": f"tag:{POOL}", "Values": pools},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
        found = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    found.append(_host(inst, {t["Key"]: t["Value"] for t in inst.get("Tags", [])}))
        return found

    def start(self, instance_id: str) -> str | None:
        """Start one stopped warm instance; None when EC2 took it, else its error code."""
        try:
            self.ec2.start_instances(InstanceIds=[instance_id])
        except Exception as exc:  # botocore's ClientError, read without importing botocore
            code = _error_code(exc)
            if not code:
                raise
            return code
        return None

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


def _host(inst: dict[str, Any], tags: dict[str, str]) -> Host:
    state = inst["State"]["Name"]
    return Host(
        inst["InstanceId"], tags.get(POOL, ""), _seconds(inst["LaunchTime"]), state, tags.get(WARM) == "true", inst.get("ImageId", "")
    )


def _seconds(when: Any) -> float:
    return float(when.timestamp()) if hasattr(when, "timestamp") else float(when)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", ""))


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]
