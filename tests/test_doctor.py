"""`estate doctor`, the read-only preflight, against doubles of a real account and App.

AWS: moto (in-process) for STS, IAM, EC2 regions and images, SSM and Lambda function URLs.
Moto models neither Service Quotas for EC2 nor capacity reservations and offerings, so those
answer through botocore's Stubber, which checks each request and each canned response against
botocore's service model (tests that rely on it say `stubbed` in their names). GitHub: our
loopback fake (estate/local/fake_github.py), answering the installation, org hooks and their
deliveries, runner groups and repositories as GitHub's REST API does. Every clock is fixed.
"""

from __future__ import annotations

import io
import json
import textwrap
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws

from estate.cli import main
from estate.config.loader import load_estate
from estate.doctor.checks import Finding, block_pools, quota_plan
from estate.doctor.facts import Quota
from estate.doctor.gather import AwsClients, read_quota
from estate.doctor.main import doctor
from estate.doctor.quotas import CLASSES, instance_vcpus, quota_class
from estate.local.fake_github import INSTALLATION_ID, FakeApp, FakeGithub
from lambda_src.github.client import GithubClient
from tests.conftest import WORKING_HOURS

NOW = WORKING_HOURS
REGION = "us-east-1"
RESERVATION = "cr-0123456789abcdef0"
WEBHOOK_FUNCTION = "runner-estate-sandbox-webhook"
MOTO_X86_AMI = "ami-12c6146b"
SPOT_STANDARD, ON_DEMAND_G = "L-34B43A08", "L-DB2E81BA"
QUOTA_NAMES = {
    SPOT_STANDARD: "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
    ON_DEMAND_G: "Running On-Demand G and VT instances",
    "L-1216C47A": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
}

STACK = """\
config:
  aws:region: {region}
  runner-estate:environment: sandbox
  runner-estate:github:
    org: example-org
    app_id: 1234
    installation_id: {installation}
{extra_apps}  runner-estate:github_app_key:
    secure: v1:PLACEHOLDER0000000:a2V5
  runner-estate:webhook_secret_value:
    secure: v1:PLACEHOLDER0000001:c2VjcmV0
  runner-estate:secrets:
    github_app_private_key: /runner-estate/sandbox/github-app/private-key
    webhook_secret: /runner-estate/sandbox/github-app/webhook-secret
  runner-estate:runner_groups:
    gpu:
      repositories: [{repositories}]
  runner-estate:alarms:
    emails: [ci@example.org]
{extra}"""

AMI = """\
  ami:
    owners: ["self"]
    filter:
      name: ["runner-x64-*"]
      state: [available]
"""
CPU_SPOT = f"""\
matcherConfig:
  exactMatch: true
  labelMatchers: [[self-hosted, linux, x64, cpu]]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [cpu]
  instance_types: [m7i.2xlarge]
  instance_target_capacity_type: spot
  runners_maximum_count: 4
{AMI}"""
GPU_ON_DEMAND = f"""\
matcherConfig:
  exactMatch: true
  labelMatchers: [[self-hosted, linux, x64, gpu, a10g]]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [gpu, a10g]
  instance_types: [g5.xlarge]
  instance_target_capacity_type: on-demand
  runners_maximum_count: 2
{AMI}estate:
  runner_group: gpu
"""
H100_BLOCK = f"""\
matcherConfig:
  exactMatch: true
  labelMatchers:
    - [self-hosted, linux, x64, gpu, h100, 1gpu]
    - [self-hosted, linux, x64, gpu, h100, 4gpu]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [gpu, h100]
  instance_types: [p5.48xlarge]
  instance_target_capacity_type: on-demand
  runners_maximum_count: 2
{AMI}estate:
  runner_group: gpu
  gpu_slots: 1x4+4x1
  capacity_block:
    {{block}}
"""


def _block_pool(block: str) -> str:
    return H100_BLOCK.replace("{block}", block)


def _reservation(rid: str = RESERVATION, **changes: Any) -> dict[str, Any]:
    """DescribeCapacityReservations' item, shaped as botocore's EC2 model declares it."""
    return {
        "CapacityReservationId": rid,
        "InstanceType": "p5.48xlarge",
        "InstancePlatform": "Linux/UNIX",
        "AvailabilityZone": "us-east-1a",
        "Tenancy": "default",
        "TotalInstanceCount": 2,
        "AvailableInstanceCount": 2,
        "State": "active",
        "StartDate": NOW - timedelta(hours=1),
        "EndDate": NOW + timedelta(days=2),
        "ReservationType": "capacity-block",
        **changes,
    }


