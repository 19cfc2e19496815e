"""What the estate's images are and which hosts boot them: one pure plan from the stack and the
pools, read by the image pipeline component, the launch templates, `doctor` and the simulator.

A pool boots one of two paths:
- **baked** (the default, when the stack builds images): the estate's image of the pool's
  family (`<cpu|nvidia>-<x86_64|arm64>`), which carries the runner install (checked against
  its release checksum and recorded in its manifest), the host programs, Docker and, for
  `nvidia` families, the driver and container toolkit, plus the container images the stack and
  the family's pools name. The launch template names the image as `resolve:ssm:<parameter>`,
  a parameter the image pipeline rewrites after every build, so each launch boots the newest.
- **stock**: the AMI `runner_config.ami` selects, as before: the user-data carries the host
  programs and the runner is downloaded at boot. A pool says `estate.image: {source: ami}`,
  or the stack says `images.build: false`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from estate.config.diagnostics import ConfigError, ConfigWarning
from estate.config.loader import Estate
from estate.config.pool import Pool
from estate.config.pool_model import VOLUME_INITIALIZATION_RATES
from estate.config.stack_config import NAMESPACE, StackConfig

# Canonical's Ubuntu images on EC2 boot from /dev/sda1; the recipe sizes that device.
IMAGE_ROOT_DEVICE = "/dev/sda1"
HOST_PROGRAMS_DIR = "/opt/runner-estate"  # where user-data unpacks them on the stock path, and images carry them
RUNNER_DIR = "/opt/actions-runner"  # the host programs' --runner-dir default
BUNDLE_STAMP = f"{HOST_PROGRAMS_DIR}/BUNDLE"  # the digest of the host programs an image carries
STACK_IMAGES_KEY = f"{NAMESPACE}:images"

BootPath = Literal["baked", "stock"]


def image_parameter(environment: str, family: str) -> str:
    """The SSM parameter (data type aws:ec2:image) that holds the family's newest image."""
    return f"/runner-estate/{environment}/images/{family}"


@dataclass(frozen=True)
class BootImage:
    """What one pool's hosts boot."""

    path: BootPath
    family: str | None = None  # baked only
    parameter: str | None = None  # baked only: the SSM parameter the launch template resolves

    @property
    def image_id(self) -> str | None:
        """The launch template's ImageId for a baked image (EC2 resolves it at each launch)."""
        return f"resolve:ssm:{self.parameter}" if self.parameter is not None else None

    @property
    def root_device(self) -> str | None:
        return IMAGE_ROOT_DEVICE if self.path == "baked" else None


STOCK = BootImage("stock")


def boot_image(stack: StackConfig, pool: Pool) -> BootImage:
    family = pool.image_family
    if family is None or not stack.images.build:
        return STOCK
    return BootImage("baked", family, image_parameter(stack.environment, family))


@dataclass(frozen=True)
class ImageFamily:
    """One image the pipeline builds."""

    name: str  # cpu-x86_64, nvidia-arm64, ...
    architecture: str  # x86_64 | arm64
    accelerator: str  # cpu | nvidia
    parent: str  # ssm:/<parameter> or ami-...
    parameter: str
    root_volume_gb: int
    runner_arch: str  # the runner release's name for the architecture: x64 | arm64
    runner_sha256: str
    container_images: tuple[str, ...]
    build_instance_types: tuple[str, ...]
    pools: tuple[str, ...] = field(default=())

    @property
    def gpu(self) -> bool:
        return self.accelerator == "nvidia"


@dataclass(frozen=True)
class ImagePlan:
    families: tuple[ImageFamily, ...]
    boot: dict[str, BootImage]  # by pool

    def family(self, name: str) -> ImageFamily:
        return next(f for f in self.families if f.name == name)

    def baked_pools(self) -> dict[str, str]:
        """Pool -> family, for the pools that boot a baked image (the simulator's boot path)."""
        return {pool: b.family for pool, b in self.boot.items() if b.family is not None}


