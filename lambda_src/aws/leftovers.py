"""What the sweeper reads and removes: this environment's tagged instances, volumes and network
interfaces (EC2) and runner configs (SSM), by their tags and names alone."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lambda_src.aws.sigv4_client import AwsError
from lambda_src.core.sweeper import Leftovers, RunnerConfig, TaggedInstance, TaggedInterface, TaggedVolume
from lambda_src.core.tags import ENVIRONMENT, MANAGED, POOL

log = logging.getLogger("runner_estate.leftovers")


def _client_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", ""))


@dataclass
class LeftoverStore:
    ec2: Any  # boto3 EC2 client
    ssm: Any  # AwsJsonClient("ssm", ...)
    environment: str
    jit_prefix: str  # "/runner-estate/<env>/jit/"

    def _ours(self) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{MANAGED}", "Values": ["true"]}, {"Name": f"tag:{ENVIRONMENT}", "Values": [self.environment]}]

    def find(self) -> Leftovers:
        instances = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=self._ours()):
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                    launched = inst["LaunchTime"].timestamp()
                    instances.append(TaggedInstance(inst["InstanceId"], tags.get(POOL, ""), inst["State"]["Name"], launched))
        volumes = []
        available = {"Name": "status", "Values": ["available"]}
        for page in self.ec2.get_paginator("describe_volumes").paginate(Filters=[*self._ours(), available]):
            for vol in page.get("Volumes", []):
                tags = {t["Key"]: t["Value"] for t in vol.get("Tags", [])}
                volumes.append(TaggedVolume(vol["VolumeId"], tags.get(POOL, ""), vol["State"], vol["CreateTime"].timestamp()))
        interfaces = []
        for page in self.ec2.get_paginator("describe_network_interfaces").paginate(Filters=[*self._ours(), available]):
            for nic in page.get("NetworkInterfaces", []):
                tags = {t["Key"]: t["Value"] for t in nic.get("TagSet", [])}
                interfaces.append(TaggedInterface(nic["NetworkInterfaceId"], tags.get(POOL, ""), nic["Status"]))
        return Leftovers(tuple(instances), tuple(volumes), tuple(interfaces), tuple(self._configs()))

    def _configs(self) -> list[RunnerConfig]:
        request: dict[str, Any] = {
            "ParameterFilters": [{"Key": "Path", "Option": "Recursive", "Values": [self.jit_prefix.rstrip("/")]}],
            "MaxResults": 50,
        }
        found = []
        while True:
            page = self.ssm.call("DescribeParameters", request)
            found += [RunnerConfig(str(p["Name"]), float(p.get("LastModifiedDate", 0.0))) for p in page.get("Parameters", [])]
            if not page.get("NextToken"):
                return found
            request["NextToken"] = page["NextToken"]

    def terminate(self, instance_id: str) -> None:
        self.ec2.terminate_instances(InstanceIds=[instance_id])

    def delete_volume(self, volume_id: str) -> bool:
        """False when EC2 says it is attached again, or gone already."""
        try:
            self.ec2.delete_volume(VolumeId=volume_id)
        except Exception as exc:  # botocore's ClientError, read without importing botocore
            if _client_error(exc) in {"VolumeInUse", "InvalidVolume.NotFound", "IncorrectState"}:
                log.info("volume %s not deleted: %s", volume_id, exc)
                return False
            raise
        return True

    def delete_interface(self, interface_id: str) -> bool:
        try:
            self.ec2.delete_network_interface(NetworkInterfaceId=interface_id)
        except Exception as exc:
            if _client_error(exc) in {"InvalidNetworkInterface.InUse", "InvalidNetworkInterfaceID.NotFound"}:
                log.info("network interface %s not deleted: %s", interface_id, exc)
                return False
            raise
        return True

    def delete_config(self, name: str) -> None:
        try:
            self.ssm.call("DeleteParameter", {"Name": name})
        except AwsError as exc:
            if exc.code != "ParameterNotFound":
                raise
