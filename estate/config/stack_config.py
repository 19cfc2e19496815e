"""The stack's own settings (Pulumi.<stack>.yaml, namespace `runner-estate:`), validated once."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from estate.config.diagnostics import ConfigError, ConfigWarning, first_problem
from estate.config.strict_model import StrictModel
from lambda_src.core.cron import CronError, parse_schedule
from lambda_src.core.instance_catalog import parse_instance_type, unknown_type_message

NAMESPACE = "runner-estate"
DEFAULT_RUNNER_VERSION = "2.329.0"  # actions/runner release the hosts install unless a stack or the agent says otherwise
# SHA-256 of the release tarballs, as GitHub publishes them in the release's notes
# (https://github.com/actions/runner/releases/tag/v2.329.0): a stack that keeps the default
# version needs no `runner_sha256`, and its images and hosts still check what they download.
KNOWN_RUNNER_SHA256: dict[str, dict[str, str]] = {
    "2.329.0": {
        "x64": "194f1e1e4bd02f80b7e9633fc546084d8d4e19f3928a324d512ea53430102e1d",
        "arm64": "56768348b3d643a6a29d4ad71e9bdae0dc0ef1eb01afe0f7a8ee097b039bfaaf",
    }
}
# Pulumi secrets (`pulumi config set --secret`), stored by ScalerFunctions as SSM SecureStrings
# under the names in `secrets`. They never enter StackConfig, so no report can print them.
SECRET_SETTINGS = ("github_app_key", "webhook_secret_value")
# Secrets needed only by some estates: the Buildkite agent token, when runner_configs/ has queues.
OPTIONAL_SECRET_SETTINGS = ("buildkite_agent_token",)
_APP_KEY_SETTING_RE = re.compile(r"^github_app_key_(\d+)$")


def app_key_setting(app_id: int) -> str:
    """The Pulumi secret holding an extra App's private key (`github.extra_apps`)."""
    return f"github_app_key_{app_id}"


def is_app_key_setting(field: str) -> bool:
    return _APP_KEY_SETTING_RE.match(field) is not None


def app_key_parameter(stack: StackConfig, app_id: int) -> str:
    """The SecureString an App's key is stored in: the main App's is `secrets.github_app_private_key`,
    each extra App's the same name with `-<app id>`."""
    base = stack.secrets.github_app_private_key
    return base if app_id == stack.github.app_id else f"{base}-{app_id}"


def _sha256(value: str) -> str:
    # It reaches the hosts' user-data: a digest and nothing else.
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", value):
        raise ValueError(f"{value!r} is not a SHA-256 digest (64 hexadecimal digits)")
    return value


_LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


class ExtraApp(StrictModel):
    """Another GitHub App the control plane spreads its calls over (issue 21.4). Its key is the
    Pulumi secret `github_app_key_<app_id>`, stored as its own SecureString."""

    app_id: int = Field(ge=1)
    installation_id: int | None = Field(default=None, ge=1)


class GitHubSettings(StrictModel):
    org: str = Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")
    app_id: int = Field(ge=1)
    installation_id: int | None = Field(default=None, ge=1)
    api_url: str = Field(default="https://api.github.com", pattern=r"^https://")
    # The org webhook whose failed deliveries are sent again; unset, it is found by our URL.
    webhook_id: int | None = Field(default=None, ge=1)
    # More Apps, installed on the org with the same permissions: calls go round them all and a
    # rate-limited one is passed over until its reset (one App's budget caps a large org).
    extra_apps: list[ExtraApp] = Field(default_factory=list, max_length=9)

    @model_validator(mode="after")
    def _distinct_apps(self) -> GitHubSettings:
        ids = [self.app_id, *(a.app_id for a in self.extra_apps)]
        if len(set(ids)) != len(ids):
            raise ValueError("extra_apps: each App is given once, and not the main app_id again")
        return self


class SecretNames(StrictModel):
    """Names of SSM SecureString parameters; the values never pass through config or code."""

    github_app_private_key: str = Field(pattern=r"^/[A-Za-z0-9_./-]+$")
    webhook_secret: str = Field(pattern=r"^/[A-Za-z0-9_./-]+$")