def plan_images(stack: StackConfig, estate: Estate, stack_file: str) -> tuple[ImagePlan, list[ConfigWarning]]:
    """The families the pools use (none when the stack builds no images), each pool's boot
    image, and what is wrong with them: a runner release without a known checksum, a baked
    pool's root disk smaller than its image's."""
    boot = {pool.name: boot_image(stack, pool) for pool in estate.pools}
    families: list[ImageFamily] = []
    warnings: list[ConfigWarning] = []
    used = sorted({b.family for b in boot.values() if b.family is not None})
    for name in used:
        accelerator, _, architecture = name.partition("-")
        pools = [p for p in estate.pools if boot[p.name].family == name]
        runner_arch = "x64" if architecture == "x86_64" else "arm64"
        checksum = stack.runner_checksum(runner_arch)
        if checksum is None:
            message = (
                f"the {name} image pins runner {stack.runner_version} by its checksum: give the release's SHA-256"
                f" (https://github.com/actions/runner/releases/tag/v{stack.runner_version}), or set images.build: false"
            )
            raise ConfigError(stack_file, None, f"{NAMESPACE}:runner_sha256.{runner_arch}", message)
        extra = [image for p in pools for image in p.spec.estate.image.container_images]
        families.append(
            ImageFamily(
                name=name,
                architecture=architecture,
                accelerator=accelerator,
                parent=stack.images.parents[architecture],  # type: ignore[index]
                parameter=image_parameter(stack.environment, name),
                root_volume_gb=getattr(stack.images.root_volume_gb, accelerator),
                runner_arch=runner_arch,
                runner_sha256=checksum.lower(),
                container_images=tuple(dict.fromkeys([*stack.images.container_images, *extra])),
                build_instance_types=tuple(stack.images.build_instance_types[architecture]),  # type: ignore[index]
                pools=tuple(p.name for p in pools),
            )
        )
    plan = ImagePlan(tuple(families), boot)
    for pool in estate.pools:
        warnings += launch_disks(pool, plan.boot[pool.name], plan, None)[1]
    return plan, warnings


@dataclass(frozen=True)
class LaunchDisk:
    """One block device of a launch template, as RunnerFleet writes it."""

    device_name: str
    volume_size: int
    volume_type: str
    delete_on_termination: bool
    iops: int | None = None
    throughput: int | None = None
    kms_key_id: str | None = None
    snapshot_id: str | None = None
    initialization_rate: int | None = None  # MiB/s; only on disks made from a snapshot


def initialization_rate(pool: Pool, boot: BootImage) -> int | None:
    """`estate.volume_initialization_rate`: unset, the fastest EBS offers on a baked image's root
    (its blocks hold the runner, drivers and pulled images the first job reads); 0, none."""
    rate = pool.spec.estate.volume_initialization_rate
    if rate is None:
        return VOLUME_INITIALIZATION_RATES[1] if boot.path == "baked" else None
    return rate or None


def launch_disks(pool: Pool, boot: BootImage, plan: ImagePlan, root_device: str | None) -> tuple[list[LaunchDisk], list[ConfigWarning]]:
    """The pool's disks for its launch template. On a baked image the root is the image's
    device: a pool that names no disks gets it at the image's size (or upstream's default, if
    larger); a root disk smaller than the image's is refused (EC2 would refuse every launch).
    Disks made from a snapshot (the root, or a `snapshot_id`) get the initialization rate.
    `root_device`: the stock AMI's root device, where known (the launch template reads it)."""
    rc = pool.runner
    disks = list(rc.block_device_mappings)
    warnings: list[ConfigWarning] = []
    root = boot.root_device or root_device
    if boot.family is not None:
        size = plan.family(boot.family).root_volume_gb
        if "block_device_mappings" not in rc.model_fields_set:
            disks = [disks[0].model_copy(update={"device_name": IMAGE_ROOT_DEVICE, "volume_size": max(disks[0].volume_size, size)})]
        roots = [i for i, d in enumerate(disks) if d.device_name == IMAGE_ROOT_DEVICE]
        for i in roots:
            if disks[i].volume_size < size:
                key = f"runner_config.block_device_mappings[{i}].volume_size"
                message = f"{disks[i].volume_size} GiB is smaller than the {boot.family} image's root"
                raise pool.error(key, f"{message} ({size} GiB, {STACK_IMAGES_KEY}.root_volume_gb)")
        if not roots:
            message = (
                f"no disk is the {boot.family} image's root ({IMAGE_ROOT_DEVICE}): hosts keep the image's {size} GiB root"
                f" and get {', '.join(d.device_name for d in disks)} as extra, empty volumes"
            )
            warnings.append(pool.warning("runner_config.block_device_mappings", message))
    rate = initialization_rate(pool, boot)
    found = [
        LaunchDisk(
            device_name=d.device_name,
            volume_size=d.volume_size,
            volume_type=d.volume_type,
            delete_on_termination=d.delete_on_termination,
            iops=d.iops,
            throughput=d.throughput,
            kms_key_id=d.kms_key_id,
            snapshot_id=d.snapshot_id,
            initialization_rate=rate if rate is not None and (d.snapshot_id is not None or d.device_name == root) else None,
        )
        for d in disks
    ]
    return found, warnings
