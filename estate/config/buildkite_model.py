"""A Buildkite agent queue, described in runner_configs/ beside the GitHub pools and deployed as
one Elastic CI Stack for AWS per queue (components/buildkite_queue.py).

A queue file has one top-level key, `buildkite_queue`; the queue's name in the estate is the
file's stem, like a pool's.

The stack's stock image has no NVIDIA driver, so a queue of GPU instance types must name a
GPU-ready image built from it: the template's `ImageId` (an AMI id) or `ImageIdParameter` (an
SSM parameter holding one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator

from estate.config.diagnostics import ConfigError
from estate.config.strict_model import StrictModel
from lambda_src.core.instance_catalog import InstanceType, parse_instance_type

DEFAULT_STACK_VERSION = "v6.33.0"
# Agent tags the Elastic CI Stack sets itself (bk-install-elastic-stack.sh puts `queue=<BuildkiteQueue>`
# first): given again in BuildkiteAgentTags, the agent would carry the tag twice.
STACK_AGENT_TAGS = frozenset({"queue"})


class BuildkiteQueueSettings(StrictModel):
    queue: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")  # what pipeline steps target with `queue=...`
    instance_types: list[str] = Field(min_length=1, max_length=25)
    min_size: int = Field(default=0, ge=0)
    max_size: int = Field(ge=0)
    agents_per_instance: int = Field(default=1, ge=1)
    capacity: Literal["on-demand", "spot"] = "on-demand"
    scale_in_idle_seconds: int = Field(default=600, ge=60)
    terminate_after_job: bool = False
    root_volume_size_gb: int = Field(default=250, ge=10, le=16384)
    stack_version: str = Field(default=DEFAULT_STACK_VERSION, pattern=r"^v\d+\.\d+\.\d+$")
    cluster_uuid: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$")
    agent_tags: dict[str, str] = Field(default_factory=dict)
    # A GPU-ready image based on the stack's own AMI (the template's ImageId / ImageIdParameter).
    image_id: str | None = Field(default=None, pattern=r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
    image_id_parameter: str | None = Field(default=None, pattern=r"^/?[A-Za-z0-9_.\-/]{1,2047}$")

    @field_validator("agent_tags")
    @classmethod
    def _own_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key in STACK_AGENT_TAGS:
                raise ValueError(f"{key!r} is set by the stack itself from buildkite_queue.{key}: remove it from agent_tags")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> BuildkiteQueueSettings:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is larger than max_size {self.max_size}")
        if self.image_id is not None and self.image_id_parameter is not None:
            raise ValueError("give the image either as image_id or as image_id_parameter, not both")
        return self


class BuildkiteQueueFile(StrictModel):
    buildkite_queue: BuildkiteQueueSettings


@dataclass(frozen=True)
class BuildkiteQueue:
    name: str
    file: str
    settings: BuildkiteQueueSettings

    def check(self) -> None:
        types: list[InstanceType] = []
        for i, name in enumerate(self.settings.instance_types):
            itype = parse_instance_type(name)
            if itype is None:
                raise ConfigError(self.file, self.name, f"buildkite_queue.instance_types[{i}]", f"unknown EC2 instance type {name!r}")
            types.append(itype)
        if len({t.architecture for t in types}) > 1:
            raise ConfigError(
                self.file, self.name, "buildkite_queue.instance_types", "all types of a queue must share one CPU architecture"
            )
        gpu_types = [t.name for t in types if t.gpu_count > 0]
        if gpu_types and not self.has_own_image:
            raise ConfigError(
                self.file,
                self.name,
                "buildkite_queue.image_id",
                f"{gpu_types[0]} has GPUs but the stack's stock image has no NVIDIA driver:"
                " set image_id (an AMI) or image_id_parameter (an SSM parameter holding one) to a GPU-ready image built from it",
            )

    @property
    def has_own_image(self) -> bool:
        return self.settings.image_id is not None or self.settings.image_id_parameter is not None

    @property
    def architecture(self) -> str:
        itype = parse_instance_type(self.settings.instance_types[0])
        assert itype is not None  # checked
        return itype.architecture
