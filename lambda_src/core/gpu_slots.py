"""GPU slot layouts: how one multi-GPU node is split into several runners.

A layout is written as `COUNTxGPUS` terms joined by `+`: `1x4+4x1` is one 4-GPU slot and
four 1-GPU slots. Each slot is labelled `<GPUS>gpu` so a job can ask for a slot size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TERM_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


class LayoutError(ValueError):
    """The layout text is not of the `COUNTxGPUS[+COUNTxGPUS...]` form."""


def slot_label(gpus: int) -> str:
    """The label a slot of this many GPUs carries: `1gpu`, `4gpu`, ..."""
    return f"{gpus}gpu"


@dataclass(frozen=True)
class SlotGroup:
    count: int  # how many slots of this size
    gpus: int  # GPUs per slot


@dataclass(frozen=True)
class SlotLayout:
    groups: tuple[SlotGroup, ...]

    @property
    def total_gpus(self) -> int:
        return sum(g.count * g.gpus for g in self.groups)

    @property
    def slot_count(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def size_labels(self) -> tuple[str, ...]:
        """One label per distinct slot size, largest first."""
        return tuple(slot_label(n) for n in sorted({g.gpus for g in self.groups}, reverse=True))

    def spec(self) -> str:
        return "+".join(f"{g.count}x{g.gpus}" for g in self.groups)


def parse_layout(text: str) -> SlotLayout:
    if not text.strip():
        raise LayoutError("empty slot layout; write COUNTxGPUS terms joined by '+', e.g. 1x4+4x1")
    groups: list[SlotGroup] = []
    for term in text.split("+"):
        match = _TERM_RE.match(term)
        if match is None:
            raise LayoutError(f"bad term {term.strip()!r} in slot layout {text!r}; expected COUNTxGPUS such as 4x1")
        count, gpus = int(match[1]), int(match[2])
        if count < 1 or gpus < 1:
            raise LayoutError(f"term {term.strip()!r} in slot layout {text!r} must have COUNT and GPUS of at least 1")
        groups.append(SlotGroup(count, gpus))
    return SlotLayout(tuple(groups))


def whole_node(gpu_count: int) -> SlotLayout:
    """The layout of a node run as a single runner."""
    return SlotLayout((SlotGroup(1, gpu_count),))


@dataclass(frozen=True)
class NodeSlot:
    """One runner's share of a node: which GPUs it sees and the labels it registers with."""

    index: int
    gpus: int
    device_indices: tuple[int, ...]
    device_uuids: tuple[str, ...]
    labels: tuple[str, ...]  # model, compute capability and size: ("h100", "sm90", "4gpu")

    @property
    def environment(self) -> dict[str, str]:
        """Pins the slot's runner (and `docker run --gpus`, through the NVIDIA container
        toolkit) to its own devices. UUIDs do not depend on enumeration order."""
        devices = ",".join(self.device_uuids)
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": devices, "NVIDIA_VISIBLE_DEVICES": devices}

    def to_json(self) -> dict[str, object]:
        return {"slot": self.index, "gpus": self.gpus, "devices": list(self.device_indices), "uuids": list(self.device_uuids),
                "labels": list(self.labels)}  # fmt: skip


def slot_labels(layout: SlotLayout, model_labels: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Each slot's own labels, in slot order (layout order): the node's GPU model labels and
    the slot size. The control plane and the node both derive them here, so they agree."""
    return [(*model_labels, slot_label(g.gpus)) for g in layout.groups for _ in range(g.count)]


def assign_slots(layout: SlotLayout, device_indices: list[int], device_uuids: list[str], model_labels: tuple[str, ...]) -> list[NodeSlot]:
    """Split the node's GPUs into the layout's slots, in order: consecutive devices per slot,
    so a multi-GPU slot stays on neighbouring devices."""
    if layout.total_gpus > len(device_indices):
        raise LayoutError(f"layout {layout.spec()} needs {layout.total_gpus} GPUs; this node has {len(device_indices)}")
    sizes = [g.gpus for g in layout.groups for _ in range(g.count)]
    slots, start = [], 0
    for index, (size, labels) in enumerate(zip(sizes, slot_labels(layout, model_labels), strict=True)):
        ids = slice(start, start + size)
        slots.append(NodeSlot(index, size, tuple(device_indices[ids]), tuple(device_uuids[ids]), labels))
        start += size
    return slots
