"""Whether this stack creates the account's Spot service-linked role: one decision, pure.

EC2 needs the role `AWSServiceRoleForEC2Spot` (service `spot.amazonaws.com`) before any Spot
launch. It exists once per account, and creating it when it exists fails, so nothing creates
it unless asked: the stack's `create_service_linked_role_spot` decides when it is set, else
any pool's upstream key `runner_config.create_service_linked_role_spot: true` asks for it
(once, however many pools ask).
"""

from __future__ import annotations

from dataclasses import dataclass

from estate.config.diagnostics import ConfigWarning
from estate.config.loader import Estate
from estate.config.stack_config import NAMESPACE, StackConfig

STACK_KEY = f"{NAMESPACE}:create_service_linked_role_spot"
POOL_KEY = "runner_config.create_service_linked_role_spot"


@dataclass(frozen=True)
class SpotRolePlan:
    create: bool
    asked_by: tuple[str, ...]  # pools whose files ask for the role
    spot_pools: tuple[str, ...]  # pools that launch spot, which need it to exist


def plan_spot_role(stack: StackConfig, estate: Estate, stack_file: str) -> tuple[SpotRolePlan, list[ConfigWarning]]:
    asked = tuple(p.name for p in estate.pools if p.runner.create_service_linked_role_spot)
    spot = tuple(p.name for p in estate.pools if p.capacity_type == "spot")
    warnings: list[ConfigWarning] = []
    if stack.create_service_linked_role_spot is None:
        return SpotRolePlan(bool(asked), asked, spot), warnings
    if not stack.create_service_linked_role_spot and asked:
        message = f"false: the stack does not create the account-wide Spot role that pools {', '.join(asked)} ask for ({POOL_KEY})"
        warnings.append(ConfigWarning(stack_file, None, STACK_KEY, message))
    return SpotRolePlan(stack.create_service_linked_role_spot, asked, spot), warnings
