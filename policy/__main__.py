"""The Pulumi policy pack: `pulumi preview --policy-pack policy` (see PulumiPolicy.yaml).

Only wiring: each rule of policy/rules.py becomes a ResourceValidationPolicy, each stack rule a
StackValidationPolicy. Tests import policy.rules, `validator` and `stack_validator`, never this
module's pack (building it starts a server)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from policy.rules import RULES, STACK_RULES, Rule, StackResource, StackRule


def validator(rule: Rule) -> Any:
    def validate(args: Any, report_violation: Any) -> None:
        for message in rule.check(args.resource_type, args.props):
            report_violation(message, None)

    return validate


def plain(value: Any) -> Any:
    """Properties as plain data, a value not known yet (during preview) as None, so one unknown
    id does not stop a stack rule from judging the rest."""
    if isinstance(value, Mapping):
        found = {}
        for key in value:
            try:
                found[key] = plain(value[key])
            except UnknownValueError:
                found[key] = None
        return found
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i]))
            except UnknownValueError:
                items.append(None)
        return items
    return value


def stack_validator(rule: StackRule) -> Any:
    def validate(args: Any, report_violation: Any) -> None:
        resources = [
            StackResource(
                r.resource_type,
                r.name,
                r.urn,
                plain(r.props),
                {key: [d.urn for d in deps] for key, deps in r.property_dependencies.items()},
            )
            for r in args.resources
        ]
        for resource, message in rule.check(resources):
            report_violation(message, resource.urn)

    return validate


def _level(mandatory: bool) -> EnforcementLevel:
    return EnforcementLevel.MANDATORY if mandatory else EnforcementLevel.ADVISORY


if __name__ == "__main__":
    PolicyPack(
        name="runner-estate-security",
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=[
            ResourceValidationPolicy(
                name=rule.name,
                description=rule.description,
                validate=validator(rule),
                enforcement_level=_level(rule.mandatory),
            )
            for rule in RULES
        ]
        + [
            StackValidationPolicy(
                name=rule.name, description=rule.description, validate=stack_validator(rule), enforcement_level=_level(rule.mandatory)
            )
            for rule in STACK_RULES
        ],
    )
