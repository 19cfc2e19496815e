"""Our fake of the EC2 boundary, for what moto does not model: reservations of type
capacity-block with their capacity and dates, launches into them (checked the way EC2 checks
them), offerings and purchases, and AWS ending a block's instances on time. It also takes the
scaler's instant CreateFleet launches and its stopped warm pools (issue 20.2: RunInstances with
`InstanceInitiatedShutdownBehavior`, StartInstances, a guest powering itself off), so every
controller can run against one EC2.

Instances move through EC2's states as EC2 moves them: a start goes `pending` -> `running`, a
guest's power-off `stopping` -> `stopped` (shutdown behaviour `stop`) or `shutting-down` ->
`terminated` (`terminate`, the launch templates' own), each in-between state lasting
TRANSITION_S. A launch is `running` at once and a TerminateInstances `terminated` at once, as
before: every controller reads `pending` and `running` alike, and neither `shutting-down` nor
`terminated`.

`estate serve` runs the capacity-block manager against it (estate/local/plane.py), and the
tests use it wherever a block is involved.

Like EC2, it first checks each request against EC2's model (estate/local/aws_models.py): a
boto3 client would check only part of it, and this fake is not a boto3 client."""

from __future__ import annotations

import itertools
from collections import Counter
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


def _tags(request: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for spec in request.get("TagSpecifications", []) for t in spec["Tags"]}