class RunnerGroupSettings(StrictModel):
    """An org runner group we manage: which repositories (and optionally workflows) may use
    the pools registered into it."""

    repositories: list[str] = Field(min_length=1)
    workflows: list[str] = Field(default_factory=list)

    @field_validator("repositories")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name):
                raise ValueError(f"{name!r} is not a repository name (give the name without the org)")
        return value

    @field_validator("workflows")
    @classmethod
    def _workflow_refs(cls, value: list[str]) -> list[str]:
        for ref in value:
            if not re.fullmatch(r"[\w.-]+/[\w.-]+/\.github/workflows/[\w./-]+\.ya?ml@\S+", ref):
                raise ValueError(f"{ref!r} is not OWNER/REPO/.github/workflows/FILE.yml@REF")
        return value


_EMAIL_RE = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
_TOPIC_ARN_RE = re.compile(r"^arn:aws[a-z-]*:sns:(?P<region>[a-z]{2}(-gov)?-[a-z]+-\d):\d{12}:[A-Za-z0-9_-]{1,256}$")
_KMS_KEY_RE = re.compile(
    r"^(?:arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+)|alias/[A-Za-z0-9/_-]+|[0-9a-f-]{36}|mrk-[0-9a-f]{32})$"
)
# CloudWatch cannot use the AWS managed key for SNS (its policy cannot be extended), so a topic under
# it drops every alarm notification (Amazon SNS developer guide, "Key management").
AWS_MANAGED_SNS_KEY = "alias/aws/sns"


def _check_emails(value: list[str]) -> list[str]:
    for address in value:
        if not _EMAIL_RE.match(address):
            raise ValueError(f"{address!r} is not an email address")
    if len({a.lower() for a in value}) != len(value):
        raise ValueError("an address is given twice")
    return value


