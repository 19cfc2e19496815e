"""Each host's one-job runner config, in an SSM SecureString that only that host may read.

The parameter is tagged with the instance's ARN; the runner role's policy allows GetParameter
and DeleteParameter only where that tag equals `${ec2:SourceInstanceARN}` (see
estate/derive/iam_policies.py). The host deletes it once read; the scaler deletes what a host never
read when the host goes away. The config never appears in user-data, env or logs.

The tag separates hosts, not the GPU slots of one node: every slot's parameter carries the
node's ARN, and IAM cannot tell slots apart. Slots are kept apart on the node instead: only
root (the slot manager) may reach the metadata service and so hold the role's credentials,
and it hands each slot's config to that slot's runner only (lambda_src/host/slot_manager.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lambda_src.aws.sigv4_client import AwsError

INSTANCE_ARN_TAG = "runner-estate:instance-arn"


@dataclass
class JitParameters:
    ssm: Any  # AwsJsonClient("ssm", ...)
    prefix: str  # "/runner-estate/<env>/jit/"
    instance_arn_prefix: str  # "arn:aws:ec2:<region>:<account>:instance/"

    def name(self, instance_id: str, slot: int | None = None) -> str:
        """One per host; on a capacity-block node, one per GPU slot below the host's name."""
        return f"{self.prefix}{instance_id}" if slot is None else f"{self.prefix}{instance_id}/s{slot}"

    def put(self, instance_id: str, encoded_config: str, slot: int | None = None) -> bool:
        """Store the config for exactly one host (slot). False if it is already there (a re-run)."""
        try:
            self.ssm.call(
                "PutParameter",
                {
                    "Name": self.name(instance_id, slot),
                    "Value": encoded_config,
                    "Type": "SecureString",
                    "Overwrite": False,
                    "Tags": [{"Key": INSTANCE_ARN_TAG, "Value": f"{self.instance_arn_prefix}{instance_id}"}],
                },
            )
        except AwsError as exc:
            if exc.code == "ParameterAlreadyExists":
                return False
            raise
        return True

    def delete(self, instance_id: str, slot: int | None = None) -> None:
        try:
            self.ssm.call("DeleteParameter", {"Name": self.name(instance_id, slot)})
        except AwsError as exc:
            if exc.code != "ParameterNotFound":
                raise