def _offering(fee: str, start: datetime, count: int = 1, hours: int = 24) -> dict[str, Any]:
    return {
        "CapacityBlockOfferingId": "cbo-0123456789abcdef0",
        "InstanceType": "p5.48xlarge",
        "AvailabilityZone": "us-east-1b",
        "InstanceCount": count,
        "StartDate": start,
        "EndDate": start + timedelta(hours=hours),
        "CapacityBlockDurationHours": hours,
        "UpfrontFee": fee,
        "CurrencyCode": "USD",
        "Tenancy": "default",
    }


class World:
    """A sandbox account (moto + stubs) and an org (the fake GitHub) for one stack, `sandbox`."""

    def __init__(self, root: Path, github: FakeGithub) -> None:
        self.root, self.github = root, github
        self.region = REGION
        self.installation = INSTALLATION_ID
        self.repositories = ["kernels"]
        self.stack_extra = ""
        self.extra_apps: dict[int, int] = {}  # github.extra_apps: App id -> the installation_id the stack gives
        (root / "runner_configs").mkdir()
        self.pools = {"cpu-spot": CPU_SPOT, "gpu-a10g": GPU_ON_DEMAND, "gpu-h100-cb": _block_pool(f"reservation_ids: [{RESERVATION}]")}
        self.quotas: dict[str, Any] = {SPOT_STANDARD: 640.0, ON_DEMAND_G: 64.0}  # a value, or an error code
        self.quota_names = dict(QUOTA_NAMES)
        self.reservations: dict[str, Any] = {RESERVATION: _reservation()}  # a reservation, or an error code
        self.offerings: dict[str, list[dict[str, Any]]] = {}
        self.sts_error: str | None = None  # an error code STS answers GetCallerIdentity with
        self.key_file: Path | None = root / "app.private-key.pem"
        self.key_file.write_text(github.private_key_pem, encoding="utf-8")
        github.add_repository("kernels")

    # ---- the account ----------------------------------------------------------------------
    def ec2(self) -> Any:
        return boto3.client("ec2", region_name=self.region)

    def add_image(self, name: str = "runner-x64-2026-05-01", created: datetime = NOW - timedelta(days=30)) -> str:
        ec2 = self.ec2()
        # An image of our own, made from one of moto's x86_64 Amazon images (the one moto's EMR uses),
        # stamped at a fixed time (moto stamps CreationDate from its own clock).
        instance = ec2.run_instances(ImageId=MOTO_X86_AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        with mock.patch("moto.ec2.models.amis.utcnow", return_value=created.replace(tzinfo=None)):
            return str(ec2.create_image(InstanceId=instance, Name=name)["ImageId"])

    def add_spot_role(self) -> None:
        # moto's CreateServiceLinkedRole names the role `AWSServiceRoleForspot`; EC2's is this.
        boto3.client("iam").create_role(
            RoleName="AWSServiceRoleForEC2Spot", Path="/aws-service-role/spot.amazonaws.com/", AssumeRolePolicyDocument="{}"
        )

    def deploy(self) -> str:
        """What a first `pulumi up` leaves: the webhook function and its URL, the org hook
        pointing at it, the runner group, and the App key in SSM."""
        role = boto3.client("iam").create_role(RoleName="webhook", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handle(event, context):\n    return None\n")
        functions = boto3.client("lambda", region_name=self.region)
        functions.create_function(
            FunctionName=WEBHOOK_FUNCTION, Runtime="python3.12", Role=role, Handler="handler.handle", Code={"ZipFile": code.getvalue()}
        )
        url = str(functions.create_function_url_config(FunctionName=WEBHOOK_FUNCTION, AuthType="NONE")["FunctionUrl"])
        self.github.add_hook(url)
        self.github.add_group("gpu", ["kernels"])
        boto3.client("ssm", region_name=self.region).put_parameter(
            Name="/runner-estate/sandbox/github-app/private-key", Value=self.github.private_key_pem, Type="SecureString"
        )
        return url

    def add_app(self, app_id: int, permissions: dict[str, str] | None = None) -> FakeApp:
        """Another App in github.extra_apps, installed on the org (with our App's permissions unless
        given), its key stored in SSM as `pulumi up` stores it."""
        app = self.github.add_app(app_id, permissions)
        self.extra_apps[app_id] = app.installation_id
        boto3.client("ssm", region_name=self.region).put_parameter(
            Name=f"/runner-estate/sandbox/github-app/private-key-{app_id}", Value=app.private_key_pem, Type="SecureString"
        )
        return app

    # ---- running the doctor -------------------------------------------------------------
    def write(self) -> None:
        apps = "".join(f"      - {{app_id: {a}, installation_id: {i}}}\n" for a, i in self.extra_apps.items())
        keys = "".join(f"  runner-estate:github_app_key_{a}:\n    secure: v1:PLACEHOLDER000000{a}:a2V5\n" for a in self.extra_apps)
        stack = STACK.format(
            region=self.region,
            installation=self.installation,
            extra_apps=f"    extra_apps:\n{apps}" if apps else "",
            repositories=", ".join(self.repositories),
            extra=self.stack_extra + keys,
        )
        (self.root / "Pulumi.sandbox.yaml").write_text(stack, encoding="utf-8")
        for old in (self.root / "runner_configs").glob("*.yaml"):
            old.unlink()
        for name, text in self.pools.items():
            (self.root / "runner_configs" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")

    def run(self) -> dict[str, Finding]:
        self.write()
        estate = load_estate([self.root / "runner_configs"])
        quotas = boto3.client("service-quotas", region_name=self.region)
        blocks = boto3.client("ec2", region_name=self.region)
        sts = boto3.client("sts", region_name=self.region)
        if self.sts_error:  # STS refuses the credentials (stubbed: moto accepts any)
            refusing = Stubber(sts)
            refusing.add_client_error("get_caller_identity", self.sts_error, "The security token included in the request is expired")
            refusing.activate()
        with Stubber(quotas) as stub_quotas, Stubber(blocks) as stub_blocks:
            # Canned answers in the order the doctor asks; Stubber checks each request against them.
            request: dict[str, Any]
            for need in quota_plan(estate).needs:
                answer = self.quotas[need.code]
                request = {"ServiceCode": "ec2", "QuotaCode": need.code}
                if isinstance(answer, str):
                    stub_quotas.add_client_error("get_service_quota", answer, "no", expected_params=request)
                    continue
                quota = {"ServiceCode": "ec2", "QuotaCode": need.code, "QuotaName": self.quota_names[need.code], "Value": answer,
                         "Unit": "None", "Adjustable": True, "GlobalQuota": False}  # fmt: skip
                stub_quotas.add_response("get_service_quota", {"Quota": quota}, request)
            for pool in block_pools(estate):
                block = pool.spec.estate.capacity_block
                assert block is not None
                for rid in block.reservation_ids:
                    found = self.reservations.get(rid, "InvalidCapacityReservationId.NotFound")
                    request = {"CapacityReservationIds": [rid]}
                    if isinstance(found, str):
                        stub_blocks.add_client_error("describe_capacity_reservations", found, f"{rid} not found", expected_params=request)
                    else:
                        stub_blocks.add_response("describe_capacity_reservations", {"CapacityReservations": [found]}, request)
                if block.purchase or block.renew:
                    request = {
                        "InstanceType": "p5.48xlarge",
                        "InstanceCount": block.instance_count,
                        "CapacityDurationHours": block.duration_hours,
                    }
                    stub_blocks.add_response(
                        "describe_capacity_block_offerings", {"CapacityBlockOfferings": self.offerings.get(pool.name, [])}, request
                    )
            clients = AwsClients(
                sts=sts,
                iam=boto3.client("iam"),
                ec2=self.ec2(),
                ssm=boto3.client("ssm", region_name=self.region),
                quotas=quotas,
                lambda_=boto3.client("lambda", region_name=self.region),
                blocks=blocks,
            )
            findings = doctor(self.root, "sandbox", self.key_file, clients=clients, github_url=self.github.url, clock=NOW.timestamp)
        return {f.check: f for f in findings}


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    fake = FakeGithub(org="example-org", app_id=1234, clock=NOW.timestamp).start()
    yield fake
    fake.stop()


@pytest.fixture
def world(tmp_path: Path, github: FakeGithub, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        made = World(tmp_path, github)
        made.add_image()
        made.add_spot_role()
        yield made


def statuses(found: dict[str, Finding]) -> dict[str, str]:
    return {check: f.status for check, f in found.items()}


# ---- the whole run ------------------------------------------------------------------------------
def test_a_deployed_sandbox_passes_every_check(world: World) -> None:
    url = world.deploy()
    found = world.run()
    assert statuses(found) == {
        "aws-credentials": "ok",
        "region": "ok",
        "spot-role": "ok",
        "quota/on-demand/g-vt": "ok",
        "quota/spot/standard": "ok",
        "ami/cpu-spot": "ok",
        "ami/gpu-a10g": "ok",
        "ami/gpu-h100-cb": "ok",
        "capacity-block/gpu-h100-cb": "ok",
        "github-app": "ok",
        "github-permissions": "ok",
        "github-token": "ok",
        "webhook": "ok",
        "webhook-deliveries": "ok",
        "runner-group/gpu": "ok",
    }
    assert url in found["webhook"].detail
    assert "account 123456789012" in found["aws-credentials"].detail
    assert "gpu-a10g 2 x g5.xlarge (4 vCPUs) = 8" in found["quota/on-demand/g-vt"].detail


def test_before_the_first_deploy_what_pulumi_up_creates_is_a_warning(world: World) -> None:
    found = world.run()
    assert found["webhook"].status == "warn"
    assert "the first `pulumi up` creates it" in found["webhook"].detail
    assert found["runner-group/gpu"].status == "warn"
    assert "not created yet" in found["runner-group/gpu"].detail
    assert "webhook-deliveries" not in found
    assert not [f for f in found.values() if f.status == "fail"]


# ---- 1. credentials and region ------------------------------------------------------------------
@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups from a test


def test_missing_credentials_are_one_fail_line_and_exit_1_not_a_traceback(
    no_aws_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--stack", "prod"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("fail aws-credentials: no usable AWS credentials for us-east-1: Unable to locate credentials")
    assert "; fix: give credentials for the target account" in lines[0]
    # No key file and no AWS to read the deployed copy from: the GitHub side says so, and stops.
    assert lines[1].startswith("fail github-app: no App key: give --app-key-file")
    assert len(lines) == 2
    assert "Traceback" not in out + err


def test_json_is_one_array_of_check_status_detail_fix(no_aws_credentials: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--stack", "prod", "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [set(f) for f in found] == [{"check", "status", "detail", "fix"}] * 2
    assert [(f["check"], f["status"]) for f in found] == [("aws-credentials", "fail"), ("github-app", "fail")]


def test_stubbed_expired_credentials_fail_but_the_github_checks_still_run(world: World) -> None:
    world.sts_error = "ExpiredToken"
    found = world.run()
    assert found["aws-credentials"].status == "fail"
    assert "ExpiredToken: The security token included in the request is expired" in found["aws-credentials"].detail
    assert not {"spot-role", "region", "ami/cpu-spot", "quota/spot/standard"} & set(found)
    assert (found["github-app"].status, found["github-permissions"].status, found["github-token"].status) == ("ok", "ok", "ok")
    # Whether the stack is deployed is unknown without AWS: said so, not guessed.
    assert (found["webhook"].status, found["webhook"].fix) == ("warn", "see aws-credentials")
    assert "whether the stack is deployed is unknown" in found["runner-group/gpu"].detail


def test_a_region_the_account_has_not_enabled_fails(world: World) -> None:
    world.region = "ap-east-1"  # an opt-in region; moto answers `not-opted-in` for it
    world.add_image()
    found = world.run()
    assert found["region"].status == "fail"
    assert "ap-east-1 (aws:region) is not enabled for account 123456789012" in found["region"].detail
    assert found["aws-credentials"].status == "ok"
    assert world.run()["ami/cpu-spot"].status == "ok"  # every read is in the stack's region


# ---- 2. the Spot service-linked role -------------------------------------------------------------
def test_a_missing_spot_role_fails_for_spot_pools_with_the_fix(world: World) -> None:
    boto3.client("iam").delete_role(RoleName="AWSServiceRoleForEC2Spot")
    found = world.run()["spot-role"]
    assert found.status == "fail"
    assert "spot pools cpu-spot cannot launch" in found.detail
    assert found.fix is not None
    assert "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com" in found.fix


def test_a_missing_spot_role_the_stack_creates_is_a_warning(world: World) -> None:
    boto3.client("iam").delete_role(RoleName="AWSServiceRoleForEC2Spot")
    world.stack_extra = "  runner-estate:create_service_linked_role_spot: true\n"
    found = world.run()["spot-role"]
    assert (found.status, found.detail) == (
        "warn",
        "AWSServiceRoleForEC2Spot is missing: the next `pulumi up` creates it (create_service_linked_role_spot)",
    )


# ---- 3. vCPU quotas (Service Quotas: stubbed) ---------------------------------------------------
def test_stubbed_quota_below_one_pools_maximum_fails_with_the_request_to_file(world: World) -> None:
    world.quotas[SPOT_STANDARD] = 16.0  # cpu-spot may run 4 x m7i.2xlarge = 32 vCPUs
    found = world.run()["quota/spot/standard"]
    assert found.status == "fail"
    assert "L-34B43A08 'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests' is 16 vCPUs in us-east-1" in found.detail
    assert "cpu-spot 4 x m7i.2xlarge (8 vCPUs) = 32" in found.detail
    assert found.fix is not None
    assert "--quota-code L-34B43A08 --desired-value 32 --region us-east-1" in found.fix


def test_stubbed_quota_the_pools_exceed_only_together_is_a_warning(world: World) -> None:
    world.pools["cpu-spot-2"] = CPU_SPOT.replace("cpu]", "cpu, big]")
    world.quotas[SPOT_STANDARD] = 48.0  # each pool needs 32: alone they fit, together they do not
    found = world.run()["quota/spot/standard"]
    assert found.status == "warn"
    assert "the pools together may need 64" in found.detail


def test_stubbed_spot_pool_with_failover_also_needs_on_demand_quota(world: World) -> None:
    world.pools["cpu-spot"] = CPU_SPOT.replace(
        "  runners_maximum_count: 4\n",
        "  runners_maximum_count: 4\n  enable_on_demand_failover_for_errors: [InsufficientInstanceCapacity]\n",
    )
    world.quotas["L-1216C47A"] = 5.0  # the default for a new account: failover cannot launch one m7i.2xlarge
    found = world.run()["quota/on-demand/standard"]
    assert found.status == "warn"  # only failover would use it: not a failure of the pool itself
    assert "cpu-spot 4 x m7i.2xlarge (8 vCPUs) = 32 on failover" in found.detail


def test_stubbed_quota_without_an_applied_value_reads_the_aws_default() -> None:
    quotas = boto3.client("service-quotas", region_name=REGION)

    with Stubber(quotas) as stub:
        stub.add_client_error(
            "get_service_quota",
            "NoSuchResourceException",
            "no applied value",
            expected_params={"ServiceCode": "ec2", "QuotaCode": ON_DEMAND_G},
        )
        default = {"ServiceCode": "ec2", "QuotaCode": ON_DEMAND_G, "QuotaName": QUOTA_NAMES[ON_DEMAND_G], "Value": 0.0}
        stub.add_response("get_aws_default_service_quota", {"Quota": default}, {"ServiceCode": "ec2", "QuotaCode": ON_DEMAND_G})
        clients = AwsClients(sts=None, iam=None, ec2=None, ssm=None, quotas=quotas, lambda_=None, blocks=None)
        found = read_quota(clients, ON_DEMAND_G)
    assert found == Quota(ON_DEMAND_G, QUOTA_NAMES[ON_DEMAND_G], 0.0, default=True)


def test_stubbed_quota_service_quotas_names_differently_is_reported_not_trusted(world: World) -> None:
    world.quota_names[ON_DEMAND_G] = "Running On-Demand P instances"
    found = world.run()["quota/on-demand/g-vt"]
    assert found.status == "warn"
    assert "the doctor's quota table may be out of date" in found.detail


def test_stubbed_quota_that_cannot_be_read_is_a_warning_naming_the_permission(world: World) -> None:
    world.quotas[ON_DEMAND_G] = "AccessDeniedException"
    found = world.run()["quota/on-demand/g-vt"]
    assert found.status == "warn"
    assert found.fix == "allow servicequotas:GetServiceQuota and GetAWSDefaultServiceQuota to the credentials doctor runs with"


def test_quota_classes_follow_the_family_letters() -> None:
    expected = {
        "m7i.2xlarge": "standard", "c7gn.16xlarge": "standard", "im4gn.large": "standard", "r7iz.xlarge": "standard",
        "z1d.large": "standard", "g5.xlarge": "g-vt", "g4dn.xlarge": "g-vt", "vt1.3xlarge": "g-vt", "p5.48xlarge": "p",
        "p6-b200.48xlarge": "p", "inf2.xlarge": "inf", "trn1.32xlarge": "trn", "dl1.24xlarge": "dl", "x2idn.16xlarge": "x",
        "u-6tb1.56xlarge": "high-memory", "mac2.metal": None,
    }  # fmt: skip
    assert {name: getattr(quota_class(name), "key", None) for name in expected} == expected
    found = (CLASSES["p"].on_demand, CLASSES["p"].spot, CLASSES["g-vt"].on_demand, CLASSES["g-vt"].spot)
    assert found == ("L-417A185B", "L-7212CCBC", "L-DB2E81BA", "L-3819A6DF")


def test_vcpus_come_from_the_catalog_or_the_size_name() -> None:
    # The instance catalog carries vCPUs for every type EC2 has, metal sizes included.
    assert [instance_vcpus(t) for t in ("m7i.large", "m7i.2xlarge", "g5.xlarge", "p5.48xlarge", "m7i.metal-24xl")] == [
        (2, True),
        (8, True),
        (4, True),
        (192, True),
        (96, True),
    ]


def test_capacity_block_pools_and_drained_pools_draw_on_no_instance_quota(world: World) -> None:
    world.pools["gpu-a10g"] = GPU_ON_DEMAND.replace("runners_maximum_count: 2", "runners_maximum_count: 0")
    world.write()
    plan = quota_plan(load_estate([world.root / "runner_configs"]))
    assert [need.check for need in plan.needs] == ["quota/spot/standard"]


# ---- 4. AMIs (moto) -----------------------------------------------------------------------------
def test_an_ami_that_resolves_names_the_image_the_launch_template_takes(world: World) -> None:
    newer = world.add_image("runner-x64-2026-06-01", NOW - timedelta(days=1))
    found = world.run()["ami/cpu-spot"]
    assert found.status == "ok"
    assert found.detail.startswith(f"{newer} (runner-x64-2026-06-01, 2026-06-01)")
    assert "the newest of 2 matching owners self, architecture=x86_64, name=runner-x64-*, state=available" in found.detail


def test_an_ami_filter_nothing_matches_fails(world: World) -> None:
    world.pools["cpu-spot"] = CPU_SPOT.replace("runner-x64-*", "runner-x64-typo-*")
    found = world.run()["ami/cpu-spot"]
    assert found.status == "fail"
    assert "no image in us-east-1 matches owners self" in found.detail
    assert found.fix is not None
    assert "cpu-spot.yaml" in found.fix


def test_an_arm64_pool_finds_no_x86_image_of_the_same_name(world: World) -> None:
    world.pools["cpu-spot"] = (
        CPU_SPOT.replace("x64, cpu]", "arm64, cpu]")
        .replace("runner_architecture: x64", "runner_architecture: arm64")
        .replace("m7i.2xlarge", "m7g.2xlarge")
    )
    found = world.run()["ami/cpu-spot"]
    assert found.status == "fail"
    assert "architecture=arm64" in found.detail


# ---- 5. capacity blocks (reservations and offerings: stubbed) -----------------------------------
def test_stubbed_active_capacity_block_is_ok(world: World) -> None:
    found = world.run()["capacity-block/gpu-h100-cb"]
    assert found.status == "ok"
    assert f"{RESERVATION} active: 2 x p5.48xlarge in us-east-1a" in found.detail


@pytest.mark.parametrize(
    ("reservation", "message"),
    [
        ("InvalidCapacityReservationId.NotFound", f"{RESERVATION} does not exist in this account in us-east-1"),
        (_reservation(ReservationType="default"), "is an On-Demand Capacity Reservation, not a capacity block"),
        (_reservation(InstanceType="p4d.24xlarge"), "holds p4d.24xlarge, but the pool runs p5.48xlarge"),
    ],
)
def test_stubbed_reservation_that_is_no_block_of_the_pool_fails(world: World, reservation: Any, message: str) -> None:
    world.reservations[RESERVATION] = reservation
    found = world.run()["capacity-block/gpu-h100-cb"]
    assert found.status == "fail"
    assert message in found.detail


def test_stubbed_only_expired_blocks_left_is_a_warning(world: World) -> None:
    world.reservations[RESERVATION] = _reservation(State="expired", StartDate=NOW - timedelta(days=3), EndDate=NOW - timedelta(days=1))
    found = world.run()["capacity-block/gpu-h100-cb"]
    assert found.status == "warn"
    assert "the pool serves no job until a new reservation id is added" in found.detail


def _buying_world(world: World, max_price: int = 1000) -> None:
    world.pools["gpu-h100-buy"] = (
        _block_pool(f"purchase: true\n    max_price_usd: {max_price}\n    duration_hours: 24")
        .replace("h100, 1gpu]", "h100, buy, 1gpu]")
        .replace("h100, 4gpu]", "h100, buy, 4gpu]")
        .replace("[gpu, h100]", "[gpu, h100, buy]")
    )


def test_stubbed_offering_within_the_price_limit_is_ok(world: World) -> None:
    _buying_world(world)
    world.offerings["gpu-h100-buy"] = [_offering("1500.00", NOW + timedelta(days=2)), _offering("755.04", NOW + timedelta(days=7))]
    found = world.run()["capacity-block-offerings/gpu-h100-buy"]
    assert found.status == "ok"
    assert (
        "2 offerings of 1 x p5.48xlarge for 24 h in us-east-1, the cheapest $755.04 from 2026-06-09 15:30 UTC in us-east-1b" in found.detail
    )


def test_stubbed_no_offering_fails_a_pool_that_buys_at_pulumi_up(world: World) -> None:
    _buying_world(world)
    found = world.run()["capacity-block-offerings/gpu-h100-buy"]
    assert found.status == "fail"
    assert "`pulumi up` cannot buy the block" in found.detail


def test_stubbed_offerings_only_above_the_price_limit_fail_with_the_key_to_raise(world: World) -> None:
    _buying_world(world, max_price=500)
    world.offerings["gpu-h100-buy"] = [_offering("755.04", NOW + timedelta(days=7))]
    found = world.run()["capacity-block-offerings/gpu-h100-buy"]
    assert found.status == "fail"
    assert "above max_price_usd $500.00" in found.detail
    assert found.fix is not None
    assert "raise estate.capacity_block.max_price_usd" in found.fix


# ---- 6. the GitHub App (fake GitHub) ------------------------------------------------------------
def test_an_app_not_installed_on_the_org_fails_and_stops_the_github_checks(world: World) -> None:
    world.github.installed = False
    found = world.run()
    assert found["github-app"].status == "fail"
    assert "App 1234 is not installed on example-org" in found["github-app"].detail
    assert not {"github-permissions", "github-token", "webhook", "runner-group/gpu"} & set(found)


def test_a_stack_naming_another_installation_fails_with_the_right_id(world: World) -> None:
    world.installation = 99
    found = world.run()["github-app"]
    assert found.status == "fail"
    assert found.fix == f"set runner-estate:github.installation_id: {INSTALLATION_ID}"


def test_a_key_that_is_not_the_apps_is_refused(world: World) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert world.key_file is not None
    world.key_file.write_bytes(pem)
    found = world.run()["github-app"]
    assert found.status == "fail"
    assert "GitHub refused the App's JWT" in found.detail


def test_the_app_key_is_read_from_ssm_once_deployed(world: World) -> None:
    world.deploy()
    world.key_file = None
    assert world.run()["github-token"].status == "ok"


def test_missing_permissions_fail_naming_each_and_why(world: World) -> None:
    del world.github.installation_permissions["organization_hooks"]
    world.github.installation_permissions["organization_self_hosted_runners"] = "read"
    found = world.run()["github-permissions"]
    assert found.status == "fail"
    assert "organization_self_hosted_runners: write (JIT runner configs" in found.detail
    assert "it has read" in found.detail
    assert "organization_hooks: write (the org `workflow_job` webhook and its deliveries" in found.detail
    assert "redelivery reads; it has none)" in found.detail


def test_permissions_beyond_what_the_estate_uses_are_a_warning(world: World) -> None:
    world.github.installation_permissions |= {"contents": "read", "organization_hooks": "admin"}
    found = world.run()["github-permissions"]
    assert found.status == "warn"
    assert "contents: read, organization_hooks: admin" in found.detail


def test_a_token_github_will_not_mint_fails(world: World) -> None:
    world.github.fail_next(403, "/access_tokens")
    found = world.run()
    assert found["github-token"].status == "fail"
    assert "answered 403" in found["github-token"].detail
    assert "webhook" not in found


# ---- several Apps (github.extra_apps): each installed as ours is -----------------------------------
def test_extra_apps_installed_as_ours_is_are_ok(world: World) -> None:
    world.add_app(1235)
    world.add_app(1236)
    found = world.run()["github-apps"]
    assert (found.status, found.detail, found.fix) == ("ok", "3 Apps installed with the same permissions", None)


def test_an_extra_app_not_installed_fails_naming_it(world: World) -> None:
    world.add_app(1235)
    world.add_app(1236).installed = False
    found = world.run()
    assert found["github-apps"].status == "fail"
    assert found["github-apps"].detail == "App 1236 is not installed on the organisation: install it with the same permissions"
    assert found["github-apps"].fix == (
        "install App 1236 on example-org with App 1234's permissions and repositories (docs/deploy.md, *Several GitHub Apps*)"
    )
    assert found["github-app"].status == "ok"  # ours is fine: only the one App is named


def test_an_extra_app_with_weaker_permissions_fails_naming_it_and_each_difference(world: World) -> None:
    world.add_app(1235, {"organization_self_hosted_runners": "read", "organization_hooks": "write", "actions": "write", "metadata": "read"})
    found = world.run()["github-apps"]
    assert found.status == "fail"
    assert "App 1235 has organization_self_hosted_runners: read; the control plane needs write" in found.detail
    assert "App 1235 is not installed with App 1234's permissions: organization_self_hosted_runners: read (App 1234: write)" in found.detail
    assert found.fix is not None
    assert "install App 1235 on example-org" in found.fix


def test_an_extra_app_that_sees_other_repositories_fails(world: World) -> None:
    world.add_app(1235).repository_selection = "selected"
    found = world.run()["github-apps"]
    assert found.status == "fail"
    assert found.detail.startswith("App 1235 sees selected repositories, App 1234 all")


def test_an_extra_app_whose_key_is_not_in_ssm_says_which_parameter(world: World) -> None:
    world.add_app(1235)
    world.add_app(1236)
    boto3.client("ssm", region_name=world.region).delete_parameter(Name="/runner-estate/sandbox/github-app/private-key-1236")
    found = world.run()["github-apps"]
    assert found.status == "warn"
    assert found.detail == (
        "could not read App 1236's installation: its key, SSM /runner-estate/sandbox/github-app/private-key-1236,"
        " does not exist (`pulumi up` stores it)"
    )
    assert found.fix == (
        "`pulumi config set --secret runner-estate:github_app_key_1236 < its .pem`, then `pulumi up`"
        " (docs/deploy.md, *Several GitHub Apps*)"
    )


def test_an_extra_app_the_stack_gives_another_installation_id_fails(world: World) -> None:
    world.add_app(1235)
    world.extra_apps[1235] = 99
    found = world.run()["github-apps"]
    assert found.status == "fail"
    assert f"App 1235 is installation {INSTALLATION_ID + 1}, but github.extra_apps gives installation_id 99" in found.detail


def test_without_extra_apps_there_is_no_github_apps_check(world: World) -> None:
    assert "github-apps" not in world.run()


# ---- 7. the org webhook and its deliveries -------------------------------------------------------
def test_a_deployed_function_no_hook_points_at_fails(world: World) -> None:
    world.deploy()
    world.github.hooks.clear()
    found = world.run()["webhook"]
    assert found.status == "fail"
    assert "no org webhook points at it" in found.detail


def test_an_inactive_hook_fails(world: World) -> None:
    world.deploy()
    next(iter(world.github.hooks.values())).active = False
    found = world.run()["webhook"]
    assert found.status == "fail"
    assert "it is inactive" in found.detail


def test_another_hook_sending_workflow_job_before_the_first_deploy_is_named(world: World) -> None:
    world.github.add_hook("https://old-scaler.example.org/webhook")
    found = world.run()["webhook"]
    assert found.status == "warn"
    assert "also sends workflow_job to https://old-scaler.example.org/webhook" in found.detail


def test_failed_deliveries_of_the_last_day_are_a_warning_with_the_cause(world: World) -> None:
    world.deploy()
    hook = next(iter(world.github.hooks.values()))
    world.github.record_delivery(hook, 401, (NOW - timedelta(days=2)).timestamp())  # older than a day: not counted
    world.github.record_delivery(hook, 202, (NOW - timedelta(hours=5)).timestamp())
    world.github.record_delivery(hook, 401, (NOW - timedelta(hours=2)).timestamp())
    world.github.record_delivery(hook, 202, (NOW - timedelta(hours=1)).timestamp())
    found = world.run()["webhook-deliveries"]
    assert found.status == "warn"
    assert found.detail == "1 of 3 deliveries in the last 24 h failed (latest 2026-06-02 13:30 UTC: Invalid HTTP Response: 401)"
    assert found.fix is not None
    assert "the hook's secret differs from webhook_secret_value" in found.fix


def test_deliveries_are_read_across_cursor_pages(world: World) -> None:
    world.deploy()
    hook = next(iter(world.github.hooks.values()))
    for minute in range(250, 0, -1):
        world.github.record_delivery(hook, 202, (NOW - timedelta(minutes=minute)).timestamp())
    found = world.run()["webhook-deliveries"]
    assert (found.status, found.detail) == ("ok", "250 deliveries in the last 24 h, none failed")
    assert world.github.calls_to("/deliveries") == 3  # 100 + 100 + 50, following GitHub's cursor links


# ---- 8. runner groups and their repositories -----------------------------------------------------
def test_a_repository_that_does_not_exist_fails(world: World) -> None:
    world.repositories = ["kernels", "kernals"]
    found = world.run()["runner-group/gpu"]
    assert found.status == "fail"
    assert "example-org/kernals does not exist, or the App's installation does not include it" in found.detail


def test_a_public_repository_in_a_private_group_is_a_warning(world: World) -> None:
    world.github.add_repository("docs", private=False)
    world.repositories = ["kernels", "docs"]
    found = world.run()["runner-group/gpu"]
    assert found.status == "warn"
    assert "example-org/docs is public" in found.detail


def test_a_deployed_group_whose_repositories_drifted_is_a_warning(world: World) -> None:
    world.deploy()
    world.github.add_group("gpu", ["kernels", "serving"], visibility="selected")
    world.github.add_repository("serving")
    found = world.run()["runner-group/gpu"]
    assert found.status == "warn"
    assert "repositories kernels, serving) differs from the stack's (kernels)" in found.detail


def test_a_group_of_the_same_name_before_the_first_deploy_is_a_warning(world: World) -> None:
    world.github.add_group("gpu", ["kernels"])
    found = world.run()["runner-group/gpu"]
    assert found.status == "warn"
    assert "already exists" in found.detail


# ---- the fake GitHub answers as GitHub does ------------------------------------------------------
def test_fake_github_installation_and_hook_shapes_follow_the_rest_api(github: FakeGithub) -> None:
    client = GithubClient(github.url, "example-org", 1234, lambda: github.private_key_pem, clock=NOW.timestamp)
    installation = client.installation()
    assert {"id", "account", "app_id", "target_type", "permissions", "repository_selection", "events", "suspended_at"} <= set(installation)
    hook = github.add_hook("https://example.org/hook")
    github.record_delivery(hook, 502, NOW.timestamp())
    (listed,) = next(client.listing("/orgs/example-org/hooks"))
    assert {"id", "name", "active", "events", "config", "deliveries_url", "ping_url"} <= set(listed)
    assert {"url", "content_type", "insecure_ssl"} <= set(listed["config"])
    (delivery,) = next(client.listing(f"/orgs/example-org/hooks/{hook.id}/deliveries"))
    assert {"id", "guid", "delivered_at", "redelivery", "duration", "status", "status_code", "event", "action"} <= set(delivery)
    assert (delivery["status_code"], delivery["delivered_at"]) == (502, "2026-06-02T15:30:00Z")