# How long EC2 shows an instance `pending`, `stopping` or `shutting-down` before it settles. Ours,
# not measured: seconds, shorter than a minute, so a controller running in the same minute as a
# start or a power-off sees the in-between state and the next minute's sees where it settled.
TRANSITION_S = 15.0
_SETTLES_TO = {"pending": "running", "stopping": "stopped", "shutting-down": "terminated"}
# What an instance launched from one of our launch templates does when its guest powers off,
# unless the launch says otherwise (components/runner_fleet.py: instance_initiated_shutdown_behavior).
TEMPLATE_SHUTDOWN_BEHAVIOUR = "terminate"
FAKE_IMAGE = "ami-0fa4e00000000000a"  # the image a launch template resolves to, as this fake knows none


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
    shutdown_behaviour: str = TEMPLATE_SHUTDOWN_BEHAVIOUR  # what a guest's power-off does: stop | terminate
    instance_type: str = ""
    image_id: str = FAKE_IMAGE
    started: int = 0  # how often StartInstances started it since its launch
    # launched_at is EC2's LaunchTime: the last launch *or start* (EC2 resets it on every start).


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
    # Instances of each type EC2 can still give outside capacity blocks (RunInstances and
    # StartInstances; CreateFleet is not limited here); a type not named: as many as asked.
    capacity: dict[str, int] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)  # every instance StartInstances started, in order
    _settling: dict[str, tuple[float, str]] = field(default_factory=dict)  # instance -> (when, state it settles to)

    # ---- controls: what AWS would do on its own ---------------------------------------------
    def add_block(self, rid: str, instance_type: str, total: int, start: float, hours: float, zone: str | None = None) -> None:
        zone = zone or next(iter(self.subnets.values()))
        self.reservations[rid] = FakeReservation(rid, instance_type, zone, total, start, start + hours * 3600)

    def lose(self, instance_id: str) -> None:
        """A node fails mid-block (hardware, a stray terminate): EC2 ends it."""
        self._set(instance_id, "terminated")

    def guest_powers_off(self, instance_id: str) -> str:
        """The instance's OS shuts itself down (`shutdown -h now`): EC2 stops it or terminates it
        as its InstanceInitiatedShutdownBehavior says. Returns the state it is in now."""
        inst = self.instances[instance_id]
        self.settle()
        assert inst.state == "running", f"{instance_id} is {inst.state}: only a running guest can power itself off"
        self._set(instance_id, "stopping" if inst.shutdown_behaviour == "stop" else "shutting-down")
        return inst.state

    def settle(self) -> None:
        """What EC2 does as time passes: in-between states end TRANSITION_S after they began.
        Every API call settles first, so a controller sees the states of its moment."""
        now = self.clock()
        for iid, (when, state) in list(self._settling.items()):
            if now >= when:
                self.instances[iid].state = state
                del self._settling[iid]

    def _set(self, instance_id: str, state: str) -> None:
        self.instances[instance_id].state = state
        self._settling.pop(instance_id, None)
        if state in _SETTLES_TO:
            self._settling[instance_id] = (self.clock() + TRANSITION_S, _SETTLES_TO[state])

    def aws_terminates_ending_blocks(self) -> list[str]:
        """What EC2 does from 30 minutes before a block's end: terminate its instances."""
        self.settle()
        now, ended = self.clock(), []
        for inst in self.instances.values():
            block = self.reservations.get(inst.reservation or "")
            if inst.state in {"pending", "running"} and block is not None and now >= block.end - TERMINATION_LEAD_S:
                self._set(inst.id, "terminated")
                ended.append(inst.id)
        return ended

    def live(self, reservation: str | None = None) -> list[str]:
        self.settle()
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
        """Into a capacity block (MarketType capacity-block and the block as the target), else an
        ordinary on-demand or spot launch, e.g. the scaler's warm instances. As EC2: at least
        MinCount or none (InsufficientInstanceCapacity / ReservationCapacityExceeded), at most
        MaxCount; a retried ClientToken answers with the first launch."""
        checked("ec2", "RunInstances", request)
        self.settle()
        self.launch_requests.append(request)
        if self.launch_faults:
            raise _error(self.launch_faults.pop(0), "injected", "RunInstances")
        token = request.get("ClientToken", "")
        if token and token in self._tokens:  # EC2 answers a retried token with the first launch
            return {"Instances": [self._description(self.instances[i]) for i in self._tokens[token]]}
        if not 1 <= request["MinCount"] <= request["MaxCount"]:
            raise _error("InvalidParameterValue", "MinCount must be at least 1 and no more than MaxCount", "RunInstances")
        market = request.get("InstanceMarketOptions", {}).get("MarketType")
        target = request.get("CapacityReservationSpecification", {}).get("CapacityReservationTarget", {})
        if market == "capacity-block" or "CapacityReservationId" in target:
            made = self._into_block(request, market)
        else:
            made = self._ordinary(request, market)
        if token:
            self._tokens[token] = made
        return {"Instances": [self._description(self.instances[i]) for i in made]}

    def _into_block(self, request: dict[str, Any], market: str | None) -> list[str]:
        if market != "capacity-block":
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
        return self._new(request, min(request["MaxCount"], available), rid, r.instance_type)

    def _ordinary(self, request: dict[str, Any], market: str | None) -> list[str]:
        behaviour = request.get("InstanceInitiatedShutdownBehavior", TEMPLATE_SHUTDOWN_BEHAVIOUR)
        spot = request.get("InstanceMarketOptions", {}).get("SpotOptions", {})
        if market == "spot" and behaviour == "stop" and spot.get("SpotInstanceType", "one-time") == "one-time":
            raise _error("InvalidParameterCombination", "a one-time spot instance cannot be stopped", "RunInstances")
        if "LaunchTemplate" not in request and "ImageId" not in request:
            raise _error("MissingParameter", "The request must contain the parameter ImageId", "RunInstances")
        interfaces = request.get("NetworkInterfaces", [])
        subnet = request.get("SubnetId") or (interfaces[0].get("SubnetId") if interfaces else None)
        if subnet is not None and subnet not in self.subnets:
            raise _error("InvalidSubnetID.NotFound", f"The subnet ID '{subnet}' does not exist", "RunInstances")
        itype = request.get("InstanceType", "")  # else the template's, which this fake does not know
        available = self.capacity.get(itype, request["MaxCount"])
        if available < request["MinCount"]:
            raise _error("InsufficientInstanceCapacity", f"We currently do not have sufficient {itype} capacity", "RunInstances")
        count = min(request["MaxCount"], available)
        if itype in self.capacity:
            self.capacity[itype] -= count
        return self._new(request, count, None, itype, behaviour, request.get("ImageId", FAKE_IMAGE))

    def _new(
        self,
        request: dict[str, Any],
        count: int,
        reservation: str | None,
        itype: str,
        behaviour: str = TEMPLATE_SHUTDOWN_BEHAVIOUR,
        image: str = FAKE_IMAGE,
    ) -> list[str]:
        """`count` instances of one launch, `running` at once."""
        tags = _tags(request)
        made = []
        for _ in range(count):
            iid = f"i-{next(self._ids):017x}"
            self.instances[iid] = FakeInstance(iid, reservation, "running", self.clock(), dict(tags), request, behaviour, itype, image)
            made.append(iid)
        return made

    def _description(self, i: FakeInstance) -> dict[str, Any]:
        """An instance as RunInstances and DescribeInstances describe it (the members we read)."""
        return {
            "InstanceId": i.id,
            "InstanceType": i.instance_type,
            "ImageId": i.image_id,
            "LaunchTime": _when(i.launched_at),
            "State": {"Name": i.state},
            **({"CapacityReservationId": i.reservation} if i.reservation else {}),
            "Tags": [{"Key": k, "Value": v} for k, v in i.tags.items()],
        }

    def start_instances(self, InstanceIds: list[str]) -> dict[str, Any]:  # noqa: N803 - EC2's names
        """Start stopped instances, all or none: an unknown id or one in any state but `stopped`
        refuses the whole call, as does a type EC2 has no capacity of now. A started instance
        is `pending`, then `running`; EC2 gives it a new LaunchTime."""
        checked("ec2", "StartInstances", {"InstanceIds": InstanceIds})
        self.settle()
        unknown = [iid for iid in InstanceIds if iid not in self.instances]
        if unknown:
            raise _error("InvalidInstanceID.NotFound", f"The instance IDs '{', '.join(unknown)}' do not exist", "StartInstances")
        for iid in InstanceIds:
            if (state := self.instances[iid].state) != "stopped":
                message = f"The instance '{iid}' is {state}, not in a state from which it can be started"
                raise _error("IncorrectInstanceState", message, "StartInstances")
        wanted = Counter(self.instances[iid].instance_type for iid in InstanceIds)
        for itype, n in wanted.items():
            if self.capacity.get(itype, n) < n:
                raise _error("InsufficientInstanceCapacity", f"We currently do not have sufficient {itype} capacity", "StartInstances")
        for itype, n in wanted.items():
            if itype in self.capacity:
                self.capacity[itype] -= n
        for iid in InstanceIds:
            inst = self.instances[iid]
            inst.started += 1
            inst.launched_at = self.clock()
            self._set(iid, "pending")
            self.starts.append(iid)
        return {
            "StartingInstances": [
                {"InstanceId": iid, "CurrentState": {"Code": 0, "Name": "pending"}, "PreviousState": {"Code": 80, "Name": "stopped"}}
                for iid in InstanceIds
            ]
        }

    def get_paginator(self, name: str) -> Any:
        assert name == "describe_instances"
        fake = self

        class _Pages:
            def paginate(self, Filters: list[dict[str, Any]]) -> list[dict[str, Any]]:  # noqa: N803
                checked("ec2", "DescribeInstances", {"Filters": Filters})
                fake.settle()
                found = list(fake.instances.values())
                for f in Filters:
                    if f["Name"] == "instance-state-name":
                        found = [i for i in found if i.state in f["Values"]]
                    elif f["Name"].startswith("tag:"):
                        found = [i for i in found if i.tags.get(f["Name"].removeprefix("tag:")) in f["Values"]]
                    else:  # EC2 refuses a filter it does not know; this fake knows only these
                        raise _error("InvalidParameterValue", f"The filter '{f['Name']}' is invalid", "DescribeInstances")
                return [{"Reservations": [{"Instances": [fake._description(i) for i in found]}]}]

        return _Pages()

    def terminate_instances(self, InstanceIds: list[str]) -> dict[str, Any]:  # noqa: N803
        checked("ec2", "TerminateInstances", {"InstanceIds": InstanceIds})
        self.settle()
        unknown = [iid for iid in InstanceIds if iid not in self.instances]
        if unknown:  # EC2 refuses the whole call
            raise _error("InvalidInstanceID.NotFound", f"The instance IDs '{', '.join(unknown)}' do not exist", "TerminateInstances")
        for iid in InstanceIds:
            self._set(iid, "terminated")
        return {"TerminatingInstances": [{"InstanceId": iid, "CurrentState": {"Name": "shutting-down"}} for iid in InstanceIds]}

    def create_fleet(self, **request: Any) -> dict[str, Any]:
        """An instant fleet, as the scaler asks for one: every requested instance or an error
        per shortfall; the same ClientToken answers with the first launch."""
        checked("ec2", "CreateFleet", request)
        self.settle()
        self.launch_requests.append(request)
        assert request["Type"] == "instant"
        token = request.get("ClientToken", "")
        if token and token in self._tokens:
            made = self._tokens[token]
        else:
            (config,) = request["LaunchTemplateConfigs"]
            overrides = config["Overrides"]
            tagged = {"TagSpecifications": request.get("TagSpecifications", [])}
            made = []
            for n in range(int(request["TargetCapacitySpecification"]["TotalTargetCapacity"])):
                override = overrides[n % len(overrides)]
                made += self._new({**override, **tagged}, 1, None, override["InstanceType"])
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
        tags = _tags(kwargs)
        start = offer["StartDate"].timestamp()
        self.reservations[rid] = FakeReservation(
            rid, offer["InstanceType"], offer["AvailabilityZone"], offer["InstanceCount"], start,
            start + offer["CapacityBlockDurationHours"] * 3600, tags,
        )  # fmt: skip
        self.purchases.append(rid)
        return {"CapacityReservation": {"CapacityReservationId": rid}}
