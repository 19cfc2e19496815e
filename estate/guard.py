"""The deploy guard: fail a `pulumi preview --json` that would replace or delete what must
outlive any deploy — the webhook endpoint GitHub posts to, the ledger that remembers which jobs
were served, a capacity block that was paid for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from estate.config.diagnostics import ConfigError

GUARDED_TYPES = {
    "aws:lambda/functionUrl:FunctionUrl": "the webhook endpoint (GitHub's org webhook points at its URL)",
    "aws:dynamodb/table:Table": "the ledger (which jobs were served, which hosts are ours)",
    "aws:ec2/capacityBlockReservation:CapacityBlockReservation": "a capacity block (paid for, not refundable)",
}
DESTRUCTIVE_OPS = {"delete", "replace", "create-replacement", "delete-replaced"}


def resource_type(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::<parent$...$type>::<name>` -> type."""
    return urn.split("::")[2].split("$")[-1]


def guard_findings(preview: Any) -> list[str]:
    steps = preview.get("steps", []) if isinstance(preview, dict) else []
    found = []
    for step in steps:
        urn = str(step.get("urn", ""))
        if step.get("op") in DESTRUCTIVE_OPS and urn.count("::") >= 3 and resource_type(urn) in GUARDED_TYPES:
            found.append(f"{step['op']} {urn.rsplit('::', 1)[-1]}: {GUARDED_TYPES[resource_type(urn)]}")
    return sorted(set(found))


def load_preview(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read the preview: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(str(path), None, None, f"not the JSON of `pulumi preview --json`: {exc}") from exc
