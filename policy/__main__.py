"""The Pulumi policy pack: `pulumi preview --policy-pack policy` (see PulumiPolicy.yaml).

Only wiring: each rule of policy/rules.py becomes a ResourceValidationPolicy. Tests import
policy.rules and `validator`, never this module's pack (building it starts a server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy

from policy.rules import RULES, Rule


def validator(rule: Rule) -> Any:
    def validate(args: Any, report_violation: Any) -> None:
        for message in rule.check(args.resource_type, args.props):
            report_violation(message, None)

    return validate


if __name__ == "__main__":
    PolicyPack(
        name="runner-estate-security",
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=[
            ResourceValidationPolicy(
                name=rule.name,
                description=rule.description,
                validate=validator(rule),
                enforcement_level=EnforcementLevel.MANDATORY if rule.mandatory else EnforcementLevel.ADVISORY,
            )
            for rule in RULES
        ],
    )
