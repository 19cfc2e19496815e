"""moto made as faithful as the service where it departs from it (estate/local/moto_fidelity.py);
SSM's tiers have their own file (test_ssm_tiers.py)."""

from __future__ import annotations

import boto3

from estate.local.plane import MOTO_AMI


def test_run_instances_launches_up_to_max_count_as_ec2_does_with_capacity_to_spare(moto_url: str) -> None:
    ec2 = boto3.session.Session(region_name="us-east-1").client("ec2", endpoint_url=moto_url)
    answer = ec2.run_instances(ImageId=MOTO_AMI, InstanceType="m7i.large", MinCount=1, MaxCount=3)
    assert len(answer["Instances"]) == 3  # moto alone launches MinCount (1)
    assert len(ec2.run_instances(ImageId=MOTO_AMI, InstanceType="m7i.large", MinCount=2, MaxCount=2)["Instances"]) == 2
