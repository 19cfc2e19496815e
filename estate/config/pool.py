"""A validated runner pool: the parsed file plus every fact derived from it, computed once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

from pydantic import BaseModel

from estate.config.diagnostics import ConfigError, ConfigWarning
from estate.config.key_support import MATCHING_VALUES, UNACTED_KEYS
from estate.config.pool_model import LogFile, PoolFile, RunnerConfig, WarmPool
from estate.config.prices import PriceError, PriceTable
from lambda_src.core.gpu_slots import LayoutError, SlotLayout, parse_layout, whole_node
from lambda_src.core.instance_catalog import GPU_MODELS, GpuModel, InstanceType, parse_instance_type, unknown_type_message
from lambda_src.core.routing import Admission, PoolRoute, normalise
from lambda_src.core.warm_pools import WarmSettings, WarmWindow
from policy.rules import IMDSV1_OPT_OUT_TAG, managed_policy_finding

G = TypeVar("G")  # a security group id: a string, or a deploy-time output of one

POOL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# Membership in any of these makes a job root on its host, or lets it read what root logs.
PRIVILEGED_GROUPS = frozenset({"root", "sudo", "admin", "wheel", "adm", "docker", "lxd", "libvirt", "disk", "shadow", "systemd-journal"})
_SM_RE = re.compile(r"^sm\d+$")
_GPU_COUNT_RE = re.compile(r"^\d+gpu$")
_GPU_WORDS = {"gpu", "nvidia", "cuda"} | set(GPU_MODELS) | {m.architecture for m in GPU_MODELS.values()}
_POLICY_ARN_RE = re.compile(r"^arn:aws(?:-cn|-us-gov)?:iam::(?:aws|\d{12}):policy/[\w+=,.@/-]+$")
_SECURITY_GROUP_RE = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
GITHUB_JOB_TIMEOUT_MINUTES = 360  # a job's default `timeout-minutes`
# Past the longest job, before a host is retired by its lifetime: the job's set-up and the runner's exit.
LIFETIME_MARGIN_MINUTES = 15


def is_gpu_label(label: str) -> bool:
    return label in _GPU_WORDS or bool(_SM_RE.match(label) or _GPU_COUNT_RE.match(label))


def _gpu_fact(model: GpuModel, label: str) -> str | None:
    """The fact a GPU label claims about the model, if it claims one."""
    if label in GPU_MODELS:
        return model.label
    if _SM_RE.match(label):
        return model.sm
    if label in {m.architecture for m in GPU_MODELS.values()}:
        return model.architecture
    return None


def _set_fields(model: BaseModel) -> list[str]:
    """Fields the file gave explicitly (not defaults), in declaration order."""
    return [k for k in type(model).model_fields if k in model.model_fields_set]


@dataclass(frozen=True)
class Pool:
    name: str
    file: str
    spec: PoolFile
    # `simulate` only: leave out (with a warning) types EC2 does not know, as a fleet request
    # would, instead of refusing the pool. Everywhere else an unknown type is an error.
    drop_unknown_types: bool = False

    # ---- derived facts -------------------------------------------------------------
    @property
    def runner(self) -> RunnerConfig:
        return self.spec.runner_config

    @cached_property
    def instance_types(self) -> tuple[InstanceType, ...]:
        found, unknown = [], []
        for i, name in enumerate(self.runner.instance_types):
            itype = parse_instance_type(name)
            if itype is None:
                unknown.append((i, name))
            else:
                found.append(itype)
        if unknown and (not self.drop_unknown_types or not found):
            i, name = unknown[0]
            raise self.error(f"runner_config.instance_types[{i}]", unknown_type_message(name))
        return tuple(found)

    @property
    def dropped_type_warnings(self) -> list[ConfigWarning]:
        """With drop_unknown_types: one warning per type left out."""
        if not self.drop_unknown_types:
            return []
        return [
            self.warning(f"runner_config.instance_types[{i}]", unknown_type_message(name) + " -- left out of the simulation")
            for i, name in enumerate(self.runner.instance_types)
            if parse_instance_type(name) is None
        ]

    @property
    def capacity_type(self) -> str:
        if self.spec.estate.capacity_block is not None:
            return "capacity-block"
        return self.runner.instance_target_capacity_type or "spot"

    @property
    def gpus_per_node(self) -> int:
        return min(t.gpu_count for t in self.instance_types)

    @property
    def gpu_model(self) -> GpuModel | None:
        return self.instance_types[0].gpu_model

    @cached_property
    def slot_layout(self) -> SlotLayout | None:
        """How a node is split into runners; None for a one-runner-per-instance pool."""
        text = self.spec.estate.gpu_slots
        if text is not None:
            try:
                return parse_layout(text)
            except LayoutError as exc:
                raise self.error("estate.gpu_slots", str(exc)) from exc
        if self.capacity_type == "capacity-block" and self.gpus_per_node:
            return whole_node(self.gpus_per_node)
        return None

    @property
    def gpu_labels(self) -> tuple[str, ...]:
        """The GPU model and compute capability a slotted node's runners add: ("h100", "sm90")."""
        model = self.gpu_model
        return (model.label, model.sm) if model is not None else ()

    @property
    def base_labels(self) -> tuple[str, ...]:
        """Labels every runner of the pool carries, in GitHub's order."""
        extra = [label.lower() for label in self.runner.runner_extra_labels]
        return tuple(dict.fromkeys(["self-hosted", self.runner.runner_os, self.runner.runner_architecture, *extra]))

    @property
    def runner_label_sets(self) -> tuple[frozenset[str], ...]:
        """One label set per kind of runner: per slot size on a slotted node, else one."""
        base = normalise(self.base_labels)
        if self.slot_layout is None:
            return (base,)
        return tuple(base | set(self.gpu_labels) | {label} for label in self.slot_layout.size_labels)

    @property
    def runner_group(self) -> str:
        return self.spec.estate.runner_group or self.runner.runner_group_name

    @property
    def log_files(self) -> list[LogFile]:
        """Files the CloudWatch agent ships; the system log and the runner's own by default."""
        if self.runner.runner_log_files is not None:
            return self.runner.runner_log_files
        return [
            LogFile(log_group_name="syslog", file_path="/var/log/syslog", log_stream_name="{instance_id}"),
            LogFile(log_group_name="runner", file_path="/var/log/runner-estate/runner.log", log_stream_name="{instance_id}"),
        ]

    def log_group_name(self, environment: str, log: LogFile) -> str:
        return f"/runner-estate/{environment}/{self.name}/{log.log_group_name}" if log.prefix_log_group else log.log_group_name

    @property
    def image_architecture(self) -> str:
        """The CPU architecture as EC2 and Image Builder name it: x86_64 or arm64."""
        return "x86_64" if self.runner.runner_architecture == "x64" else "arm64"

    @property
    def accelerator(self) -> str:
        """`nvidia` when the pool's instances have NVIDIA GPUs (its image needs the driver), else `cpu`."""
        return "nvidia" if any(t.gpu_model is not None for t in self.instance_types) else "cpu"

    @property
    def image_family(self) -> str | None:
        """The baked image family the pool asks for (`estate.image`; by default its architecture
        and GPU kind), or None for `source: ami`. Whether the stack builds images is the stack's
        to say: estate/derive/images.py decides what hosts really boot."""
        choice = self.spec.estate.image
        if choice.source == "ami":
            return None
        return choice.family or f"{self.accelerator}-{self.image_architecture}"

    @property
    def names_its_ami(self) -> bool:
        """Whether the file selects an AMI itself (any of upstream's spellings)."""
        rc = self.runner
        return bool({"ami", "ami_owners", "ami_filter"} & rc.model_fields_set)

    @property
    def imdsv2_required(self) -> bool:
        """IMDSv2 unless the pool opted out explicitly with our own key."""
        return not self.spec.estate.allow_imdsv1

    @property
    def opt_out_tags(self) -> dict[str, str]:
        """Tags of the pool's launch template that tell the policy pack an opt-out is explicit."""
        return {IMDSV1_OPT_OUT_TAG: "true"} if self.spec.estate.allow_imdsv1 else {}

    def runner_security_groups(self, estate_group: G) -> list[G | str]:
        """The groups every host of the pool joins, however it is launched (the launch template,
        a warm instance's or a capacity-block node's own network interface): the estate's runner
        group, then the opted-in extra groups."""
        return [estate_group, *self.runner.runner_additional_security_group_ids]

    @property
    def max_runners(self) -> int:
        """`runners_maximum_count`, lowered by `estate.hard_limits.max_instances`; 0 drains the pool."""
        cap, limit = self.runner.runners_maximum_count, self.spec.estate.hard_limits.max_instances
        return cap if limit is None else min(cap, limit)

    @property
    def job_timeout_minutes(self) -> int:
        """The longest job the pool runs: `capacity_block.job_timeout_minutes`, else GitHub's
        default job timeout (a job's `timeout-minutes` may be lower, never higher for us)."""
        block = self.spec.estate.capacity_block
        return block.job_timeout_minutes if block is not None else GITHUB_JOB_TIMEOUT_MINUTES

    @property
    def max_lifetime_minutes(self) -> int | None:
        """How long one host may live (None: capacity-block nodes live for their block):
        `estate.max_lifetime_minutes`, else just over the longest its jobs may take — its boot,
        each job it may run (one, or `reuse_hosts.max_jobs`) at the pool's job timeout, and a
        margin for the job's own set-up and the runner's exit."""
        if self.capacity_type == "capacity-block":
            return None
        explicit = self.spec.estate.max_lifetime_minutes
        if explicit is not None:
            return explicit
        reuse = self.spec.estate.reuse_hosts
        jobs = reuse.max_jobs if reuse is not None else 1
        return self.runner.runner_boot_time_in_minutes + jobs * self.job_timeout_minutes + LIFETIME_MARGIN_MINUTES

    @property
    def warm_settings(self) -> WarmSettings:
        """The pool's stopped warm pool as the control plane sizes it: `estate.warm_pool`, else
        adaptive for an on-demand pool booting a baked image. Off by default for a spot pool
        (a warm instance is on-demand, so each warm start would run a spot job at on-demand
        price: bench/time_to_start_bench.py), a stock image or capacity blocks."""
        chosen = self.spec.estate.warm_pool
        baked = self.spec.estate.image.source == "baked"
        if chosen is None:
            chosen = WarmPool(mode="adaptive" if baked and self.capacity_type == "on-demand" else "off")
        return WarmSettings(
            mode=chosen.mode,
            maximum=chosen.maximum,
            windows=tuple(WarmWindow(w.cron, w.time_zone, w.size) for w in chosen.windows),
            lookahead_s=60 * chosen.lookahead_minutes,
            weeks=chosen.weeks,
            percentile=chosen.percentile,
            max_age_s=3600 * chosen.max_age_hours,
            volume_gib=float(sum(d.volume_size for d in self.runner.block_device_mappings)),
        )

    @property
    def runner_hourly_usd(self) -> float | None:
        """The cheapest runner-hour the pool offers (a slot's share of a node); None without a price."""
        prices, known = PriceTable(), []
        for itype in self.instance_types:
            try:
                known.append(prices.hourly(itype.name, self.capacity_type))
            except PriceError:
                continue  # a type without a list price does not make the pool's other types unknown
        runners = self.slot_layout.slot_count if self.slot_layout is not None else 1
        return min(known) / max(1, runners) if known else None

    def route(self, admission: Admission | None = None) -> PoolRoute:
        """The pool's routing entry; `admission` is its runner group's policy where the stack
        is known, else only its own `allow_public_repositories` applies."""
        m = self.spec.matcherConfig
        public = self.spec.estate.allow_public_repositories
        return PoolRoute(
            pool=self.name,
            exact_match=m.exactMatch,
            priority=m.priority,
            capacity_type=self.capacity_type,
            label_matchers=tuple(normalise(s) for s in m.labelMatchers),
            runner_label_sets=self.runner_label_sets,
            max_runners=self.max_runners,
            hourly_usd=self.runner_hourly_usd,
            admission=admission or Admission(self.runner_group, None, (), public),
        )

    # ---- checks --------------------------------------------------------------------
    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.file, self.name, key, message)

    def warning(self, key: str | None, message: str) -> ConfigWarning:
        return ConfigWarning(self.file, self.name, key, message)

    def _type_key(self, itype: InstanceType) -> str:
        """The key naming `itype` in the file (its index counts any type left out)."""
        return f"runner_config.instance_types[{self.runner.instance_types.index(itype.name)}]"

    def check(self) -> list[ConfigWarning]:
        """Raise the first ConfigError in the pool's facts; return what is worth a warning."""
        rc = self.runner
        if rc.runner_os != "linux":
            raise self.error("runner_config.runner_os", "only linux runners are supported")
        for itype in self.instance_types:
            if itype.architecture != rc.runner_architecture:
                raise self.error(
                    self._type_key(itype),
                    f"{itype.name} is an {itype.architecture} type but runner_architecture is {rc.runner_architecture}",
                )
        self._check_gpu_labels()
        image_warnings = self._check_image()
        self._check_capacity_block()
        self._check_lifetime()
        warm_warnings = self._check_warm_pool()
        self._check_hourly_limit()
        warnings = self._check_slots() + warm_warnings
        self._check_matchers()
        warnings += self._check_managed_policies() + self._check_security_groups()
        return self.dropped_type_warnings + warnings + image_warnings + self._unacted_warnings() + self._security_warnings()

    def _check_warm_pool(self) -> list[ConfigWarning]:
        """A warm instance is a stopped on-demand host of the pool's baked image: none for
        capacity blocks (nodes live for their block) or a stock image (it would download at
        every start); in a spot pool, allowed when asked for, with what it costs said."""
        chosen = self.spec.estate.warm_pool
        if chosen is None or chosen.mode == "off":
            return []
        if self.capacity_type == "capacity-block":
            raise self.error("estate.warm_pool", "a capacity-block pool has no warm pool: its nodes live for their block")
        if self.spec.estate.image.source != "baked":
            raise self.error("estate.warm_pool", "warm instances boot the pool's baked image; this pool has image.source: ami")
        if self.capacity_type == "spot":
            return [
                self.warning(
                    "estate.warm_pool",
                    "warm instances are on-demand (a stopped spot instance cannot be started again):"
                    " each job a warm start serves runs at the on-demand price, not spot",
                )
            ]
        return []

    def _check_managed_policies(self) -> list[ConfigWarning]:
        """The same verdict as the policy pack (policy.rules.managed_policy_finding): refused
        outright, or attached only with the explicit opt-out, which is reported."""
        key, opted_out = "runner_config.runner_iam_role_managed_policy_arns", self.spec.estate.allow_unchecked_managed_policies
        for i, arn in enumerate(self.runner.runner_iam_role_managed_policy_arns):
            if not _POLICY_ARN_RE.match(arn):
                raise self.error(f"{key}[{i}]", f"{arn!r} is not an IAM policy ARN (arn:aws:iam::ACCOUNT|aws:policy/NAME)")
            refused, why = managed_policy_finding(arn)
            if refused:
                raise self.error(f"{key}[{i}]", f"refused: {why}")
            if not opted_out:
                raise self.error(f"{key}[{i}]", f"{why}: set estate.allow_unchecked_managed_policies: true to attach it anyway")
        if opted_out and self.runner.runner_iam_role_managed_policy_arns:
            arns = ", ".join(self.runner.runner_iam_role_managed_policy_arns)
            return [self.warning("estate.allow_unchecked_managed_policies", f"security opt-out: every job of this pool holds {arns}")]
        return []

    def _check_security_groups(self) -> list[ConfigWarning]:
        """Groups given by id are not created here, so nothing can check that they admit nothing
        in (the rule every group of ours passes): attached only with the explicit opt-out."""
        key, opted_out = "runner_config.runner_additional_security_group_ids", self.spec.estate.allow_unchecked_security_groups
        for i, gid in enumerate(self.runner.runner_additional_security_group_ids):
            if not _SECURITY_GROUP_RE.match(gid):
                raise self.error(f"{key}[{i}]", f"{gid!r} is not a security group id (sg-...)")
            if not opted_out:
                raise self.error(
                    f"{key}[{i}]",
                    f"{gid} is not created by this program, so nothing checks that it admits no inbound traffic:"
                    " set estate.allow_unchecked_security_groups: true to attach it anyway",
                )
        if opted_out and self.runner.runner_additional_security_group_ids:
            ids = ", ".join(self.runner.runner_additional_security_group_ids)
            return [
                self.warning(
                    "estate.allow_unchecked_security_groups",
                    f"security opt-out: hosts of this pool join {ids}, whose inbound rules nothing here checks",
                )
            ]
        return []

    def _check_gpu_labels(self) -> None:
        labelled = [(f"runner_config.runner_extra_labels[{i}]", label.lower()) for i, label in enumerate(self.runner.runner_extra_labels)]
        for i, matcher in enumerate(self.spec.matcherConfig.labelMatchers):
            labelled += [(f"matcherConfig.labelMatchers[{i}]", label.lower()) for label in matcher]
        gpu_labelled = [(key, label) for key, label in labelled if is_gpu_label(label)]
        no_gpu = [t.name for t in self.instance_types if t.gpu_model is None]
        if gpu_labelled and no_gpu:
            key, label = gpu_labelled[0]
            raise self.error(key, f"GPU label {label!r} but instance type {no_gpu[0]} has no NVIDIA GPU")
        for key, label in gpu_labelled:
            for itype in self.instance_types:
                assert itype.gpu_model is not None  # every type has a GPU once any label is a GPU label
                claimed = _gpu_fact(itype.gpu_model, label)
                if claimed is not None and claimed != label:
                    raise self.error(
                        key, f"label {label!r} does not fit {itype.name}, whose GPU is {itype.gpu_model.label} ({itype.gpu_model.sm})"
                    )

    def _check_image(self) -> list[ConfigWarning]:
        """A family of the pool's architecture, with the NVIDIA driver where the pool has GPUs; a
        file's own AMI that a baked image replaces is said out loud."""
        family = self.image_family
        if family is None:
            return []
        accelerator, _, architecture = family.partition("-")
        if architecture != self.image_architecture:
            raise self.error(
                "estate.image.family", f"{family} is an {architecture} image but runner_architecture is {self.runner.runner_architecture}"
            )
        if self.accelerator == "nvidia" and accelerator != "nvidia":
            gpus = next(t.name for t in self.instance_types if t.gpu_model is not None)
            raise self.error("estate.image.family", f"{family} has no NVIDIA driver but {gpus} has GPUs: name nvidia-{architecture}")
        if not self.names_its_ami:
            return []
        key = next(k for k in ("ami", "ami_owners", "ami_filter") if k in self.runner.model_fields_set)
        return [
            self.warning(
                f"runner_config.{key}",
                f"not used while the stack builds images (runner-estate:images.build, the default): the pool boots the estate's"
                f" {family} image, with the runner, host programs, Docker{' and the NVIDIA driver' if accelerator == 'nvidia' else ''}"
                " preinstalled (docs/images.md); set estate.image: {source: ami} to boot this AMI instead",
            )
        ]

    def _check_capacity_block(self) -> None:
        if self.spec.estate.capacity_block is None:
            return
        if self.spec.estate.reuse_hosts is not None:
            raise self.error(
                "estate.reuse_hosts", "capacity-block nodes already refill their slots; reuse_hosts is for spot and on-demand pools"
            )
        if self.runner.instance_target_capacity_type == "spot":
            raise self.error("runner_config.instance_target_capacity_type", "a capacity-block pool cannot be spot")
        if len(self.instance_types) != 1:
            raise self.error(
                "runner_config.instance_types", "a capacity-block pool runs exactly one instance type (a block is bought per type)"
            )
        if self.instance_types[0].gpu_model is None:
            raise self.error("runner_config.instance_types[0]", f"{self.instance_types[0].name} is not a GPU type sold in capacity blocks")

    def _check_lifetime(self) -> None:
        explicit = self.spec.estate.max_lifetime_minutes
        if explicit is None:
            return
        if self.capacity_type == "capacity-block":
            raise self.error("estate.max_lifetime_minutes", "capacity-block nodes live for their block; the block's end drains them")
        boot = self.runner.runner_boot_time_in_minutes
        if explicit <= boot:
            raise self.error(
                "estate.max_lifetime_minutes",
                f"{explicit} minutes is no longer than the boot time ({boot}, runner_boot_time_in_minutes): no job could run",
            )

    def _check_hourly_limit(self) -> None:
        if self.spec.estate.hard_limits.max_hourly_usd is None:
            return
        if self.capacity_type == "capacity-block":
            raise self.error(
                "estate.hard_limits.max_hourly_usd", "a capacity block's cost is fixed when it is bought; use capacity_block.max_price_usd"
            )
        prices = PriceTable()
        for itype in self.instance_types:
            try:
                prices.hourly(itype.name, "on-demand")
            except PriceError as exc:
                raise self.error(self._type_key(itype), f"max_hourly_usd needs a price for every type: {exc}") from None

    def _check_slots(self) -> list[ConfigWarning]:
        layout = self.slot_layout
        if layout is None:
            return []
        if self.gpus_per_node == 0:
            raise self.error("estate.gpu_slots", "GPU slots on a pool whose instance types have no GPU")
        if self.capacity_type != "capacity-block":
            # Ordinary hosts run one runner each: a job asking for a slot size would never be taken.
            raise self.error("estate.gpu_slots", "GPU slots split capacity-block nodes only; an on-demand or spot host runs one runner")
        if layout.total_gpus > self.gpus_per_node:
            raise self.error(
                "estate.gpu_slots",
                f"layout {layout.spec()} needs {layout.total_gpus} GPUs but a node has {self.gpus_per_node}",
            )
        if layout.total_gpus < self.gpus_per_node:
            unused = self.gpus_per_node - layout.total_gpus
            return [
                self.warning(
                    "estate.gpu_slots", f"layout {layout.spec()} leaves {unused} of {self.gpus_per_node} paid GPUs per node unused"
                )
            ]
        return []

    def _check_matchers(self) -> None:
        matcher = self.spec.matcherConfig
        if not matcher.exactMatch:
            return
        for i, labels in enumerate(matcher.labelMatchers):
            wanted = normalise(labels)
            if not any(wanted <= s for s in self.runner_label_sets):
                closest = min(self.runner_label_sets, key=lambda s: len(wanted - s))
                raise self.error(
                    f"matcherConfig.labelMatchers[{i}]",
                    f"labels {', '.join(sorted(wanted - closest))} are not runner labels, so a job routed here could never be taken",
                )

    def _unacted_warnings(self) -> list[ConfigWarning]:
        sections = {
            "runner_config": self.runner,
            "estate": self.spec.estate,
            "estate.capacity_block": self.spec.estate.capacity_block,
            "estate.hard_limits": self.spec.estate.hard_limits,
        }
        set_keys = [k for k in _set_fields(self.spec) if k not in {"runner_config", "estate", "matcherConfig"}]
        for prefix, section in sections.items():
            if section is not None:
                set_keys += [f"{prefix}.{k}" for k in _set_fields(section)]
        by_reason: dict[str, list[str]] = {}
        for key in set_keys:
            if key in MATCHING_VALUES and self._value(key) == MATCHING_VALUES[key]:
                continue
            if key in UNACTED_KEYS:
                by_reason.setdefault(UNACTED_KEYS[key], []).append(key)
        return [self.warning(", ".join(keys), reason) for reason, keys in by_reason.items()]

    def _value(self, dotted: str) -> object:
        section, _, field = dotted.partition(".")
        owner = getattr(self.spec, section)
        return getattr(owner, field) if field else owner

    def _security_warnings(self) -> list[ConfigWarning]:
        found = []
        if not self.spec.matcherConfig.exactMatch:
            found.append(
                self.warning(
                    "matcherConfig.exactMatch",
                    "false is read as: serve a job whose labels are all runner labels of this pool"
                    " (upstream's 'any label overlaps' would route jobs no runner can take)",
                )
            )
        if self.runner.runner_metadata_options.http_tokens == "optional" and self.imdsv2_required:
            found.append(
                self.warning(
                    "runner_config.runner_metadata_options.http_tokens",
                    "'optional' is not honoured: IMDSv2 stays required; set estate.allow_imdsv1: true to opt out",
                )
            )
        if self.spec.estate.allow_imdsv1:
            found.append(self.warning("estate.allow_imdsv1", "security opt-out: instances of this pool accept IMDSv1"))
        found += self._job_user_warnings()
        if (reuse := self.spec.estate.reuse_hosts) is not None:
            found.append(
                self.warning(
                    "estate.reuse_hosts",
                    f"security opt-out: a host runs up to {reuse.max_jobs} jobs in turn (each on a fresh one-job runner);"
                    " what a job leaves on the host outside the runner's work folder meets the next job",
                )
            )
        return found

    def _job_user_warnings(self) -> list[ConfigWarning]:
        """Jobs run as an unprivileged user of their own; giving it root is said out loud."""
        root = "a job is root on its host: it can reach the instance role's credentials"
        if self.slot_layout is not None:
            root += " and every other slot's runner, config and job"
        elif self.spec.estate.reuse_hosts is not None:
            root += " and leave anything for the next job"
        found = []
        if self.spec.estate.allow_job_sudo:
            found.append(self.warning("estate.allow_job_sudo", f"security opt-out: jobs get passwordless sudo, so {root}"))
        privileged = [g for g in self.spec.estate.job_groups if g in PRIVILEGED_GROUPS]
        if privileged:
            found.append(self.warning("estate.job_groups", f"security opt-out: group {', '.join(privileged)} means {root}"))
        return found
