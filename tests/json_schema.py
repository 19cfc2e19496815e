"""A small JSON Schema (2020-12) checker: the keywords `estate schema` emits, enough to check that
an editor or CI linter given that schema accepts every file the loader accepts. Not a general
validator (no remote refs, formats or dependent keywords)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_KNOWN = {
    "$schema", "$defs", "$ref", "title", "description", "default", "examples", "anyOf", "oneOf", "allOf", "type", "enum",
    "const", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minLength", "maxLength",
    "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "propertyNames", "uniqueItems",
}  # fmt: skip


def problems(schema: dict[str, Any], value: Any) -> list[str]:
    """Why `value` does not meet `schema` (empty when it does)."""
    return list(_check(schema, schema, value, "$"))


def unknown_keywords(schema: dict[str, Any]) -> set[str]:
    """Keywords this checker (and so, likely, the schema's author) does not know."""
    found: set[str] = set()
    for key, sub in schema.items():
        if key not in _KNOWN:
            found.add(key)
        if key in ("properties", "$defs"):
            for inner in sub.values():
                found |= unknown_keywords(inner)
        elif key in ("items", "additionalProperties", "propertyNames") and isinstance(sub, dict):
            found |= unknown_keywords(sub)
        elif key in ("anyOf", "oneOf", "allOf"):
            for inner in sub:
                found |= unknown_keywords(inner)
    return found


def _check(root: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> Iterator[str]:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        yield from _check(root, root["$defs"][name], value, where)
    if "anyOf" in schema and all(list(_check(root, s, value, where)) for s in schema["anyOf"]):
        yield f"{where}: matches none of anyOf"
    if "oneOf" in schema and sum(not list(_check(root, s, value, where)) for s in schema["oneOf"]) != 1:
        yield f"{where}: matches not exactly one of oneOf"
    for sub in schema.get("allOf", []):
        yield from _check(root, sub, value, where)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            yield f"{where}: {value!r} is not of type {schema['type']}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{where}: {value!r} is not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        yield f"{where}: {value!r} is not {schema['const']!r}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                yield f"{where}: {key} is required"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                yield from _check(root, props[key], item, f"{where}.{key}")
            elif extra is False:
                yield f"{where}: {key} is not allowed"
            elif isinstance(extra, dict):
                yield from _check(root, extra, item, f"{where}.{key}")
    if isinstance(value, list):
        if "items" in schema:
            for i, item in enumerate(value):
                yield from _check(root, schema["items"], item, f"{where}[{i}]")
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            yield f"{where}: {len(value)} items is out of bounds"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            yield f"{where}: length {len(value)} is out of bounds"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield f"{where}: {value!r} does not match {schema['pattern']}"
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            yield f"{where}: {value} < {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"{where}: {value} > {schema['maximum']}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            yield f"{where}: {value} <= {schema['exclusiveMinimum']}"
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            yield f"{where}: {value} >= {schema['exclusiveMaximum']}"
