"""Network: where runners live. A new VPC over several zones, or the operator's own subnets,
plus the runners' security group, which admits nothing in."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from estate.config.stack_config import NetworkSettings
from estate.derive.network_plan import plan_subnets

# Interface endpoints need HTTPS from inside the VPC; the S3 endpoint is a free gateway.
_GATEWAY_ENDPOINTS = {"s3"}


@dataclass(frozen=True)
class NetworkArgs:
    environment: str
    region: str
    settings: NetworkSettings
    zones: list[str]  # resolved before construction; empty for bring-your-own
    tags: dict[str, str]


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    runner_subnet_ids: pulumi.Output[list[str]]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:Network", name, None, opts)
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings

        if settings.creates_vpc:
            vpc = aws.ec2.Vpc(
                f"{name}-vpc",
                cidr_block=settings.cidr,
                enable_dns_hostnames=True,
                enable_dns_support=True,
                tags=self._tags(f"{name}-vpc"),
                opts=child,
            )
            self.vpc_id = vpc.id
            subnet_ids = self._build_vpc(vpc)
        else:
            assert settings.vpc_id is not None  # NetworkSettings guarantees vpc_id with subnet_ids
            self.vpc_id = pulumi.Output.from_input(settings.vpc_id)
            subnet_ids = [pulumi.Output.from_input(s) for s in settings.subnet_ids]
        self.runner_subnet_ids = pulumi.Output.all(*subnet_ids).apply(list)

        sg = aws.ec2.SecurityGroup(
            f"{name}-runners",
            description="runner-estate runners: no inbound access, outbound to GitHub and AWS",
            vpc_id=self.vpc_id,
            egress=[
                aws.ec2.SecurityGroupEgressArgs(protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"], ipv6_cidr_blocks=["::/0"])
            ],
            tags=self._tags(f"{name}-runners"),
            opts=child,
        )
        self.security_group_id = sg.id
        self.register_outputs(
            {"vpc_id": self.vpc_id, "runner_subnet_ids": self.runner_subnet_ids, "security_group_id": self.security_group_id}
        )

    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name}

    def _build_vpc(self, vpc: aws.ec2.Vpc) -> list[pulumi.Output[str]]:
        """Subnets, routes, NAT and endpoints; returns the subnets runners launch into."""
        name, settings = self._name, self._args.settings
        child = pulumi.ResourceOptions(parent=self)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=self._tags(f"{name}-igw"), opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=self._tags(f"{name}-public"),
            opts=child,
        )
        public: list[aws.ec2.Subnet] = []
        private: list[aws.ec2.Subnet] = []
        nats: list[aws.ec2.NatGateway] = []
        private_rts: list[aws.ec2.RouteTable] = []
        for zone_plan in plan_subnets(settings.cidr, self._args.zones):
            zone = zone_plan.zone
            pub = aws.ec2.Subnet(
                f"{name}-public-{zone}",
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=zone_plan.public_cidr,
                # Only public-runner mode gives instances public addresses; no ingress either way.
                map_public_ip_on_launch=settings.runner_subnets == "public",
                tags=self._tags(f"{name}-public-{zone}"),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", subnet_id=pub.id, route_table_id=public_rt.id, opts=child)
            public.append(pub)
            priv = aws.ec2.Subnet(
                f"{name}-private-{zone}",
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=zone_plan.private_cidr,
                map_public_ip_on_launch=False,
                tags=self._tags(f"{name}-private-{zone}"),
                opts=child,
            )
            private.append(priv)
            if settings.nat == "per-az" or (settings.nat == "single" and not nats):
                eip = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags=self._tags(f"{name}-nat-{zone}"), opts=child)
                nats.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{zone}", allocation_id=eip.id, subnet_id=pub.id, tags=self._tags(f"{name}-nat-{zone}"), opts=child
                    )
                )
            routes = [aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nats[-1].id)] if nats else []
            rt = aws.ec2.RouteTable(
                f"{name}-private-{zone}", vpc_id=vpc.id, routes=routes, tags=self._tags(f"{name}-private-{zone}"), opts=child
            )
            aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", subnet_id=priv.id, route_table_id=rt.id, opts=child)
            private_rts.append(rt)
        self._endpoints(vpc, private, private_rts)
        runners = private if settings.runner_subnets == "private" else public
        return [s.id for s in runners]

    def _endpoints(self, vpc: aws.ec2.Vpc, subnets: list[aws.ec2.Subnet], route_tables: list[aws.ec2.RouteTable]) -> None:
        name, args = self._name, self._args
        child = pulumi.ResourceOptions(parent=self)
        interface = [e for e in args.settings.endpoints if e not in _GATEWAY_ENDPOINTS]
        endpoint_sg = None
        if interface:
            endpoint_sg = aws.ec2.SecurityGroup(
                f"{name}-endpoints",
                description="runner-estate VPC endpoints: HTTPS from inside the VPC only",
                vpc_id=vpc.id,
                ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=443, to_port=443, cidr_blocks=[args.settings.cidr])],
                tags=self._tags(f"{name}-endpoints"),
                opts=child,
            )
        for service in args.settings.endpoints:
            service_name = f"com.amazonaws.{args.region}.{service}"
            resource_name = f"{name}-endpoint-{service.replace('.', '-')}"
            if service in _GATEWAY_ENDPOINTS:
                aws.ec2.VpcEndpoint(
                    resource_name,
                    vpc_id=vpc.id,
                    service_name=service_name,
                    vpc_endpoint_type="Gateway",
                    route_table_ids=[rt.id for rt in route_tables],
                    tags=self._tags(resource_name),
                    opts=child,
                )
            else:
                assert endpoint_sg is not None
                aws.ec2.VpcEndpoint(
                    resource_name,
                    vpc_id=vpc.id,
                    service_name=service_name,
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=[s.id for s in subnets],
                    security_group_ids=[endpoint_sg.id],
                    tags=self._tags(resource_name),
                    opts=child,
                )
