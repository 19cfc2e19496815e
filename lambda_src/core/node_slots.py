"""A GPU node's slot plan: its detected GPUs split per the pool's layout, with the slots a
faulty GPU takes out of rotation. Pure; the slot manager and `estate gpus` both use it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lambda_src.core.gpu_slots import LayoutError, NodeSlot, SlotLayout, assign_slots
from lambda_src.core.gpus import Gpu


@dataclass(frozen=True)
class NodePlan:
    gpus: tuple[Gpu, ...]
    layout: SlotLayout
    slots: tuple[NodeSlot, ...]
    faulty: Mapping[int, str] = field(default_factory=dict)  # slot index -> why it is out of rotation

    @property
    def unused_gpus(self) -> int:
        return len(self.gpus) - self.layout.total_gpus

    def to_json(self) -> dict[str, object]:
        return {
            "gpus": [g.to_json() for g in self.gpus],
            "layout": self.layout.spec(),
            "slots": [{**s.to_json(), "faulty": self.faulty.get(s.index)} for s in self.slots],
            "unused_gpus": self.unused_gpus,
        }


def plan_node(gpus: list[Gpu], layout: SlotLayout, faults: Mapping[str, str] | None = None) -> NodePlan:
    """Slots over `gpus` (nvidia-smi order). A slot holding a GPU named in `faults`
    (uuid -> why) is planned but out of rotation, so slot numbers stay stable."""
    if not gpus:
        raise LayoutError("no NVIDIA GPU detected on this node")
    models = {g.model or g.name for g in gpus}
    if len(models) > 1:
        raise LayoutError(f"GPUs of different models on one node ({', '.join(sorted(models))}): slots need one model")
    slots = assign_slots(layout, [g.index for g in gpus], [g.uuid for g in gpus], gpus[0].labels)
    faults = faults or {}
    faulty = {
        s.index: "; ".join(f"GPU {u}: {faults[u]}" for u in s.device_uuids if u in faults)
        for s in slots
        if any(u in faults for u in s.device_uuids)
    }
    return NodePlan(tuple(gpus), layout, tuple(slots), faulty)


def render(plan: NodePlan) -> str:
    lines = ["GPUs:"]
    for g in plan.gpus:
        cc = g.compute_capability or "?"
        lines.append(f"  {g.index}  {g.name}  {g.uuid}  {g.memory_mib} MiB  compute {cc}  bus {g.pci_bus_id}")
    lines.append(f"slots ({plan.layout.spec()}):")
    for s in plan.slots:
        state = f"  OUT OF ROTATION: {plan.faulty[s.index]}" if s.index in plan.faulty else ""
        devices = ",".join(str(i) for i in s.device_indices)
        lines.append(f"  slot {s.index}  {s.gpus} GPU  devices {devices}  labels [{', '.join(s.labels)}]{state}")
    if plan.unused_gpus:
        lines.append(f"warning: {plan.unused_gpus} GPU(s) in no slot")
    return "\n".join(lines)
