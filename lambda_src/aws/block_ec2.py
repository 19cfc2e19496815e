"""EC2 for capacity blocks: a pool's reservations, launching nodes into one, our nodes, and
(only where a pool opts in) buying the next block."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from lambda_src.aws.ec2_fleet import live_instances, tag_list
from lambda_src.core.block_planner import Block
from lambda_src.core.settings import PoolSettings
from lambda_src.core.tags import ENVIRONMENT, MANAGED, POOL, runner_tags

log = logging.getLogger("runner_estate.block_ec2")
BLOCK_TAG = "runner-estate:block"


@dataclass(frozen=True)
class Node:
    id: str
    pool: str
    block: str | None
    launched_at: float


def _seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(datetime.fromisoformat(str(value)).timestamp())


@dataclass
class BlockEc2:
    ec2: Any  # boto3 EC2 client (or the tests' fake of this boundary: moto has no capacity blocks)
    environment: str
    _subnet_zones: dict[str, str] = field(default_factory=dict)

    def blocks(self, pool: PoolSettings) -> list[Block]:
        """The pool's capacity blocks: those named in config and those tagged with the pool
        (bought by `pulumi up` or by renewal). EC2 has no reservation-type filter."""
        found: dict[str, dict[str, Any]] = {r["CapacityReservationId"]: r for r in self._named(pool)}
        tagged = [{"Name": f"tag:{POOL}", "Values": [pool.name]}, {"Name": f"tag:{ENVIRONMENT}", "Values": [self.environment]}]
        for r in self.ec2.describe_capacity_reservations(Filters=tagged).get("CapacityReservations", []):
            found[r["CapacityReservationId"]] = r
        return [
            Block(
                id=rid,
                instance_type=r["InstanceType"],
                availability_zone=r["AvailabilityZone"],
                total=int(r["TotalInstanceCount"]),
                available=int(r["AvailableInstanceCount"]),
                state=str(r["State"]),
                start=_seconds(r["StartDate"]),
                end=_seconds(r["EndDate"]),
            )
            for rid, r in sorted(found.items())
            if r.get("ReservationType") == "capacity-block"
        ]

    def _named(self, pool: PoolSettings) -> list[dict[str, Any]]:
        """The reservations config names; one EC2 does not know is logged, not fatal to the rest."""
        if not pool.reservation_ids:
            return []
        try:
            return list(self.ec2.describe_capacity_reservations(CapacityReservationIds=list(pool.reservation_ids))["CapacityReservations"])
        except ClientError as exc:
            if not exc.response["Error"]["Code"].startswith("InvalidCapacityReservationId"):
                raise
        found = []
        for rid in pool.reservation_ids:
            try:
                found += self.ec2.describe_capacity_reservations(CapacityReservationIds=[rid])["CapacityReservations"]
            except ClientError as exc:
                if not exc.response["Error"]["Code"].startswith("InvalidCapacityReservationId"):
                    raise
                log.error("pool %s names capacity reservation %s, which EC2 does not know: fix reservation_ids", pool.name, rid)
        return found

    def launch(self, pool: PoolSettings, block: Block, count: int, token: str) -> list[str]:
        """Nodes into this block, in a pool subnet of the block's zone."""
        subnet = self._subnet_in(pool, block.availability_zone)
        interface: dict[str, Any] = {"DeviceIndex": 0, "SubnetId": subnet, "Groups": list(pool.security_group_ids),
                                     "AssociatePublicIpAddress": pool.public_ip, "DeleteOnTermination": True}  # fmt: skip
        if pool.efa:
            interface["InterfaceType"] = "efa"
        tags = {**runner_tags(self.environment, pool.name, pool.labels), BLOCK_TAG: block.id}
        answer = self.ec2.run_instances(
            MinCount=1,
            MaxCount=count,
            ClientToken=token[:64],
            LaunchTemplate={"LaunchTemplateId": pool.launch_template_id, "Version": "$Default"},
            InstanceType=block.instance_type,
            InstanceMarketOptions={"MarketType": "capacity-block"},
            CapacityReservationSpecification={"CapacityReservationTarget": {"CapacityReservationId": block.id}},
            NetworkInterfaces=[interface],
            TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags)}],
        )
        return [i["InstanceId"] for i in answer.get("Instances", [])]

    def _subnet_in(self, pool: PoolSettings, zone: str) -> str:
        missing = [s for s in pool.subnet_ids if s not in self._subnet_zones]
        if missing:
            for subnet in self.ec2.describe_subnets(SubnetIds=missing).get("Subnets", []):
                self._subnet_zones[subnet["SubnetId"]] = subnet["AvailabilityZone"]
        for subnet in pool.subnet_ids:
            if self._subnet_zones.get(subnet) == zone:
                return subnet
        raise RuntimeError(f"pool {pool.name} has no subnet in {zone}, where its capacity block is: add one to the network")

    def nodes(self, pools: set[str]) -> list[Node]:
        """Our pending and running nodes of these pools."""
        return [
            Node(
                inst["InstanceId"],
                tags.get(POOL, ""),
                inst.get("CapacityReservationId") or tags.get(BLOCK_TAG),
                _seconds(inst["LaunchTime"]),
            )
            for inst, tags in live_instances(self.ec2, self.environment, sorted(pools))
        ]

    def terminate(self, instance_ids: list[str]) -> None:
        if instance_ids:
            self.ec2.terminate_instances(InstanceIds=instance_ids)

    def buy_next(self, pool: PoolSettings, start_after: float) -> str | None:
        """The cheapest offering starting after `start_after` within the pool's price limit,
        bought and tagged with the pool; None when nothing fits."""
        assert pool.renew_duration_hours is not None
        assert pool.renew_max_price_usd is not None
        offerings = self.ec2.describe_capacity_block_offerings(
            InstanceType=pool.instance_types[0],
            InstanceCount=pool.renew_instance_count,
            CapacityDurationHours=pool.renew_duration_hours,
            StartDateRange=datetime.fromtimestamp(start_after).astimezone(),
        ).get("CapacityBlockOfferings", [])
        affordable = [o for o in offerings if float(o["UpfrontFee"]) <= pool.renew_max_price_usd]
        if not affordable:
            log.warning("pool %s: no capacity block offering within $%s", pool.name, pool.renew_max_price_usd)
            return None
        best = min(affordable, key=lambda o: (float(o["UpfrontFee"]), _seconds(o["StartDate"])))
        tags = {MANAGED: "true", ENVIRONMENT: self.environment, POOL: pool.name}
        bought = self.ec2.purchase_capacity_block(
            CapacityBlockOfferingId=best["CapacityBlockOfferingId"],
            InstancePlatform="Linux/UNIX",
            TagSpecifications=[{"ResourceType": "capacity-reservation", "Tags": tag_list(tags)}],
        )
        rid = str(bought["CapacityReservation"]["CapacityReservationId"])
        log.info("pool %s: bought capacity block %s for $%s", pool.name, rid, best["UpfrontFee"])
        return rid
