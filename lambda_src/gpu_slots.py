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