class AlarmSettings(StrictModel):
    """Where alarm notifications go: our topic with these subscriptions, or an existing topic."""

    emails: list[str] = Field(default_factory=list)
    https_endpoint: str | None = Field(default=None, max_length=2048)
    topic_arn: str | None = None
    kms_key: str | None = None  # our topic's key; default: a customer managed key the stack creates

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return _check_emails(value)

    @field_validator("https_endpoint")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https://[^\s/]+(?:/\S*)?$", value):
            raise ValueError(f"{value!r} is not an https:// URL (alarms are not sent over plain http)")
        return value

    @field_validator("topic_arn")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and not _TOPIC_ARN_RE.match(value):
            raise ValueError(f"{value!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
        return value

    @field_validator("kms_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value == AWS_MANAGED_SNS_KEY or value.endswith(f":{AWS_MANAGED_SNS_KEY}"):
            raise ValueError(
                f"{AWS_MANAGED_SNS_KEY} cannot be used: CloudWatch may not use the AWS managed key, so no alarm would reach the topic;"
                " leave kms_key unset (the stack creates a key) or give a customer managed key whose policy lets cloudwatch.amazonaws.com"
                " use kms:GenerateDataKey and kms:Decrypt"
            )
        if not _KMS_KEY_RE.match(value):
            raise ValueError(f"{value!r} is not a KMS key (key ARN, key id, alias/NAME or alias ARN)")
        return value

    @model_validator(mode="after")
    def _ours_or_theirs(self) -> AlarmSettings:
        if self.topic_arn is not None and (self.emails or self.https_endpoint or self.kms_key):
            raise ValueError("topic_arn names an existing topic: its subscriptions and key are its owner's; give topic_arn alone")
        return self

    @property
    def notifies_anyone(self) -> bool:
        return bool(self.topic_arn or self.emails or self.https_endpoint)


# AWS's hours in a month for monthly pricing (730 = 8,760 / 12): a budget's hourly pace.
HOURS_PER_MONTH = 730
# The spend-rate alarm's default: twice the budget's hourly pace, held for three hours.
SPEND_ALARM_FACTOR = 2.0


class BudgetSettings(StrictModel):
    """The stack's AWS Budget: a monthly cost limit, with notifications at 80 % and 100 % of actual
    spend and 100 % of forecast spend, to the alarm topic (and `emails`)."""

    monthly_usd: float = Field(gt=0, le=100_000_000)
    emails: list[str] = Field(default_factory=list, max_length=10)  # AWS Budgets: at most 10 email subscribers
    # Which costs count: those tagged with this environment (cost-allocation tags, activated
    # once per account), or the whole account's.
    scope: Literal["environment", "account"] = "environment"
    # Alarm `spend-rate` when the estate's live hosts and blocks cost more an hour than this
    # for three hours; default twice the budget's pace (monthly_usd / 730).
    alarm_usd_per_hour: float | None = Field(default=None, gt=0)

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return _check_emails(value)

    @property
    def spend_alarm_usd_per_hour(self) -> float:
        if self.alarm_usd_per_hour is not None:
            return self.alarm_usd_per_hour
        return round(SPEND_ALARM_FACTOR * self.monthly_usd / HOURS_PER_MONTH, 4)


Endpoint = Literal["s3", "ssm", "ssmmessages", "ec2messages", "logs", "ec2", "sqs", "ecr.api", "ecr.dkr"]


class NetworkSettings(StrictModel):
    """A new VPC (cidr, zones, NAT, endpoints) or an existing one (vpc_id + subnet_ids)."""

    vpc_id: str | None = Field(default=None, pattern=r"^vpc-[0-9a-f]+$")
    subnet_ids: list[str] = Field(default_factory=list)
    cidr: str = "10.0.0.0/16"
    availability_zones: list[str] = Field(default_factory=list)
    az_count: int = Field(default=2, ge=2, le=6)
    nat: Literal["single", "per-az", "none"] = "single"
    endpoints: list[Endpoint] = Field(default_factory=lambda: list[Endpoint](["s3"]))
    runner_subnets: Literal["private", "public"] = "private"

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 CIDR block") from exc
        if not 16 <= net.prefixlen <= 22:
            raise ValueError(f"VPC block {value} must be between /16 and /22 to hold two subnets per zone")
        return value

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        for sid in value:
            if not sid.startswith("subnet-"):
                raise ValueError(f"{sid!r} is not a subnet id (subnet-...)")
        return value

    @model_validator(mode="after")
    def _shape(self) -> NetworkSettings:
        if bool(self.vpc_id) != bool(self.subnet_ids):
            raise ValueError("bring-your-own network needs both vpc_id and subnet_ids")
        if self.vpc_id is None:
            if self.availability_zones and len(self.availability_zones) < 2:
                raise ValueError("availability_zones must name at least 2 zones")
            if self.nat == "none" and self.runner_subnets == "private":
                raise ValueError("runners in private subnets need nat (single or per-az) to reach GitHub; or set runner_subnets: public")
        return self

    @property
    def creates_vpc(self) -> bool:
        return self.vpc_id is None


ImageArchitecture = Literal["x86_64", "arm64"]
# Canonical's public SSM parameters for its newest Ubuntu 24.04 LTS server images, gp3 root
# ("Find Ubuntu images on AWS", documentation.ubuntu.com/aws): the default parent of every image.
UBUNTU_PARENTS: dict[ImageArchitecture, str] = {
    "x86_64": "ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
    "arm64": "ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id",
}
# Image Builder's build and test instances: general purpose, no GPU (a driver builds and loads
# its module without one; nvidia-smi cannot be tried there).
DEFAULT_BUILD_INSTANCE_TYPES: dict[ImageArchitecture, list[str]] = {
    "x86_64": ["m7i.2xlarge", "m6i.2xlarge"],
    "arm64": ["m7g.2xlarge", "m6g.2xlarge"],
}
# An image reference `docker pull` takes: [registry/]name[:tag][@sha256:digest]. It reaches a
# root shell on the build instance (quoted there too).
_CONTAINER_IMAGE_RE = re.compile(
    r"^[a-z0-9][a-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_PARENT_RE = re.compile(r"^(?:ssm:/[A-Za-z0-9_./-]+|ami-[0-9a-f]{8,17})$")


def check_container_image(value: str) -> str:
    if len(value) > 255 or not _CONTAINER_IMAGE_RE.match(value):
        raise ValueError(f"{value!r} is not a container image reference ([registry/]name[:tag][@sha256:digest], lower case)")
    return value


ContainerImage = Annotated[str, AfterValidator(check_container_image)]


class NvidiaSettings(StrictModel):
    """What GPU images install from Ubuntu's archive (the `-server` driver branches, open kernel
    modules prebuilt and signed for the AWS kernel; ubuntu.com/server/docs, "NVIDIA drivers
    installation") and NVIDIA's container-toolkit repository (NVIDIA Container Toolkit install
    guide, docs.nvidia.com/datacenter/cloud-native/container-toolkit)."""

    driver_branch: str = Field(default="570", pattern=r"^[0-9]{3}$")
    # An exact driver release within the branch (e.g. 570.172.08), held with an APT pin; unset:
    # the branch's newest at build time.
    driver_version: str | None = Field(default=None, pattern=r"^[0-9]{3}\.[0-9]+(?:\.[0-9]+)?$")
    container_toolkit_version: str = Field(default="1.17.8-1", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+(?:~rc\.[0-9]+)?-[0-9]+$")
    fabric_manager: bool = True  # NVSwitch nodes (p4d, p5, p6) need it; it idles elsewhere

    @model_validator(mode="after")
    def _version_in_branch(self) -> NvidiaSettings:
        if self.driver_version is not None and not self.driver_version.startswith(self.driver_branch + "."):
            raise ValueError(f"driver_version {self.driver_version} is not of driver_branch {self.driver_branch}")
        return self


class RootVolumes(StrictModel):
    """The images' root volume in GiB: what a host gets at least, and room for pulled images."""

    cpu: int = Field(default=32, ge=8, le=16000)
    nvidia: int = Field(default=96, ge=8, le=16000)


class ImageSettings(StrictModel):
    """The estate's own images (components/image_pipeline.py): one per architecture and GPU kind
    its pools use, rebuilt on a schedule, followed by the launch templates through SSM."""

    build: bool = True  # false: no pipeline; every pool boots its runner_config.ami (the stock path)
    schedule: str = "cron(0 4 ? * SUN *)"  # Image Builder cron: a fresh build (OS updates, newest parent) weekly
    schedule_timezone: str = "Etc/UTC"
    parents: dict[ImageArchitecture, str] = Field(default_factory=lambda: dict(UBUNTU_PARENTS))
    build_instance_types: dict[ImageArchitecture, list[str]] = Field(default_factory=lambda: dict(DEFAULT_BUILD_INSTANCE_TYPES))
    root_volume_gb: RootVolumes = RootVolumes()
    container_images: list[ContainerImage] = Field(default_factory=list)  # pulled into every image (pools add their own)
    # Docker Engine from Docker's apt repository (docs.docker.com/engine/install/ubuntu).
    docker_version: str = Field(default="28.3.3", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    nvidia: NvidiaSettings = NvidiaSettings()
    kms_key: str | None = None  # the images' EBS key; default: the account's EBS default key (aws/ebs)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if not value.startswith("cron("):
            raise ValueError(f"{value!r}: Image Builder takes cron(minutes hours day-of-month month day-of-week year)")
        try:
            parse_schedule(value)
        except CronError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("parents")
    @classmethod
    def _parents(cls, value: dict[ImageArchitecture, str]) -> dict[ImageArchitecture, str]:
        for arch, parent in value.items():
            if not _PARENT_RE.match(parent):
                raise ValueError(f"{arch}: {parent!r} is neither ssm:/<parameter> nor an AMI id")
        return {**UBUNTU_PARENTS, **value}

    @field_validator("build_instance_types")
    @classmethod
    def _instance_types(cls, value: dict[ImageArchitecture, list[str]]) -> dict[ImageArchitecture, list[str]]:
        for arch, names in value.items():
            if not names:
                raise ValueError(f"{arch}: name at least one instance type")
            for name in names:
                itype = parse_instance_type(name)
                if itype is None:
                    raise ValueError(f"{arch}: {unknown_type_message(name)}")
                if {"x64": "x86_64"}.get(itype.architecture, itype.architecture) != arch:
                    raise ValueError(f"{arch}: {name} is an {itype.architecture} type")
        return {**DEFAULT_BUILD_INSTANCE_TYPES, **value}

    @field_validator("kms_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY_RE.match(value):
            raise ValueError(f"{value!r} is not a KMS key (key ARN, key id, alias/NAME or alias ARN)")
        return value


class WarmPoolSettings(StrictModel):
    """`runner-estate:warm_pools`: what all pools' stopped warm instances may hold together."""

    ebs_budget_gib: float | None = Field(default=None, ge=0)  # None: no budget (each pool's `maximum` only)


class StackConfig(StrictModel):
    # No fixed length: estate/config/names.py refuses an environment whose names would not fit.
    environment: str = Field(pattern=r"^[a-z][a-z0-9-]*[a-z0-9]$")
    region: str = Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    github: GitHubSettings
    secrets: SecretNames
    network: NetworkSettings = NetworkSettings()
    runner_configs: str = "runner_configs"
    runner_version: str = Field(default=DEFAULT_RUNNER_VERSION, pattern=r"^\d+\.\d+\.\d+$")
    runner_sha256: dict[Literal["x64", "arm64"], Annotated[str, AfterValidator(_sha256)]] = Field(default_factory=dict)
    log_retention_days: int = 30
    tags: dict[str, str] = Field(default_factory=dict)
    runner_groups: dict[str, RunnerGroupSettings] = Field(default_factory=dict)
    # The account-wide Spot service-linked role: true creates it, false never does, unset follows
    # the pools' upstream key (estate/derive/spot_role.py).
    create_service_linked_role_spot: bool | None = None
    alarms: AlarmSettings = AlarmSettings()
    budget: BudgetSettings | None = None
    images: ImageSettings = ImageSettings()
    warm_pools: WarmPoolSettings = WarmPoolSettings()

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in _LOG_RETENTION_DAYS:
            raise ValueError(f"{value} is not a CloudWatch retention; pick one of {', '.join(map(str, _LOG_RETENTION_DAYS))}")
        return value

    def runner_checksum(self, arch: str) -> str | None:
        """The runner release's SHA-256 for `arch` (x64, arm64): the stack's, else GitHub's
        published digest of the default version; None when neither is known."""
        configured: dict[str, str] = {str(k): v for k, v in self.runner_sha256.items()}
        return configured.get(arch) or KNOWN_RUNNER_SHA256.get(self.runner_version, {}).get(arch)


def is_text_setting(field: str) -> bool:
    """Whether a stack setting is a plain string; the others arrive as JSON in Pulumi config."""
    info = StackConfig.model_fields.get(field)
    return info is not None and info.annotation is str


def stack_warnings(stack: StackConfig, file: str) -> list[ConfigWarning]:
    """What the stack accepts but should not leave as it is."""
    found = []
    if not stack.alarms.notifies_anyone:
        message = "alarms notify nobody: give emails, an https_endpoint or an existing topic_arn (the topic is created either way)"
        found.append(ConfigWarning(file, None, f"{NAMESPACE}:alarms", message))
    if stack.budget is None:
        message = "no budget: set monthly_usd to get an AWS Budget and the spend-rate alarm (docs/observability.md)"
        found.append(ConfigWarning(file, None, f"{NAMESPACE}:budget", message))
    return found


def parse_stack_config(raw: Mapping[str, Any], file: str) -> StackConfig:
    """Validate the stack's settings; `raw` maps field names (no namespace) to values."""
    try:
        stack = StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        key, message = first_problem(exc, StackConfig)
        if key == "region":
            key = "aws:region"
        elif key:
            key = f"{NAMESPACE}:{key}"
        raise ConfigError(file, None, key or None, message) from exc
    # CloudWatch alarms notify SNS topics of their own region only.
    found = _TOPIC_ARN_RE.match(stack.alarms.topic_arn or "")
    if found is not None and found["region"] != stack.region:
        message = f"the topic is in {found['region']}, but the stack's alarms are in {stack.region} and notify topics of their region only"
        raise ConfigError(file, None, f"{NAMESPACE}:alarms.topic_arn", message)
    return stack


def other_stack_environments(project_dir: Path, stack: str) -> dict[str, str]:
    """`Pulumi.<name>.yaml` -> its `runner-estate:environment`, for the project's other stacks."""
    found: dict[str, str] = {}
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        if path.name == f"Pulumi.{stack}.yaml":
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # that stack's own preview reports its file
        config = data.get("config") if isinstance(data, dict) else None
        environment = config.get(f"{NAMESPACE}:environment") if isinstance(config, dict) else None
        if isinstance(environment, str):
            found[path.name] = environment
    return found


def check_unique_environment(project_dir: Path, stack: str, environment: str) -> None:
    """Two stacks of one project with one environment would build the same physical names (the
    ledger, queues, roles, parameters) in one account: the second deploy collides with the first,
    or in another account runs a second control plane for the same org. Refused."""
    clashes = [name for name, env in other_stack_environments(project_dir, stack).items() if env == environment]
    if clashes:
        message = (
            f"{environment!r} is also the environment of {', '.join(clashes)}: each stack needs its own "
            "(physical names, SSM parameters and tags are derived from it)"
        )
        raise ConfigError(f"Pulumi.{stack}.yaml", None, f"{NAMESPACE}:environment", message)
