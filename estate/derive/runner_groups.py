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
            warnings.append(
                pool.warning(
                    "estate.runner_group", "runner group Default is not managed here: every repository it admits can use this pool"
                )
            )
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
