"""NVIDIA GPUs as `nvidia-smi -q -x` describes them, and their health: parsing and rules, pure.

Used on capacity-block nodes (the slot manager), on hosts of `estate agent`, and behind
`python -m estate gpus`; running nvidia-smi itself is lambda_src/host/nvidia_smi.py. Stdlib only.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lambda_src.core.instance_catalog import GPU_MODELS, GpuModel

# Product-name fragments (lower case, most specific first) -> our GPU model label. The XML
# carries no compute capability, so it comes from the model (instance_catalog.GPU_MODELS).
_NAME_TO_MODEL = (
    ("h200", "h200"),
    ("h100", "h100"),
    ("b200", "b200"),
    ("a100", "a100"),
    ("a10g", "a10g"),
    ("l40s", "l40s"),
    ("l4", "l4"),
    ("t4g", "t4g"),
    ("t4", "t4"),
    ("v100", "v100"),
)
_ARCH_SM = {"volta": "sm70", "turing": "sm75", "ampere": "sm80", "ada lovelace": "sm89", "hopper": "sm90", "blackwell": "sm100"}

# XIDs that NVIDIA's XID catalogue files under hardware, memory or bus faults that need the
# GPU reset or drained; application faults (e.g. 13, 31, 43) do not take a GPU out of rotation.
FAULT_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140})
_XID_RE = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})[^)]*\): (\d+)")


@dataclass(frozen=True)
class Gpu:
    index: int  # nvidia-smi's index (PCI bus order)
    name: str
    uuid: str
    pci_bus_id: str
    memory_mib: int
    architecture: str  # "Hopper"
    model: str | None  # our label: "h100"; None for a GPU our catalogue does not know
    sm: str | None  # "sm90"
    uncorrectable_ecc: int  # volatile uncorrectable ECC errors since the driver loaded
    remap_failure: bool  # the GPU could not remap a failing memory row

    @property
    def compute_capability(self) -> str | None:
        """ "9.0" for sm90, "10.0" for sm100."""
        if self.sm is None:
            return None
        digits = self.sm[2:]
        return f"{digits[:-1]}.{digits[-1]}"

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "pci_bus_id": self.pci_bus_id,
            "memory_mib": self.memory_mib,
            "compute_capability": self.compute_capability,
            "labels": list(self.labels),
        }

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for label in (self.model, self.sm) if label)


def _text(node: ET.Element, path: str) -> str:
    found = node.find(path)
    return (found.text or "").strip() if found is not None else ""


def _count(node: ET.Element, path: str) -> int:
    text = _text(node, path)
    return int(text) if text.isdigit() else 0


def _model(name: str, architecture: str) -> tuple[str | None, str | None]:
    lowered = name.lower()
    for fragment, label in _NAME_TO_MODEL:
        if fragment in lowered:
            known: GpuModel = GPU_MODELS[label]
            return known.label, known.sm
    return None, _ARCH_SM.get(architecture.lower())


def parse_nvidia_smi_xml(text: str) -> list[Gpu]:
    """Every GPU in `nvidia-smi -q -x` output, in nvidia-smi's index order."""
    try:
        root = ET.fromstring(text)  # noqa: S314 - see the import
    except ET.ParseError as exc:
        raise ValueError(f"not nvidia-smi XML: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"not nvidia-smi XML: root element is <{root.tag}>, expected <nvidia_smi_log>")
    gpus = []
    for index, node in enumerate(root.findall("gpu")):
        name, arch = _text(node, "product_name"), _text(node, "product_architecture")
        model, sm = _model(name, arch)
        memory = _text(node, "fb_memory_usage/total").split()
        ecc = sum(
            _count(node, f"ecc_errors/volatile/{field}")
            for field in ("dram_uncorrectable", "sram_uncorrectable_parity", "sram_uncorrectable_secded", "sram_uncorrectable")
        )
        gpus.append(
            Gpu(
                index=index,
                name=name,
                uuid=_text(node, "uuid"),
                pci_bus_id=_text(node, "pci/pci_bus_id") or node.get("id", ""),
                memory_mib=int(memory[0]) if memory and memory[0].isdigit() else 0,
                architecture=arch,
                model=model,
                sm=sm,
                uncorrectable_ecc=ecc,
                remap_failure=_text(node, "remapped_rows/remapped_row_failure").lower() == "yes",
            )
        )
    return gpus


def _bus_key(bus_id: str) -> str:
    """`00000000:00:06.0` and the kernel's `0000:00:06` name the same device: compare bus:device."""
    parts = bus_id.lower().split(":")
    return ":".join(parts[-2:]).split(".")[0] if len(parts) >= 2 else bus_id.lower()


def xid_faults(kernel_log: Iterable[str]) -> dict[str, list[int]]:
    """Fault XIDs per PCI device (bus:device) in kernel log lines (`NVRM: Xid (PCI:...): N`)."""
    found: dict[str, list[int]] = {}
    for line in kernel_log:
        match = _XID_RE.search(line)
        if match and int(match[2]) in FAULT_XIDS:
            found.setdefault(_bus_key(match[1]), []).append(int(match[2]))
    return found


def faulty_gpus(gpus: Iterable[Gpu], xids: Mapping[str, list[int]]) -> dict[str, str]:
    """uuid -> why, for each GPU that must leave rotation: uncorrectable ECC errors, a failed
    row remap, or a fault XID in the kernel log."""
    faults = {}
    for gpu in gpus:
        reasons = []
        if gpu.uncorrectable_ecc:
            reasons.append(f"{gpu.uncorrectable_ecc} uncorrectable ECC errors")
        if gpu.remap_failure:
            reasons.append("row remapping failed")
        if codes := xids.get(_bus_key(gpu.pci_bus_id)):
            reasons.append("XID " + ", ".join(str(c) for c in sorted(set(codes))))
        if reasons:
            faults[gpu.uuid] = "; ".join(reasons)
    return faults
