"""Scalar types of upstream's keys, converted as Terraform converts them.

terraform-aws-github-runner reads a multi-runner file with `yamldecode` into typed variables,
and Terraform converts what YAML gives it: the string "50" where a number is wanted, "true" where
a bool is, a number where a string is. A file that works upstream must load here, so upstream's
keys accept those forms; everything else stays strict (StrictModel), and our own `estate:` keys,
which Terraform never reads, take only their own types.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

_NUMBER_RE = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def _whole_number(value: Any) -> Any:
    """ "50", "5e1", 50.0 -> 50, as Terraform's number type holds them; anything else unchanged
    (the int schema then says what is wrong)."""
    if isinstance(value, bool):
        return value  # Terraform converts no bool to a number
    if isinstance(value, str) and _NUMBER_RE.match(value):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return value
        return int(number) if number == number.to_integral_value() else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _bool(value: Any) -> Any:
    """ "true" / "false" -> a bool, as Terraform converts a string; nothing else."""
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return value


def _string(value: Any) -> Any:
    """A number or bool -> its string, as Terraform converts them (0.5 -> "0.5", true -> "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format(Decimal(str(value)).normalize(), "f") if isinstance(value, float) else str(value)
    return value


@dataclass(frozen=True, eq=False)  # hashed by identity: typing hashes Annotated metadata
class _Converted:
    """Converts the input before the strict type checks it; the JSON Schema offers the other form."""

    convert: Callable[[Any], Any]
    also: JsonSchemaValue

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.convert, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [handler(schema), self.also]}


TfInt = Annotated[int, _Converted(_whole_number, {"type": "string", "pattern": _NUMBER_RE.pattern})]
TfBool = Annotated[bool, _Converted(_bool, {"enum": ["true", "false"]})]
TfStr = Annotated[str, _Converted(_string, {"type": ["number", "boolean"]})]

# Pydantic writes field constraints it cannot place on a converted type as its own keywords.
_STANDARD = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def standard_json_schema(schema: Any) -> Any:
    """`schema` with pydantic's constraint names as JSON Schema's keywords (they constrain
    numbers only, so they hold beside the string form too)."""
    if isinstance(schema, dict):
        return {_STANDARD.get(k, k) if not isinstance(v, dict | list) else k: standard_json_schema(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [standard_json_schema(v) for v in schema]
    return schema
