"""Everything the program checks and derives from a stack and its pools before it registers the
first resource, in one place: the Pulumi program (`__main__.py`), `estate preview` and
`estate validate --stack` call it, so they refuse the same things and report the same warnings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from estate.config.diagnostics import ConfigError, ConfigWarning
from estate.config.loader import Estate
from estate.config.names import check_names
from estate.config.stack_config import NAMESPACE, StackConfig, check_unique_environment, stack_warnings
from estate.derive.images import ImagePlan, plan_images
from estate.derive.runner_groups import RunnerGroupPlan, plan_runner_groups
from estate.derive.spot_role import SpotRolePlan, plan_spot_role


@dataclass(frozen=True)
class StackPlan:
    groups: list[RunnerGroupPlan]
    spot_role: SpotRolePlan
    images: ImagePlan
    warnings: tuple[ConfigWarning, ...]  # the stack's, the pools', the groups', the images', the names': every config warning


def plan_stack(stack: StackConfig, estate: Estate, project_dir: Path, stack_name: str) -> StackPlan:
    """Check `stack` (the project's stack `stack_name`) with `estate`; ConfigError on the first
    problem, else the plans and every warning."""
    stack_file = f"Pulumi.{stack_name}.yaml"
    if stack.github.installation_id is None:
        message = "required: the org's webhook and runner groups are managed with the App's installation"
        raise ConfigError(stack_file, None, f"{NAMESPACE}:github.installation_id", message)
    check_unique_environment(project_dir, stack_name, stack.environment)
    groups, group_warnings = plan_runner_groups(stack, estate, stack_file)
    spot_role, spot_warnings = plan_spot_role(stack, estate, stack_file)
    # Which image each pool boots, and the images to build; a pool that cannot boot its image stops here.
    images, image_warnings = plan_images(stack, estate, stack_file)
    # Every physical name within its service's limit, before anything is registered.
    name_warnings = check_names(stack, estate, stack_file)
    warnings = (*stack_warnings(stack, stack_file), *estate.warnings, *group_warnings, *spot_warnings, *image_warnings, *name_warnings)
    return StackPlan(groups, spot_role, images, warnings)
