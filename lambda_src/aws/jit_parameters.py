"""Each host's one-job runner config, in an SSM SecureString that only that host may read.

The parameter is tagged with the instance's ARN; the runner role's policy allows GetParameter
and DeleteParameter only where that tag equals `${ec2:SourceInstanceARN}` (see
estate/derive/iam_policies.py). The host deletes it once read; the scaler deletes what a host never
read when the host goes away. The config never appears in user-data, env or logs.

The tag separates hosts, not the GPU slots of one node: every slot's parameter carries the
node's ARN, and IAM cannot tell slots apart. Slots are kept apart on the node instead: only
root (the slot manager) may reach the metadata service and so hold the role's credentials,
and it hands each slot's config to that slot's runner only (lambda_src/host/slot_manager.py).

Tier: GitHub's `encoded_jit_config` is a little over 4 KB (base64 of the runner's three
settings files, one of them an RSA private key) and a Standard parameter holds at most 4,096
characters, so a config goes to the Advanced tier when it is longer (8,192 at most; SSM refuses
more) and to `Intelligent-Tiering` otherwise: Standard, free, while it fits and the account has
Standard parameters left, Advanced past the 10,000-parameter quota. An Advanced parameter costs
$0.05 a month prorated hourly plus $0.05 per 10,000 API calls; ours live minutes (written at
launch, deleted once read), see docs/costs.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lambda_src.aws.sigv4_client import AwsError

INSTANCE_ARN_TAG = "runner-estate:instance-arn"
STANDARD_TIER_MAX_CHARS = 4096  # what a Standard parameter holds (SSM refuses a longer value)


def tier_for(value: str) -> str:
    """The cheapest SSM tier that holds `value`: Advanced past 4,096 characters, else
    Intelligent-Tiering (Standard unless the account's Standard quota is used up)."""
    return "Advanced" if len(value) > STANDARD_TIER_MAX_CHARS else "Intelligent-Tiering"


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
                    "Tier": tier_for(encoded_config),
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
