"""Our fake of the EC2 boundary, for what moto does not model: reservations of type
capacity-block with their capacity and dates, launches into them (checked the way EC2 checks
them), offerings and purchases, and AWS ending a block's instances on time. It also takes the
scaler's instant CreateFleet launches, so every controller can run against one EC2.

`estate serve` runs the capacity-block manager against it (estate/local/plane.py), and the
tests use it wherever a block is involved.

Like EC2, it first checks each request against EC2's model (estate/local/aws_models.py): a
boto3 client would check only part of it, and this fake is not a boto3 client."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from estate.local.aws_models import checked
from lambda_src.core.block_planner import TERMINATION_LEAD_S


def _error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass
class FakeReservation:
    id: str
    instance_type: str
    zone: str
    total: int
    start: float
    end: float
    tags: dict[str, str] = field(default_factory=dict)
    reservation_type: str = "capacity-block"


@dataclass
class FakeInstance:
    id: str
    reservation: str | None  # the capacity block it runs in; None for ordinary spot / on-demand hosts
    state: str
    launched_at: float
    tags: dict[str, str]
    request: dict[str, Any]


@dataclass
class FakeBlockEc2:
    clock: Callable[[], float]
    subnets: dict[str, str]  # subnet id -> availability zone
    reservations: dict[str, FakeReservation] = field(default_factory=dict)
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    offerings: list[dict[str, Any]] = field(default_factory=list)
    purchases: list[str] = field(default_factory=list)
    launch_requests: list[dict[str, Any]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(0x1000))
    _tokens: dict[str, list[str]] = field(default_factory=dict)
    launch_faults: list[str] = field(default_factory=list)  # error codes the next launches answer with

    # ---- controls: what AWS would do on its own ---------------------------------------------
    def add_block(self, rid: str, instance_type: str, total: int, start: float, hours: float, zone: str | None = None) -> None:
        zone = zone or next(iter(self.subnets.values()))
        self.reservations[rid] = FakeReservation(rid, instance_type, zone, total, start, start + hours * 3600)

    def lose(self, instance_id: str) -> None:
        """A node fails mid-block (hardware, a stray terminate): EC2 ends it."""
        self.instances[instance_id].state = "terminated"

    def aws_terminates_ending_blocks(self) -> list[str]:
        """What EC2 does from 30 minutes before a block's end: terminate its instances."""
        now, ended = self.clock(), []
        for inst in self.instances.values():
            block = self.reservations.get(inst.reservation or "")
            if inst.state in {"pending", "running"} and block is not None and now >= block.end - TERMINATION_LEAD_S:
                inst.state = "terminated"
                ended.append(inst.id)
        return ended

    def live(self, reservation: str | None = None) -> list[str]:
        return [
            i.id
            for i in self.instances.values()
            if i.state in {"pending", "running"} and (reservation is None or i.reservation == reservation)
        ]

    # ---- the EC2 API the manager calls ----------------------------------------------------
    def _state(self, r: FakeReservation) -> str:
        now = self.clock()
        return "scheduled" if now < r.start else "active" if now < r.end else "expired"

    def _describe(self, r: FakeReservation) -> dict[str, Any]:
        used = len(self.live(r.id))
        return {
            "CapacityReservationId": r.id,
            "InstanceType": r.instance_type,
            "AvailabilityZone": r.zone,
            "TotalInstanceCount": r.total,
            "AvailableInstanceCount": r.total - used if self._state(r) == "active" else 0,
            "State": self._state(r),
            "StartDate": _when(r.start),
            "EndDate": _when(r.end),
            "ReservationType": r.reservation_type,
            "Tags": [{"Key": k, "Value": v} for k, v in r.tags.items()],
        }

    def describe_capacity_reservations(self, **kwargs: Any) -> dict[str, Any]:
        checked("ec2", "DescribeCapacityReservations", kwargs)
        found = list(self.reservations.values())
        if "CapacityReservationIds" in kwargs:
            missing = [rid for rid in kwargs["CapacityReservationIds"] if rid not in self.reservations]
            if missing:
                raise _error("InvalidCapacityReservationId.NotFound", f"{missing[0]} not found", "DescribeCapacityReservations")
            found = [self.reservations[rid] for rid in kwargs["CapacityReservationIds"]]
        for f in kwargs.get("Filters", []):
            key = f["Name"].removeprefix("tag:")
            found = [r for r in found if r.tags.get(key) in f["Values"]]
        return {"CapacityReservations": [self._describe(r) for r in found]}

    def describe_subnets(self, SubnetIds: list[str]) -> dict[str, Any]:  # noqa: N803 - EC2's names
        checked("ec2", "DescribeSubnets", {"SubnetIds": SubnetIds})
        return {"Subnets": [{"SubnetId": s, "AvailabilityZone": self.subnets[s]} for s in SubnetIds]}

    def run_instances(self, **request: Any) -> dict[str, Any]:
        checked("ec2", "RunInstances", request)
        self.launch_requests.append(request)
        if self.launch_faults:
            raise _error(self.launch_faults.pop(0), "injected", "RunInstances")
        token = request.get("ClientToken", "")
        if token and token in self._tokens:  # EC2 answers a retried token with the first launch
            return {"Instances": [{"InstanceId": i} for i in self._tokens[token]]}
        if request.get("InstanceMarketOptions", {}).get("MarketType") != "capacity-block":
            raise _error("InvalidParameterCombination", "capacity blocks need MarketType capacity-block", "RunInstances")
        rid = request["CapacityReservationSpecification"]["CapacityReservationTarget"]["CapacityReservationId"]
        r = self.reservations.get(rid)
        if r is None:
            raise _error("InvalidCapacityReservationId.NotFound", rid, "RunInstances")
        if self._state(r) != "active":
            raise _error("InvalidCapacityReservationId.Malformed", f"{rid} is {self._state(r)}", "RunInstances")
        if request["InstanceType"] != r.instance_type:
            raise _error("InvalidParameterValue", f"{rid} holds {r.instance_type}", "RunInstances")
        subnet = request["NetworkInterfaces"][0]["SubnetId"]
        if self.subnets[subnet] != r.zone:
            raise _error("InvalidParameterValue", f"subnet {subnet} is not in {r.zone}", "RunInstances")
        available = r.total - len(self.live(rid))
        if available < request["MinCount"]:
            raise _error("ReservationCapacityExceeded", f"{rid} has {available} free", "RunInstances")
        tags = {t["Key"]: t["Value"] for spec in request.get("TagSpecifications", []) for t in spec["Tags"]}
        made = []
        for _ in range(min(request["MaxCount"], available)):
            iid = f"i-{next(self._ids):017x}"
            self.instances[iid] = FakeInstance(iid, rid, "running", self.clock(), tags, request)
            made.append(iid)
        if token:
            self._tokens[token] = made
        return {"Instances": [{"InstanceId": i} for i in made]}

    def get_paginator(self, name: str) -> Any:
        assert name == "describe_instances"
        fake = self

        class _Pages:
            def paginate(self, Filters: list[dict[str, Any]]) -> list[dict[str, Any]]:  # noqa: N803
                checked("ec2", "DescribeInstances", {"Filters": Filters})
                found = list(fake.instances.values())
                for f in Filters:
                    if f["Name"] == "instance-state-name":
                        found = [i for i in found if i.state in f["Values"]]
                    else:
                        found = [i for i in found if i.tags.get(f["Name"].removeprefix("tag:")) in f["Values"]]
                return [
                    {
                        "Reservations": [
                            {
                                "Instances": [
                                    {
                                        "InstanceId": i.id,
                                        "LaunchTime": _when(i.launched_at),
                                        "State": {"Name": i.state},
                                        **({"CapacityReservationId": i.reservation} if i.reservation else {}),
                                        "Tags": [{"Key": k, "Value": v} for k, v in i.tags.items()],
                                    }
                                    for i in found
                                ]
                            }
                        ]
                    }
                ]

        return _Pages()

    def terminate_instances(self, InstanceIds: list[str]) -> dict[str, Any]:  # noqa: N803
        checked("ec2", "TerminateInstances", {"InstanceIds": InstanceIds})
        unknown = [iid for iid in InstanceIds if iid not in self.instances]
        if unknown:  # EC2 refuses the whole call
            raise _error("InvalidInstanceID.NotFound", f"The instance IDs '{', '.join(unknown)}' do not exist", "TerminateInstances")
        for iid in InstanceIds:
            self.instances[iid].state = "terminated"
        return {"TerminatingInstances": [{"InstanceId": iid, "CurrentState": {"Name": "shutting-down"}} for iid in InstanceIds]}

    def create_fleet(self, **request: Any) -> dict[str, Any]:
        """An instant fleet, as the scaler asks for one: every requested instance or an error
        per shortfall; the same ClientToken answers with the first launch."""
        checked("ec2", "CreateFleet", request)
        self.launch_requests.append(request)
        assert request["Type"] == "instant"
        token = request.get("ClientToken", "")
        if token and token in self._tokens:
            made = self._tokens[token]
        else:
            (config,) = request["LaunchTemplateConfigs"]
            overrides = config["Overrides"]
            tags = {t["Key"]: t["Value"] for spec in request.get("TagSpecifications", []) for t in spec["Tags"]}
            made = []
            for n in range(int(request["TargetCapacitySpecification"]["TotalTargetCapacity"])):
                iid = f"i-{next(self._ids):017x}"
                self.instances[iid] = FakeInstance(iid, None, "running", self.clock(), dict(tags), overrides[n % len(overrides)])
                made.append(iid)
            if token:
                self._tokens[token] = made
        return {"Instances": [{"InstanceIds": made}] if made else [], "Errors": []}

    def describe_capacity_block_offerings(self, **kwargs: Any) -> dict[str, Any]:
        checked("ec2", "DescribeCapacityBlockOfferings", kwargs)
        start = kwargs["StartDateRange"].timestamp()
        return {
            "CapacityBlockOfferings": [
                o
                for o in self.offerings
                if o["InstanceType"] == kwargs["InstanceType"]
                and o["CapacityBlockDurationHours"] == kwargs["CapacityDurationHours"]
                and o["StartDate"].timestamp() >= start
            ]
        }

    def purchase_capacity_block(self, **kwargs: Any) -> dict[str, Any]:
        checked("ec2", "PurchaseCapacityBlock", kwargs)
        offer = next(o for o in self.offerings if o["CapacityBlockOfferingId"] == kwargs["CapacityBlockOfferingId"])
        rid = f"cr-{next(self._ids):017x}"
        tags = {t["Key"]: t["Value"] for spec in kwargs.get("TagSpecifications", []) for t in spec["Tags"]}
        start = offer["StartDate"].timestamp()
        self.reservations[rid] = FakeReservation(
            rid, offer["InstanceType"], offer["AvailabilityZone"], offer["InstanceCount"], start,
            start + offer["CapacityBlockDurationHours"] * 3600, tags,
        )  # fmt: skip
        self.purchases.append(rid)
        return {"CapacityReservation": {"CapacityReservationId": rid}}
