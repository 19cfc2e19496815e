"""What we know about EC2 instance types: CPU architecture and the NVIDIA GPUs of a node.

Pure data and lookups (stdlib only) so the config validator, the scaler, the node's slot
manager and the simulator all read the same facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    """An NVIDIA GPU as runner labels name it."""

    label: str  # "h100": the label jobs ask for
    architecture: str  # "hopper"
    sm: str  # "sm90": compute capability as a label


GPU_MODELS: dict[str, GpuModel] = {
    m.label: m
    for m in (
        GpuModel("v100", "volta", "sm70"),
        GpuModel("t4", "turing", "sm75"),
        GpuModel("t4g", "turing", "sm75"),
        GpuModel("a100", "ampere", "sm80"),
        GpuModel("a10g", "ampere", "sm86"),
        GpuModel("l4", "ada", "sm89"),
        GpuModel("l40s", "ada", "sm89"),
        GpuModel("h100", "hopper", "sm90"),
        GpuModel("h200", "hopper", "sm90"),
        GpuModel("b200", "blackwell", "sm100"),
    )
}

# GPUs per size for each NVIDIA family on EC2. Sizes not listed have no such instance type.
_ONE_UP_TO_16X = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1}
_GPU_FAMILIES: dict[str, tuple[str, dict[str, int]]] = {
    "p3": ("v100", {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}),
    "p3dn": ("v100", {"24xlarge": 8}),
    "g4dn": ("t4", {**_ONE_UP_TO_16X, "12xlarge": 4, "metal": 8}),
    "g5g": ("t4g", {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 2, "metal": 2}),
    "p4d": ("a100", {"24xlarge": 8}),
    "p4de": ("a100", {"24xlarge": 8}),
    "g5": ("a10g", {**_ONE_UP_TO_16X, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g6": ("l4", {**_ONE_UP_TO_16X, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g6e": ("l40s", {**_ONE_UP_TO_16X, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "p5": ("h100", {"4xlarge": 1, "48xlarge": 8}),
    "p5e": ("h200", {"48xlarge": 8}),
    "p5en": ("h200", {"48xlarge": 8}),
    "p6-b200": ("b200", {"48xlarge": 8}),
}

# family letters, generation, attribute letters (g = Graviton), then the size.
_TYPE_RE = re.compile(
    r"^(?P<family>[a-z]+)(?P<generation>\d+)(?P<attrs>[a-z0-9-]*)\."
    r"(?P<size>nano|micro|small|medium|large|xlarge|\d+xlarge|metal(?:-\d+xl)?)$"
)


@dataclass(frozen=True)
class InstanceType:
    name: str
    architecture: str  # "x64" or "arm64", as runner labels spell it
    gpu_model: GpuModel | None
    gpu_count: int


def parse_instance_type(name: str) -> InstanceType | None:
    """Facts about `name`, or None when it is not an EC2 instance type name we understand."""
    match = _TYPE_RE.match(name)
    if match is None:
        return None
    family = name.split(".", 1)[0]
    # Graviton families carry a `g` among their attribute letters (m7g, c7gn, x2gd, im4gn);
    # a1 is the first-generation Graviton.
    arm = "g" in match["attrs"] or family == "a1"
    gpu_model: GpuModel | None = None
    gpu_count = 0
    if family in _GPU_FAMILIES:
        label, sizes = _GPU_FAMILIES[family]
        if match["size"] not in sizes:
            return None
        gpu_model, gpu_count = GPU_MODELS[label], sizes[match["size"]]
    return InstanceType(name, "arm64" if arm else "x64", gpu_model, gpu_count)
