"""Subnet arithmetic for a new VPC: pure, so it is tested without Pulumi."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ZoneSubnets:
    zone: str
    public_cidr: str
    private_cidr: str


def plan_subnets(cidr: str, zones: list[str]) -> list[ZoneSubnets]:
    """One public and one private subnet per zone: private from the first half of the VPC,
    public from the second, each half split evenly so zones can be added up to a power of two."""
    if len(zones) < 2:
        raise ValueError("a VPC for runners spans at least 2 availability zones")
    vpc = ipaddress.IPv4Network(cidr)
    private_half, public_half = vpc.subnets(prefixlen_diff=1)
    split = math.ceil(math.log2(len(zones)))
    private = list(private_half.subnets(prefixlen_diff=split))
    public = list(public_half.subnets(prefixlen_diff=split))
    return [ZoneSubnets(z, str(public[i]), str(private[i])) for i, z in enumerate(zones)]
