"""A small IAM policy evaluator for tests: moto evaluates no IAM conditions, and no maintained
Python library evaluates identity policies with conditions against a request offline.

It covers what our documents use (estate/derive/iam_policies.py, components/*.py) and the
neighbouring features AWS's examples need, checked against those examples in
tests/test_iam_eval.py. Anything else raises `UnsupportedError`, so a document that starts to use a
new feature fails its test instead of being judged wrongly.

Semantics, within one account (AWS's policy evaluation logic):
- an explicit Deny in any applicable policy wins; otherwise an Allow in an identity policy, or
  in the resource's own policy (same account), allows; otherwise the request is implicitly denied;
- Action and NotAction match case-insensitively, with `*` (any run) and `?` (one character);
- Resource, NotResource, ArnEquals and ArnLike match ARNs case-sensitively, each of the six
  colon-separated parts on its own, except that a trailing `*` may run past colons;
- policy variables `${key}` (and `${key, 'default'}`, `${*}`, `${?}`, `${$}`) are replaced from
  the request context; an unresolved one matches nothing;
- condition key names are case-insensitive; operators in one block, keys under one operator
  AND together, values for one key OR (NOR for negated operators); a key absent from the
  request fails a condition except for negated operators, ...IfExists, Null and ForAllValues.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Document = Mapping[str, Any]
ContextValue = str | tuple[str, ...]  # a tuple for a multivalued key such as aws:TagKeys


class UnsupportedError(Exception):
    """A policy feature this evaluator does not model."""


class Decision(enum.Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit deny"
    IMPLICIT_DENY = "implicit deny"


@dataclass(frozen=True)
class Request:
    action: str  # "ssm:GetParameter"
    resource: str  # an ARN, or "*" for actions without resource-level permissions
    context: Mapping[str, ContextValue] = field(default_factory=dict)
    principal: str = ""  # the caller's ARN, for Principal in resource policies
    service: str = ""  # "events.amazonaws.com" when an AWS service is the caller

    def value(self, key: str) -> ContextValue | None:
        wanted = key.lower()
        return next((v for k, v in self.context.items() if k.lower() == wanted), None)


# ---- patterns ----------------------------------------------------------------------------

_TOKEN = re.compile(r"\$\{([^}]*)\}|\*|\?|[^$*?]+|\$")


def _regex(pattern: str, request: Request | None, wildcards: bool, ignore_case: bool = False) -> re.Pattern[str] | None:
    """A pattern as a regex: variables replaced (None when one cannot be), `*`/`?` as wildcards."""
    parts = []
    for token in _TOKEN.finditer(pattern):
        text, variable = token.group(0), token.group(1)
        if variable is not None:
            resolved = _resolve(variable, request)
            if resolved is None:
                return None
            parts.append(re.escape(resolved))
        elif text in ("*", "?") and wildcards:
            parts.append(".*" if text == "*" else ".")
        else:
            parts.append(re.escape(text))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _resolve(variable: str, request: Request | None) -> str | None:
    name, _, default = (s.strip() for s in variable.partition(","))
    if name in ("*", "?", "$"):
        return name
    value = request.value(name) if request is not None else None
    if isinstance(value, tuple):
        raise UnsupportedError(f"a multivalued key ({name}) cannot be a policy variable")
    if value is None and default:
        if not (len(default) >= 2 and default[0] == default[-1] == "'"):
            raise UnsupportedError(f"default value {default!r} is not quoted")
        return default[1:-1]
    return value


def _like(pattern: str, value: str, request: Request | None, wildcards: bool = True, ignore_case: bool = False) -> bool:
    compiled = _regex(pattern, request, wildcards, ignore_case)
    return compiled is not None and compiled.fullmatch(value) is not None


def action_matches(pattern: str, action: str) -> bool:
    return _like(pattern, action, None, ignore_case=True)


def arn_matches(pattern: str, arn: str, request: Request | None = None) -> bool:
    """ARN matching: six parts, each on its own; a trailing `*` of a short pattern takes the rest."""
    if pattern == "*":
        return True
    wanted, actual = pattern.split(":", 5), arn.split(":", 5)
    if len(wanted) < 6:
        if not wanted[-1].endswith("*") or len(actual) < len(wanted):
            return False
        actual = [*actual[: len(wanted) - 1], ":".join(actual[len(wanted) - 1 :])]
    elif len(actual) != 6:
        return False
    return all(_like(p, a, request) for p, a in zip(wanted, actual, strict=True))


# ---- statements --------------------------------------------------------------------------


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _element(statement: Mapping[str, Any], name: str, matches: Any) -> bool:
    """Action/NotAction or Resource/NotResource."""
    if name in statement:
        return any(matches(p) for p in _listed(statement[name]))
    if f"Not{name}" in statement:
        return not any(matches(p) for p in _listed(statement[f"Not{name}"]))
    raise UnsupportedError(f"statement {statement.get('Sid', '')!r} has neither {name} nor Not{name}")


def _principal(statement: Mapping[str, Any], request: Request) -> bool:
    if "NotPrincipal" in statement:
        raise UnsupportedError("NotPrincipal")
    principal = statement.get("Principal")
    if principal is None:
        raise UnsupportedError("a resource policy statement without Principal")
    if principal == "*":
        return True
    for kind, names in principal.items():
        for name in _listed(names):
            if kind == "Service":
                if name == request.service:
                    return True
            elif kind == "AWS" and (name == "*" or (name.startswith("arn:") and not name.endswith(":root"))):
                if name in ("*", request.principal):
                    return True
            else:  # an account delegates to its identity policies: not modelled
                raise UnsupportedError(f"principal {kind}: {name}")
    return False


_STRING = {"StringEquals": (False, False), "StringEqualsIgnoreCase": (False, True), "StringLike": (True, False)}
_NEGATED = {f"{name.replace('String', 'StringNot', 1)}": name for name in _STRING} | {"ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike"}


def _one_value(operator: str, wanted: str, value: str, request: Request) -> bool:
    if operator in _STRING:
        wildcards, ignore_case = _STRING[operator]
        return _like(wanted, value, request, wildcards, ignore_case)
    if operator in ("ArnEquals", "ArnLike"):
        return arn_matches(wanted, value, request)
    if operator == "Bool":
        return wanted.lower() == value.lower()
    raise UnsupportedError(f"condition operator {operator}")


def _condition(full_operator: str, key: str, wanted: list[str], request: Request) -> bool:
    qualifier, _, operator = full_operator.rpartition(":")
    value = request.value(key)
    if operator == "Null":
        return all((value is None) == (w.lower() == "true") for w in wanted)
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    base = _NEGATED.get(operator, operator)
    negated = base != operator

    def holds(one: str) -> bool:
        matched = any(_one_value(base, w, one, request) for w in wanted)
        return not matched if negated else matched

    if value is None:
        return if_exists or qualifier == "ForAllValues" or (negated and qualifier == "")
    values = _listed(value)
    if qualifier == "ForAllValues":
        return all(holds(v) for v in values)
    if qualifier == "ForAnyValue":
        return any(holds(v) for v in values)
    if qualifier or len(values) != 1:
        raise UnsupportedError(f"{full_operator} on {key} with {len(values)} values: use ForAllValues or ForAnyValue")
    return holds(values[0])


def _conditions(statement: Mapping[str, Any], request: Request) -> bool:
    return all(
        _condition(operator, key, [str(w) for w in _listed(wanted)], request)
        for operator, block in (statement.get("Condition") or {}).items()
        for key, wanted in block.items()
    )


def _applies(statement: Mapping[str, Any], request: Request, resource_policy: bool) -> bool:
    if statement.get("Effect") not in ("Allow", "Deny"):
        raise UnsupportedError(f"Effect {statement.get('Effect')!r}")
    if resource_policy and not _principal(statement, request):
        return False
    return (
        _element(statement, "Action", lambda p: action_matches(p, request.action))
        and _element(statement, "Resource", lambda p: arn_matches(p, request.resource, request))
        and _conditions(statement, request)
    )


def _statements(document: Document) -> list[Mapping[str, Any]]:
    return [s for s in _listed(document.get("Statement", [])) if isinstance(s, Mapping)]


def decide(request: Request, identity: Sequence[Document] = (), resource_policy: Document | None = None) -> Decision:
    """The decision for one request by a principal holding `identity` on a resource with
    `resource_policy`, both in one account (no boundaries, SCPs or session policies)."""
    applicable = [(s, False) for d in identity for s in _statements(d)]
    applicable += [(s, True) for s in _statements(resource_policy or {})]
    effects = {s["Effect"] for s, is_resource in applicable if _applies(s, request, is_resource)}
    if "Deny" in effects:
        return Decision.EXPLICIT_DENY
    return Decision.ALLOW if "Allow" in effects else Decision.IMPLICIT_DENY


def allowed(request: Request, identity: Sequence[Document] = (), resource_policy: Document | None = None) -> bool:
    return decide(request, identity, resource_policy) is Decision.ALLOW
