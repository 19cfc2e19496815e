"""Every request our code builds, checked against the service's own model (botocore's
`botocore/data/<service>/<version>/service-2.json`), the way the service checks it.

moto and our fakes accept what AWS refuses: a misspelt member, a value outside an enum, a name
too long. botocore's `ParamValidator` catches some of that, but only when a real boto3 client
sends the request (not our stdlib JSON client, not our fakes), and even then it checks only
what may never change client-side: required members, unknown members, types and minimums. The
service also checks the rest, so this module adds:

- maximum lengths of strings, lists and maps, and maximum values of numbers;
- enum membership (`InstanceType`, `DefaultTargetCapacityType`, `Tier`, ...);
- patterns, matched against the whole value as the services' validation does
  ("Member must satisfy regular expression pattern: ..."). The models write them in Java's
  syntax; the few Python cannot compile are listed by `uncompilable_patterns`, and a test keeps
  that list empty for the operations we call, so no check is skipped in silence.

`check()` raises `ModelViolationError` with every problem of one request. tests/conftest.py runs it
on every AwsJsonClient call and every boto3 client call of the test session, and our EC2 fake
(estate/local/fake_block_ec2.py) runs it on every request it is handed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

from botocore.loaders import Loader
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StructureShape
from botocore.validate import ParamValidator


class ModelViolationError(AssertionError):
    """A request the service's model refuses."""


_LOADER = Loader()


@functools.cache
def service_model(service: str) -> ServiceModel:
    return ServiceModel(_LOADER.load_service_model(service, "service-2"), service_name=service)


# Java regex constructs in AWS models that Python's `re` spells differently.
_JAVA_CLASSES = {
    r"\p{L}": r"^\W\d_",  # letters, as a negated class body (see _python_pattern)
    r"\p{Z}": r"\s",
    r"\p{N}": r"\d",
}


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(_python_pattern(pattern), re.DOTALL)
    except re.error:
        return None


def _python_pattern(pattern: str) -> str:
    """The few Java-only spellings the models use, in Python's: `\\p{L}` inside a class becomes
    `[^\\W\\d_]` as its own alternative, `\\p{Z}` whitespace, `\\p{N}` digits."""
    text = pattern.replace(r"\p{Z}", r"\s").replace(r"\p{N}", r"\d")
    if r"\p{L}" not in text:
        return text

    # [\p{L}abc] -> (?:[^\W\d_]|[abc]) ; a bare \p{L} -> [^\W\d_]
    def one_class(match: re.Match[str]) -> str:
        body = match.group(1)
        if r"\p{L}" not in body:
            return match.group(0)
        rest = body.replace(r"\p{L}", "")
        return r"(?:[^\W\d_]" + (f"|[{rest}]" if rest else "") + ")"

    text = re.sub(r"\[((?:\\.|[^\]\\])*)\]", one_class, text)
    return text.replace(r"\p{L}", r"[^\W\d_]")


def _shapes_below(shape: Shape, seen: set[str] | None = None) -> Iterator[Shape]:
    seen = set() if seen is None else seen
    if shape.name in seen:
        return
    seen.add(shape.name)
    yield shape
    if isinstance(shape, StructureShape):
        for member in shape.members.values():
            yield from _shapes_below(member, seen)
    elif isinstance(shape, ListShape):
        yield from _shapes_below(shape.member, seen)
    elif isinstance(shape, MapShape):
        yield from _shapes_below(shape.key, seen)
        yield from _shapes_below(shape.value, seen)


def uncompilable_patterns(service: str, operation: str) -> list[str]:
    """Patterns in the operation's input that this module cannot check (none, we hope)."""
    shape = service_model(service).operation_model(operation).input_shape
    if shape is None:
        return []
    patterns = {s.metadata["pattern"] for s in _shapes_below(shape) if "pattern" in s.metadata}
    return sorted(p for p in patterns if _compiled(p) is None)


def _beyond_botocore(value: Any, shape: Shape, name: str) -> Iterator[str]:
    """What the service checks and botocore's ParamValidator does not: max, enum, pattern."""
    meta = shape.metadata
    shown = "(sensitive)" if meta.get("sensitive") else repr(value)[:80]
    if isinstance(shape, StructureShape):
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key in shape.members:
                    yield from _beyond_botocore(item, shape.members[key], f"{name}.{key}")
        return
    if isinstance(shape, ListShape):
        if isinstance(value, list | tuple):
            if "max" in meta and len(value) > meta["max"]:
                yield f"{name}: {len(value)} items, at most {meta['max']} allowed"
            for i, item in enumerate(value):
                yield from _beyond_botocore(item, shape.member, f"{name}[{i}]")
        return
    if isinstance(shape, MapShape):
        if isinstance(value, Mapping):
            if "max" in meta and len(value) > meta["max"]:
                yield f"{name}: {len(value)} entries, at most {meta['max']} allowed"
            for key, item in value.items():
                yield from _beyond_botocore(key, shape.key, f"{name} (key {key!r})")
                yield from _beyond_botocore(item, shape.value, f"{name}.{key}")
        return
    if shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            yield f"{name}: length {len(value)}, at most {meta['max']} allowed"
        enum = meta.get("enum")
        if enum and value not in enum:
            close = [e for e in enum if e.lower() == value.lower() or e.split(".")[0] == value.split(".")[0]][:8]
            yield f"{name}: {shown} is not one of {shape.name}'s {len(enum)} values" + (f" (near: {', '.join(close)})" if close else "")
        pattern = meta.get("pattern")
        if pattern:
            compiled = _compiled(pattern)
            if compiled is not None and compiled.fullmatch(value) is None:
                yield f"{name}: {shown} does not satisfy the pattern {pattern}"
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if shape.type_name in ("integer", "long", "double", "float") and number and "max" in meta and value > meta["max"]:
        yield f"{name}: {value} is above the maximum {meta['max']}"


def problems(service: str, operation: str, params: Mapping[str, Any]) -> list[str]:
    """Every way `params` breaks the model of `service`'s `operation` (empty: a valid request)."""
    model = service_model(service)
    if operation not in model.operation_names:
        return [f"{service} has no operation {operation!r}"]
    shape = model.operation_model(operation).input_shape
    if shape is None:
        return [f"{operation} takes no input, got {sorted(params)}"] if params else []
    found = []
    report = ParamValidator().validate(dict(params), shape)
    if report.has_errors():
        found += [line for line in report.generate_report().splitlines() if line and not line.startswith("Invalid parameters")]
    found += list(_beyond_botocore(params, shape, ""))
    return found


def check(service: str, operation: str, params: Mapping[str, Any]) -> None:
    """Raise ModelViolationError when `params` is not a request `service` accepts for `operation`."""
    found = problems(service, operation, params)
    if found:
        raise ModelViolationError(f"{service} {operation} breaks the service model:\n  " + "\n  ".join(found))


VIOLATIONS: list[str] = []  # what `checked` refused during the current test (tests/conftest.py)


def checked(service: str, operation: str, params: Mapping[str, Any]) -> None:
    """`check`, remembering the refusal so a caller that swallows the error cannot hide it."""
    try:
        check(service, operation, params)
    except ModelViolationError as exc:
        VIOLATIONS.append(str(exc))
        raise
