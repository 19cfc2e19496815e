"""The runner pool file: terraform-aws-github-runner multi-runner YAML plus our `estate:` keys.

Upstream keys keep upstream names and shapes so a team's existing files load unchanged, and
take what Terraform converts for them (a quoted number, "true"; estate/config/upstream_types.py).
Everything else is strict (no silent coercion) and unknown keys are rejected; what we accept but
do not act on yet is listed in `estate.config.key_support` and reported by `validate`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, field_validator, model_validator

from estate.config.stack_config import ContainerImage
from estate.config.strict_model import StrictModel
from estate.config.upstream_types import TfBool, TfInt, TfStr
from lambda_src.core import cron
from lambda_src.core.cron import CronError
from lambda_src.core.job_isolation import USER_NAME_RE

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$")
_RESERVATION_RE = re.compile(r"^cr-[0-9a-f]{8,17}$")
_GROUP_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def check_user_name(name: str) -> str:
    """A plain, unprivileged user name: it reaches the host's root shell."""
    if not USER_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a user name: 1-28 of a-z, 0-9, _ and -, starting with a letter or _")
    if name == "root":
        raise ValueError("jobs never run as root: name an unprivileged user (estate.allow_job_sudo gives it sudo, explicitly)")
    return name


def check_group_name(name: str) -> str:
    if not _GROUP_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a group name: 1-32 of a-z, 0-9, _ and -, starting with a letter or _")
    return name


def _check_labels(labels: list[str]) -> list[str]:
    for label in labels:
        if not _LABEL_RE.match(label):
            raise ValueError(f"label {label!r} is not a valid runner label (letters, digits, . _ : / + -)")
    return labels


class MatcherConfig(StrictModel):
    labelMatchers: list[list[str]] = Field(min_length=1)
    exactMatch: TfBool = False
    priority: TfInt = Field(default=999, ge=0, le=999)

    @field_validator("labelMatchers")
    @classmethod
    def _matchers_are_labels(cls, value: list[list[str]]) -> list[list[str]]:
        for matcher in value:
            if not matcher:
                raise ValueError("a label matcher must list at least one label")
            _check_labels(matcher)
        return value


class MetadataOptions(StrictModel):
    instance_metadata_tags: Literal["enabled", "disabled"] = "enabled"
    http_endpoint: Literal["enabled", "disabled"] = "enabled"
    http_tokens: Literal["required", "optional"] = "required"
    http_put_response_hop_limit: TfInt = Field(default=1, ge=1, le=64)


class AmiSelection(StrictModel):
    owners: list[str] = Field(default_factory=lambda: ["amazon"], min_length=1)
    filter: dict[str, list[str]] = Field(default_factory=lambda: {"state": ["available"]})


class BlockDevice(StrictModel):
    device_name: str = "/dev/xvda"
    volume_size: TfInt = Field(default=30, ge=8, le=65536)
    volume_type: Literal["gp3", "gp2", "io1", "io2"] = "gp3"
    delete_on_termination: TfBool = True
    encrypted: TfBool = True
    iops: TfInt | None = Field(default=None, ge=100)
    throughput: TfInt | None = Field(default=None, ge=125)
    kms_key_id: str | None = None
    snapshot_id: str | None = None

    @field_validator("encrypted")
    @classmethod
    def _always_encrypted(cls, value: bool) -> bool:
        if not value:
            raise ValueError("unencrypted volumes are not allowed: runner disks are always encrypted")
        return value


def _parses(parse: Callable[[str], object], value: str) -> str:
    """A schedule checked at load, so a bad one never reaches the planners in the Lambda."""
    try:
        parse(value)
    except CronError as exc:
        raise ValueError(str(exc)) from exc
    return value


def _check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from exc
    return value


