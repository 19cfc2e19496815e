"""The deploy guard: fail a `pulumi preview --json` that would replace or delete what must
outlive any deploy — the webhook endpoint GitHub posts to, the ledger that remembers which jobs
were served, a capacity block that was paid for.

It judges only what the Pulumi CLI prints for `pulumi preview --json`: one JSON object (the
engine's preview digest) with `steps` — each `{op, urn, provider?, oldState?, newState?,
diffReasons?, replaceReasons?, detailedDiff?}` (older CLIs: `old`/`new`) — and optionally
`config`, `diagnostics`, `duration` (nanoseconds), `changeSummary` (op -> count) and
`maxSeverity`. Anything else (`{}`, our offline `preview --json` array, a truncated file, an
unknown op) is refused: a guard that passes what it cannot read guards nothing.
"""

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
# Every step op the engine reports (its display.StepOp values); an op we do not know may destroy.
STEP_OPS = DESTRUCTIVE_OPS | {
    "same", "create", "update", "read", "read-replacement", "refresh", "discard", "discard-replaced",
    "remove-pending-replace", "import", "import-replacement",
}  # fmt: skip
_TOP_KEYS = {"config", "steps", "diagnostics", "duration", "changeSummary", "maxSeverity"}
_STEP_KEYS = {"op", "urn", "provider", "oldState", "newState", "old", "new", "diffReasons", "replaceReasons", "detailedDiff"}


class NotAPreviewError(ValueError):
    """The input is not the JSON `pulumi preview --json` prints."""


def _is_urn(value: object) -> bool:
    """`urn:pulumi:<stack>::<project>::<parent$...$type>::<name>` (the name may hold `::`)."""
    if not isinstance(value, str) or not value.startswith("urn:pulumi:"):
        return False
    parts = value.removeprefix("urn:pulumi:").split("::", 3)
    return len(parts) == 4 and all(parts)


def _step_problem(i: int, step: object) -> str | None:
    where = f"steps[{i}]"
    if not isinstance(step, dict):
        return f"{where} is not an object"
    unknown = sorted(set(step) - _STEP_KEYS)
    if unknown:
        return f"{where} has unexpected key {unknown[0]!r:.60}"
    if step.get("op") not in STEP_OPS:
        return f"{where}.op {step.get('op')!r:.60} is not a step op"
    if not _is_urn(step.get("urn")):
        return f"{where}.urn is not a Pulumi URN"
    for key in ("oldState", "newState", "old", "new", "detailedDiff"):
        if step.get(key) is not None and not isinstance(step[key], dict):
            return f"{where}.{key} is not an object"
    for key in ("diffReasons", "replaceReasons"):
        if step.get(key) is not None and not (isinstance(step[key], list) and all(isinstance(k, str) for k in step[key])):
            return f"{where}.{key} is not a list of property names"
    if "provider" in step and not isinstance(step["provider"], str):
        return f"{where}.provider is not a string"
    return None


def preview_problem(document: Any) -> str | None:
    """Why `document` is not a `pulumi preview --json` document; None when it is one."""
    if not isinstance(document, dict):
        return "not a JSON object (the offline `estate preview --json` array is not Pulumi's)"
    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        return f"unexpected key {unknown[0]!r:.60}"
    steps = document.get("steps")
    if steps is None or steps == []:
        return "no steps (a real preview always has at least the stack's own)"
    if not isinstance(steps, list):
        return "steps is not a list"
    for i, step in enumerate(steps):
        if (problem := _step_problem(i, step)) is not None:
            return problem
    summary = document.get("changeSummary", {})
    if not isinstance(summary, dict) or not all(k in STEP_OPS and isinstance(v, int) for k, v in summary.items()):
        return "changeSummary is not a count per step op"
    if not isinstance(document.get("config", {}), dict) or not isinstance(document.get("diagnostics", []), list):
        return "config or diagnostics has the wrong shape"
    if not isinstance(document.get("duration", 0), int) or not isinstance(document.get("maxSeverity", ""), str):
        return "duration or maxSeverity has the wrong shape"
    return None


def resource_type(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::<parent$...$type>::<name>` -> type."""
    return urn.split("::")[2].split("$")[-1]


def guard_findings(preview: Any) -> list[str]:
    """What the preview would replace or delete among GUARDED_TYPES, one line each. Raises
    NotAPreviewError for input that is not a preview document."""
    if (problem := preview_problem(preview)) is not None:
        raise NotAPreviewError(problem)
    steps = preview["steps"]
    found = []
    for step in steps:
        urn = str(step.get("urn", ""))
        if step.get("op") in DESTRUCTIVE_OPS and urn.count("::") >= 3 and resource_type(urn) in GUARDED_TYPES:
            found.append(f"{step['op']} {urn.rsplit('::', 1)[-1]}: {GUARDED_TYPES[resource_type(urn)]}")
    return sorted(set(found))


def load_preview(path: Path) -> Any:
    """The document at `path`, checked to be what `pulumi preview --json` prints."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read the preview: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise ConfigError(str(path), None, None, f"not the JSON of `pulumi preview --json`: {str(exc)[:120]}") from exc
    if (problem := preview_problem(document)) is not None:
        raise ConfigError(str(path), None, None, f"not a `pulumi preview --json` document: {problem}")
    return document
