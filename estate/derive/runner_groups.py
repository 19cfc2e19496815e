"""Which org runner groups the estate manages, and who may use them: one decision, pure.

A pool registers its runners into `estate.runner_group` (or upstream's `runner_group_name`).
Every group other than GitHub's built-in `Default` must be declared in the stack's
`runner_groups` with the repositories allowed to use it. A group admits public repositories
only when every pool in it says `estate.allow_public_repositories: true`.
"""

from __future__ import annotations

from dataclasses import dataclass

from estate.config.diagnostics import ConfigError, ConfigWarning
from estate.config.loader import Estate
from estate.config.stack_config import StackConfig
from lambda_src.core.routing import Admission

DEFAULT_GROUP = "Default"


@dataclass(frozen=True)
class RunnerGroupPlan:
    name: str
    pools: tuple[str, ...]
    repositories: tuple[str, ...]
    workflows: tuple[str, ...]
    allows_public_repositories: bool


def plan_runner_groups(stack: StackConfig, estate: Estate, stack_file: str) -> tuple[list[RunnerGroupPlan], list[ConfigWarning]]:
    if DEFAULT_GROUP in stack.runner_groups:
        raise ConfigError(
            stack_file, None, f"runner-estate:runner_groups.{DEFAULT_GROUP}", "GitHub's built-in group cannot be managed here"
        )
    members: dict[str, list[str]] = {}
    warnings: list[ConfigWarning] = []
    for pool in estate.pools:
        group = pool.runner_group
        if group == DEFAULT_GROUP:
            # Left there by default (upstream's runner_group_name), it is worth a word; named in
            # our own `estate.runner_group: Default`, it is the file's stated choice.
            if pool.spec.estate.runner_group != DEFAULT_GROUP:
                message = "runner group Default is not managed here: every repository it admits can use this pool"
                warnings.append(pool.warning("estate.runner_group", f"{message} (say estate.runner_group: Default to choose it)"))
            continue
        if group not in stack.runner_groups:
            key = "estate.runner_group" if pool.spec.estate.runner_group else "runner_config.runner_group_name"
            raise pool.error(key, f"runner group {group!r} is not declared in runner-estate:runner_groups of {stack_file}")
        members.setdefault(group, []).append(pool.name)
    plans = []
    for name, settings in sorted(stack.runner_groups.items()):
        pools = members.get(name, [])
        if not pools:
            warnings.append(ConfigWarning(stack_file, None, f"runner-estate:runner_groups.{name}", "no pool registers into this group"))
        public = bool(pools) and all(estate.pool(p).spec.estate.allow_public_repositories for p in pools)
        plans.append(RunnerGroupPlan(name, tuple(pools), tuple(settings.repositories), tuple(settings.workflows), public))
    return plans, warnings


def pool_admission(stack: StackConfig, estate: Estate) -> dict[str, Admission]:
    """Each pool's runner-group policy, compiled into the routing table so the control plane
    launches only for jobs GitHub would give its runners: the group's repositories (as
    OWNER/NAME) and workflows, and public repositories only where every pool of the group
    allows them (as `plan_runner_groups` configures the group). A pool in the unmanaged
    `Default` group (or in a group the stack does not declare, which `plan_runner_groups`
    refuses at deploy) admits any repository of the org, public ones only when it says so."""
    org = stack.github.org.lower()
    members: dict[str, list[str]] = {}
    for pool in estate.pools:
        members.setdefault(pool.runner_group, []).append(pool.name)
    found: dict[str, Admission] = {}
    for pool in estate.pools:
        group = pool.runner_group
        settings = stack.runner_groups.get(group) if group != DEFAULT_GROUP else None
        if settings is None:
            found[pool.name] = Admission(group, None, (), pool.spec.estate.allow_public_repositories)
            continue
        public = all(estate.pool(p).spec.estate.allow_public_repositories for p in members[group])
        repos = frozenset(f"{org}/{repo.lower()}" for repo in settings.repositories)
        found[pool.name] = Admission(group, repos, tuple(settings.workflows), public)
    return found