class IdleWindow(StrictModel):
    """`idle_config`: while `cron` matches, scale-down keeps `idleCount` idle runners."""

    cron: str
    timeZone: str = "UTC"
    idleCount: TfInt = Field(ge=0)
    evictionStrategy: Literal["oldest_first", "newest_first"] = "oldest_first"

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        return _parses(cron.parse, value)

    @field_validator("timeZone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_time_zone(value)


class LogFile(StrictModel):
    log_group_name: str = Field(pattern=r"^[A-Za-z0-9_./-]+$")
    prefix_log_group: TfBool = True
    file_path: str
    log_stream_name: str


class PoolSizeWindow(StrictModel):
    """`pool_config`: when the EventBridge schedule fires, top the pool up to `size` idle runners."""

    schedule_expression: str
    schedule_expression_timezone: str = "UTC"
    size: TfInt = Field(ge=0)

    @field_validator("schedule_expression")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        return _parses(cron.parse_schedule, value)

    @field_validator("schedule_expression_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_time_zone(value)


class RunnerConfig(StrictModel):
    """`runner_config`: upstream's keys with upstream's defaults."""

    runner_os: Literal["linux", "windows"]
    runner_architecture: Literal["x64", "arm64"]
    instance_types: list[str] = Field(min_length=1)
    runners_maximum_count: TfInt = Field(ge=0)
    runner_extra_labels: list[str] = Field(default_factory=list)
    runner_name_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$", max_length=45)
    # The job user's name reaches a root shell on the host: a plain user name, never root.
    runner_run_as: Annotated[str, AfterValidator(check_user_name)] = "ec2-user"
    runner_as_root: TfBool = False
    runner_group_name: str = "Default"
    runner_metadata_options: MetadataOptions = MetadataOptions()
    userdata_template: str | None = None
    userdata_pre_install: str = ""
    userdata_post_install: str = ""
    enable_userdata: TfBool = True
    enable_organization_runners: TfBool = False
    enable_ephemeral_runners: TfBool = False
    enable_jit_config: TfBool | None = None
    enable_job_queued_check: TfBool | None = None
    instance_target_capacity_type: Literal["spot", "on-demand"] | None = None
    instance_allocation_strategy: Literal[
        "lowest-price", "diversified", "capacity-optimized", "capacity-optimized-prioritized", "price-capacity-optimized"
    ] = "lowest-price"
    instance_max_spot_price: TfStr | None = None
    enable_on_demand_failover_for_errors: list[str] = Field(default_factory=list)
    create_service_linked_role_spot: TfBool = False
    delay_webhook_event: TfInt = Field(default=30, ge=0, le=900)
    job_queue_retention_in_seconds: TfInt = Field(default=86400, ge=60)
    scale_down_schedule_expression: str = "cron(*/5 * * * ? *)"
    scale_up_reserved_concurrent_executions: TfInt = Field(default=1, ge=-1)
    minimum_running_time_in_minutes: TfInt | None = Field(default=None, ge=0)
    runner_boot_time_in_minutes: TfInt = Field(default=5, ge=1)
    idle_config: list[IdleWindow] = Field(default_factory=list)
    pool_config: list[PoolSizeWindow] = Field(default_factory=list)
    ami: AmiSelection = AmiSelection()
    ami_owners: list[str] | None = None
    ami_filter: dict[str, list[str]] | None = None
    ami_id_ssm_parameter_name: str | None = None
    ami_kms_key_arn: str = ""
    block_device_mappings: list[BlockDevice] = Field(default_factory=lambda: [BlockDevice()], min_length=1)
    ebs_optimized: TfBool = False
    credit_specification: Literal["standard", "unlimited"] | None = None
    enable_ssm_on_runners: TfBool = False
    enable_cloudwatch_agent: TfBool = True
    cloudwatch_config: str | None = None
    runner_log_files: list[LogFile] | None = None
    enable_runner_detailed_monitoring: TfBool = False
    enable_runner_binaries_syncer: TfBool = True
    disable_runner_autoupdate: TfBool = False
    runner_ec2_tags: dict[str, str] = Field(default_factory=dict)
    runner_iam_role_managed_policy_arns: list[str] = Field(default_factory=list)
    runner_additional_security_group_ids: list[str] = Field(default_factory=list)
    pool_runner_owner: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _upstream_spellings(cls, data: Any) -> Any:
        # Upstream once took labels as one comma-separated string; accept both forms.
        if isinstance(data, dict) and isinstance(data.get("runner_extra_labels"), str):
            data = {**data, "runner_extra_labels": [s.strip() for s in data["runner_extra_labels"].split(",") if s.strip()]}
        return data

    @field_validator("runner_extra_labels")
    @classmethod
    def _labels_are_labels(cls, value: list[str]) -> list[str]:
        return _check_labels(value)

    @model_validator(mode="after")
    def _one_ami_spelling(self) -> RunnerConfig:
        if (self.ami_owners is not None or self.ami_filter is not None) and "ami" in self.model_fields_set:
            raise ValueError("give the AMI either as `ami: {owners, filter}` or as the older `ami_owners`/`ami_filter`, not both")
        return self

    @property
    def ami_selection(self) -> AmiSelection:
        """The AMI query, whichever upstream spelling the file used."""
        if self.ami_owners is None and self.ami_filter is None:
            return self.ami
        return AmiSelection(owners=self.ami_owners or AmiSelection().owners, filter=self.ami_filter or AmiSelection().filter)


class CapacityBlockSettings(StrictModel):
    """Where a capacity-block pool's nodes run: reservations we hold, or (explicitly) one to buy."""

    reservation_ids: list[str] = Field(default_factory=list)
    purchase: bool = False
    max_price_usd: float | None = Field(default=None, gt=0)
    duration_hours: int | None = Field(default=None, ge=24, le=4368)
    instance_count: int = Field(default=1, ge=1, le=64)
    # The longest job the pool runs (GitHub's default timeout-minutes is 360): a block stops
    # taking jobs this long (plus a margin) before EC2 starts terminating its nodes.
    job_timeout_minutes: int = Field(default=360, ge=1, le=7200)
    renew: bool = False  # buy the next block when demand persists; needs max_price_usd and duration_hours
    efa: bool = False  # give nodes an Elastic Fabric Adapter (multi-node NCCL jobs)

    @field_validator("reservation_ids")
    @classmethod
    def _reservation_ids(cls, value: list[str]) -> list[str]:
        for rid in value:
            if not _RESERVATION_RE.match(rid):
                raise ValueError(f"{rid!r} is not a capacity reservation id (cr-...)")
        return value

    @model_validator(mode="after")
    def _source_of_capacity(self) -> CapacityBlockSettings:
        if self.purchase or self.renew:
            if self.max_price_usd is None or self.duration_hours is None:
                raise ValueError(f"{'purchase' if self.purchase else 'renew'}: true needs max_price_usd and duration_hours")
            if self.duration_hours % 24:
                raise ValueError("duration_hours must be whole days (a multiple of 24)")
        if not self.purchase and not self.reservation_ids:
            raise ValueError("give reservation_ids of blocks you hold, or purchase: true with a price limit")
        return self


DEFAULT_WAIT_ALARM_MINUTES = 20


class HardLimits(StrictModel):
    """Ceilings no planner may cross, whatever the queue says."""

    max_instances: int | None = Field(default=None, ge=0)
    max_hourly_usd: float | None = Field(default=None, gt=0)


class ReuseHosts(StrictModel):
    """Opt-in: a host whose runner finished a job may run another one-job runner, with a fresh
    JIT registration, when a job is already waiting for the pool."""

    max_jobs: int = Field(ge=2, le=100)  # jobs one host runs, one after another, at most


class WarmPoolWindow(StrictModel):
    """`warm_pool.windows`: while `cron` matches (as `idle_config`'s), keep `size` warm instances."""

    cron: str
    time_zone: str = "UTC"
    size: int = Field(ge=0, le=100)

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        return _parses(cron.parse, value)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_time_zone(value)


class WarmPool(StrictModel):
    """Stopped warm instances of the pool's baked image (issue 20.2; lambda_src/core/warm_pools.py).
    `adaptive` (the default for a pool booting a baked image) sizes them from the pool's own
    launches at this weekday and time over the last `weeks`; `scheduled` from `windows`."""

    mode: Literal["adaptive", "scheduled", "off"] = "adaptive"
    maximum: int = Field(default=4, ge=0, le=100)
    windows: list[WarmPoolWindow] = Field(default_factory=list)
    lookahead_minutes: int = Field(default=10, ge=5, le=120)
    weeks: int = Field(default=4, ge=1, le=8)
    percentile: float = Field(default=0.9, gt=0.0, le=1.0)
    max_age_hours: int = Field(default=168, ge=1, le=720)

    @model_validator(mode="after")
    def _windows_when_scheduled(self) -> WarmPool:
        if self.mode == "scheduled" and not self.windows:
            raise ValueError("mode scheduled needs windows: [{cron, time_zone, size}]")
        if self.mode != "scheduled" and self.windows:
            raise ValueError(f"windows size a scheduled warm pool; this one is {self.mode}")
        return self


# The images the estate builds (components/image_pipeline.py): one per architecture and GPU kind,
# named `<cpu|nvidia>-<x86_64|arm64>`.
IMAGE_FAMILIES = ("cpu-x86_64", "cpu-arm64", "nvidia-x86_64", "nvidia-arm64")
# EBS's Provisioned Rate for Volume Initialization, MiB/s (botocore ec2
# LaunchTemplateEbsBlockDeviceRequest.VolumeInitializationRate: "Valid range: 100 - 300").
VOLUME_INITIALIZATION_RATES = (100, 300)


class ImageChoice(StrictModel):
    """What the pool's hosts boot: the estate's baked image of a family (the default, its
    family following the pool's architecture and GPUs), or `source: ami`, the image
    `runner_config.ami` selects (the stock path: runner downloaded at boot)."""

    source: Literal["baked", "ami"] = "baked"
    family: str | None = None
    container_images: list[ContainerImage] = Field(default_factory=list)  # pulled into the family's image

    @field_validator("family")
    @classmethod
    def _family(cls, value: str | None) -> str | None:
        if value is not None and value not in IMAGE_FAMILIES:
            raise ValueError(f"{value!r} is not an image family; the estate builds {', '.join(IMAGE_FAMILIES)}")
        return value

    @model_validator(mode="after")
    def _baked_only(self) -> ImageChoice:
        if self.source == "ami" and (self.family is not None or self.container_images):
            raise ValueError("family and container_images choose a baked image; source: ami boots runner_config.ami as it is")
        return self


def _initialization_rate(value: int | None) -> int | None:
    low, high = VOLUME_INITIALIZATION_RATES
    if value is not None and value != 0 and not low <= value <= high:
        raise ValueError(f"{value} MiB/s: EBS initializes volumes at {low}-{high} MiB/s (0 leaves it to EBS's default)")
    return value


class EstateSettings(StrictModel):
    """Our extension keys, kept under their own top-level key so upstream tools ignore them."""

    runner_group: str | None = Field(default=None, min_length=1, max_length=100)
    gpu_slots: str | None = None
    capacity_block: CapacityBlockSettings | None = None
    hard_limits: HardLimits = HardLimits()
    allow_public_repositories: bool = False
    allow_imdsv1: bool = False
    reuse_hosts: ReuseHosts | None = None
    # How long a host may live at most, in minutes: past it, it is drained and terminated whatever
    # it is doing. Default: just over the longest the pool's jobs may take (estate/config/pool.py).
    max_lifetime_minutes: int | None = Field(default=None, ge=15, le=7 * 24 * 60)
    # Explicit, reported opt-outs for what no rule here can check: managed policies (other than
    # those refused outright) and security groups given only by id.
    allow_unchecked_managed_policies: bool = False
    allow_unchecked_security_groups: bool = False
    # Jobs run as an unprivileged user; these two are explicit opt-outs, reported by `validate`.
    allow_job_sudo: bool = False
    job_groups: list[Annotated[str, AfterValidator(check_group_name)]] = Field(default_factory=list)
    # Alarm `runner-estate-<env>-<pool>-jobs-waiting` fires when a job of the pool has waited this
    # long (a day at most: GitHub fails a job no runner takes within 24 hours).
    wait_alarm_minutes: int = Field(default=DEFAULT_WAIT_ALARM_MINUTES, ge=1, le=1440)
    image: ImageChoice = ImageChoice()
    # MiB/s at which EBS loads the snapshot-backed disks of a host (its image's root): unset, the
    # maximum on a baked image's root; 0, EBS's default lazy loading.
    volume_initialization_rate: Annotated[int | None, AfterValidator(_initialization_rate)] = None
    # Stopped warm instances; unset: adaptive where the pool boots a baked image, off otherwise.
    warm_pool: WarmPool | None = None


class RedriveSettings(StrictModel):
    enabled: TfBool
    maxReceiveCount: TfInt | None = Field(default=None, ge=1)


class PoolFile(StrictModel):
    """One runner pool: the whole YAML file."""

    matcherConfig: MatcherConfig
    runner_config: RunnerConfig
    fifo: TfBool = False
    redrive_build_queue: RedriveSettings | None = None
    estate: EstateSettings = EstateSettings()
