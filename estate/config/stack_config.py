"""The stack's own settings (Pulumi.<stack>.yaml, namespace `runner-estate:`), validated once."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from estate.config.diagnostics import ConfigError, first_problem
from estate.config.strict_model import StrictModel

NAMESPACE = "runner-estate"
DEFAULT_RUNNER_VERSION = "2.329.0"  # actions/runner release the hosts install unless a stack or the agent says otherwise
# Pulumi secrets (`pulumi config set --secret`), stored by ScalerFunctions as SSM SecureStrings
# under the names in `secrets`. They never enter StackConfig, so no report can print them.
SECRET_SETTINGS = ("github_app_key", "webhook_secret_value")
# Secrets needed only by some estates: the Buildkite agent token, when runner_configs/ has queues.
OPTIONAL_SECRET_SETTINGS = ("buildkite_agent_token",)


def _sha256(value: str) -> str:
    # It reaches the hosts' user-data: a digest and nothing else.
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", value):
        raise ValueError(f"{value!r} is not a SHA-256 digest (64 hexadecimal digits)")
    return value


_LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


class GitHubSettings(StrictModel):
    org: str = Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")
    app_id: int = Field(ge=1)
    installation_id: int | None = Field(default=None, ge=1)
    api_url: str = Field(default="https://api.github.com", pattern=r"^https://")


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


class StackConfig(StrictModel):
    environment: str = Field(pattern=r"^[a-z][a-z0-9-]{1,15}$")
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

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in _LOG_RETENTION_DAYS:
            raise ValueError(f"{value} is not a CloudWatch retention; pick one of {', '.join(map(str, _LOG_RETENTION_DAYS))}")
        return value


def is_text_setting(field: str) -> bool:
    """Whether a stack setting is a plain string; the others arrive as JSON in Pulumi config."""
    info = StackConfig.model_fields.get(field)
    return info is not None and info.annotation is str


def parse_stack_config(raw: Mapping[str, Any], file: str) -> StackConfig:
    """Validate the stack's settings; `raw` maps field names (no namespace) to values."""
    try:
        return StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        key, message = first_problem(exc)
        if key == "region":
            key = "aws:region"
        elif key:
            key = f"{NAMESPACE}:{key}"
        raise ConfigError(file, None, key or None, message) from exc
