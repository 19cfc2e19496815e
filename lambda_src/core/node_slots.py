"""A GPU node's slot plan: its detected GPUs split per the pool's layout, with the slots a
faulty GPU takes out of rotation. Pure; the slot manager and `estate gpus` both use it, and
`faulty_slots` is the one decision of which slots a GPU fault takes out, at boot and at every
health check after."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lambda_src.core.gpu_slots import LayoutError, NodeSlot, SlotLayout, assign_slots
from lambda_src.core.gpus import Gpu


@dataclass(frozen=True)
class NodePlan:
    gpus: tuple[Gpu, ...]
    layout: SlotLayout
    slots: tuple[NodeSlot, ...]
    faulty: Mapping[int, str] = field(default_factory=dict)  # slot index -> why it is out of rotation
    gpu_faults: Mapping[str, str] = field(default_factory=dict)  # GPU uuid -> why it must leave rotation

    @property
    def unused_gpus(self) -> int:
        return len(self.gpus) - self.layout.total_gpus

    def to_json(self) -> dict[str, object]:
        return {
            "gpus": [{**g.to_json(), "faulty": self.gpu_faults.get(g.uuid)} for g in self.gpus],
            "layout": self.layout.spec(),
            "slots": [{**s.to_json(), "faulty": self.faulty.get(s.index)} for s in self.slots],
            "unused_gpus": self.unused_gpus,
        }


def faulty_slots(slots: Iterable[NodeSlot], faults: Mapping[str, str]) -> dict[int, str]:
    """Slot index -> why it leaves rotation, for each slot holding a GPU named in `faults`
    (uuid -> why, from `gpus.faulty_gpus`)."""
    found = {}
    for slot in slots:
        bad = [f"GPU {u}: {faults[u]}" for u in slot.device_uuids if u in faults]
        if bad:
            found[slot.index] = "; ".join(bad)
    return found


def plan_node(gpus: list[Gpu], layout: SlotLayout, faults: Mapping[str, str] | None = None) -> NodePlan:
    """Slots over `gpus` (nvidia-smi order). A slot holding a GPU named in `faults`
    (uuid -> why) is planned but out of rotation, so slot numbers stay stable."""
    if not gpus:
        raise LayoutError("no NVIDIA GPU detected on this node")
    models = {g.model or g.name for g in gpus}
    if len(models) > 1:
        raise LayoutError(f"GPUs of different models on one node ({', '.join(sorted(models))}): slots need one model")
    slots = assign_slots(layout, [g.index for g in gpus], [g.uuid for g in gpus], gpus[0].labels)
    faults = dict(faults or {})
    return NodePlan(tuple(gpus), layout, tuple(slots), faulty_slots(slots, faults), faults)


def render(plan: NodePlan) -> str:
    lines = ["GPUs:"]
    for g in plan.gpus:
        cc = g.compute_capability or "?"
        health = f"FAULTY: {plan.gpu_faults[g.uuid]}" if g.uuid in plan.gpu_faults else "healthy"
        lines.append(f"  {g.index}  {g.name}  {g.uuid}  {g.memory_mib} MiB  compute {cc}  bus {g.pci_bus_id}  {health}")
    lines.append(f"slots ({plan.layout.spec()}):")
    for s in plan.slots:
        state = f"  OUT OF ROTATION: {plan.faulty[s.index]}" if s.index in plan.faulty else ""
        devices = ",".join(str(i) for i in s.device_indices)
        lines.append(f"  slot {s.index}  {s.gpus} GPU  devices {devices}  labels [{', '.join(s.labels)}]{state}")
    if plan.unused_gpus:
        lines.append(f"warning: {plan.unused_gpus} GPU(s) in no slot")
    return "\n".join(lines)
