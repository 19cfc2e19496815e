"""Whether several GitHub Apps can stand in for one another. Pure: `estate doctor` and the tests
read each App's installation on the org (GithubClient.app_installations) and ask this.

The control plane spreads its calls over the Apps and fails over between them on a rate limit
(lambda_src/github/client.py), so every App must be able to make every call: installed on the
org, granted at least what the control plane needs, and granted the same as the others (an App
with fewer permissions or fewer repositories fails the calls that land on it, at random).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The one list of what the estate asks of its GitHub App(s), by installation permission, as GitHub
# names them (docs/deploy.md, step 1); `estate doctor` and the several-Apps check both read it.
# Without a required one the control plane fails: (level, what needs it). Runner groups need no
# `administration`: GitHub's runner-group endpoints take `organization_self_hosted_runners`.
REQUIRED_PERMISSIONS: Mapping[str, tuple[str, str]] = {
    "organization_self_hosted_runners": ("write", "JIT runner configs, listing and deleting runners, the runner groups"),
    "actions": ("read", "the reconciler's job and run lookups"),
    "metadata": ("read", "repository ids for the runner groups"),
    "organization_hooks": ("write", "the org `workflow_job` webhook and its deliveries, which `pulumi up` manages and redelivery reads"),
}
# Without a wanted one, one feature stops and the rest works: (level, what stops).
WANTED_PERMISSIONS: Mapping[str, tuple[str, str]] = {
    "actions": ("write", "jobs whose spot host was interrupted are not re-run"),
}


def wanted_level(permission: str) -> str | None:
    """The level the estate would use at most (None: it does not use the permission)."""
    levels = [table[permission][0] for table in (REQUIRED_PERMISSIONS, WANTED_PERMISSIONS) if permission in table]
    return max(levels, key=lambda level: _LEVELS[level]) if levels else None


_LEVELS = {"read": 1, "write": 2, "admin": 3}

Finding = tuple[str, str]  # ("ok" | "warn" | "fail", detail), as `estate doctor` prints them


def _grants(granted: Mapping[str, Any], permission: str, level: str) -> bool:
    return _LEVELS.get(str(granted.get(permission, "")), 0) >= _LEVELS[level]


def installation_findings(installations: Mapping[int, Mapping[str, Any] | None]) -> list[Finding]:
    """One finding per problem (or one "ok"), App by App in the order given, the first App
    being the reference the others must match."""
    findings: list[Finding] = []
    reference: tuple[int, Mapping[str, Any]] | None = None
    for app_id, found in installations.items():
        if found is None:
            findings.append(("fail", f"App {app_id} is not installed on the organisation: install it with the same permissions"))
            continue
        granted = found.get("permissions") or {}
        for permission, (level, _) in REQUIRED_PERMISSIONS.items():
            if not _grants(granted, permission, level):
                have = granted.get(permission, "none")
                findings.append(("fail", f"App {app_id} has {permission}: {have}; the control plane needs {level}"))
        for permission, (level, lost) in WANTED_PERMISSIONS.items():
            if not _grants(granted, permission, level):
                findings.append(("warn", f"App {app_id} has {permission}: {granted.get(permission, 'none')}, not {level}: {lost}"))
        if reference is None:
            reference = (app_id, found)
            continue
        first_id, first = reference
        theirs = first.get("permissions") or {}
        differ = sorted(k for k in set(granted) | set(theirs) if granted.get(k) != theirs.get(k))
        if differ:
            detail = ", ".join(f"{k}: {granted.get(k, 'none')} (App {first_id}: {theirs.get(k, 'none')})" for k in differ)
            findings.append(("fail", f"App {app_id} is not installed with App {first_id}'s permissions: {detail}"))
        if found.get("repository_selection") != first.get("repository_selection"):
            findings.append(
                (
                    "fail",
                    f"App {app_id} sees {found.get('repository_selection')} repositories, App {first_id}"
                    f" {first.get('repository_selection')}: calls landing on one would not see what the other does",
                )
            )
    if not findings:
        count = len(installations)
        findings.append(("ok", f"{count} App{'s' if count != 1 else ''} installed with the same permissions"))
    return findings
