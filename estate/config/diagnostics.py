"""Errors and warnings about configuration, each naming where the problem is."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


def _where(file: str, pool: str | None, key: str | None) -> str:
    parts = [file]
    if pool:
        parts.append(f"pool '{pool}'")
    if key:
        parts.append(key)
    return ": ".join(parts)


@dataclass(frozen=True)
class ConfigWarning:
    """Something accepted but worth knowing: a key not acted on yet, a security opt-out."""

    file: str
    pool: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        return f"{_where(self.file, self.pool, self.key)}: {self.message}"


class ConfigError(Exception):
    """Configuration that cannot be used; one line naming file, pool and key."""

    def __init__(self, file: str, pool: str | None, key: str | None, message: str) -> None:
        self.file, self.pool, self.key, self.message = file, pool, key, message
        super().__init__(f"{_where(file, pool, key)}: {message}")


def key_path(loc: Iterable[int | str]) -> str:
    """`("runner_config", "instance_types", 2)` -> `runner_config.instance_types[2]`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def first_problem(exc: ValidationError, model: type[BaseModel] | None = None) -> tuple[str, str]:
    """The first validation problem as (key path, one-line message).

    A key the model does not know comes first: misspelt, it also leaves the key it stood for
    missing, and "required key is missing" alone would hide the typo. With `model`, the
    message names the nearest known key there (did you mean ...?)."""
    errors = exc.errors()
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    kind = error["type"]
    if kind == "extra_forbidden":
        *parent, unknown = error["loc"]
        missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and list(e["loc"][:-1]) == parent]
        known = _keys_at(model, tuple(parent)) if model is not None else []
        guess = difflib.get_close_matches(str(unknown), missing, n=1, cutoff=0.6) or difflib.get_close_matches(
            str(unknown), known, n=1, cutoff=0.6
        )
        message = f"unknown key {str(unknown)!r}" + (f" (did you mean {guess[0]!r}?)" if guess else "")
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return key_path(error["loc"]), message


def _keys_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys of the model found at `loc` inside `model` (as the file spells them), or none."""
    found: Any = model
    for part in loc:
        found = _inside(found, part)
        if found is None:
            return []
    found = _model_of(found)
    if found is None:
        return []
    return [info.alias or name for name, info in found.model_fields.items()]


def _model_of(tp: Any) -> type[BaseModel] | None:
    """The model class `tp` stands for, through Optional and Annotated."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if get_origin(tp) is Annotated:
        return _model_of(get_args(tp)[0])
    if get_origin(tp) in (Union, UnionType):
        models = [m for m in (_model_of(a) for a in get_args(tp)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def _inside(tp: Any, part: int | str) -> Any:
    """The type of `part` (a key, list index or union member name) inside a value of type `tp`."""
    model = _model_of(tp)
    if model is not None and isinstance(part, str):
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _inside(args[0], part)
    if origin in (Union, UnionType):
        named = [a for a in args if isinstance(a, type) and a.__name__ == part]
        if named:
            return named[0]
        inner = [t for t in (_inside(a, part) for a in args if a is not type(None)) if t is not None]
        return inner[0] if inner else None
    if origin in (list, tuple) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return args[1]
    return None
