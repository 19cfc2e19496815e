"""StackBudget: the stack's AWS Budget (monthly cost, USD), notifying the alarm topic (and the
budget's own email addresses) at 80 % and 100 % of actual spend and 100 % of forecast spend.

By default it counts the costs tagged `runner-estate:environment=<env>`: that tag is a
user-defined cost-allocation tag, which must be activated once per account (Billing console,
or `aws ce update-cost-allocation-tags-status`) before any cost carries it; until then such a
budget reads $0. `scope: account` counts the whole account instead. AWS Budgets: the first two
budgets of an account are free, then $0.02 a day each (docs/observability.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from estate.config.stack_config import BudgetSettings
from lambda_src.core.tags import ENVIRONMENT

# (notification type, percent of the limit)
NOTIFICATIONS = (("ACTUAL", 80.0), ("ACTUAL", 100.0), ("FORECASTED", 100.0))


def budget_name(environment: str) -> str:
    return f"runner-estate-{environment}"


def cost_filter(environment: str) -> str:
    """Budgets' TagKeyValue filter: `user:<key>$<value>` for a user-defined tag."""
    return f"user:{ENVIRONMENT}${environment}"


@dataclass(frozen=True)
class StackBudgetArgs:
    environment: str
    settings: BudgetSettings
    topic_arn: pulumi.Input[str]
    tags: dict[str, str]


class StackBudget(pulumi.ComponentResource):
    def __init__(self, name: str, args: StackBudgetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:StackBudget", name, None, opts)
        s = args.settings
        aws.budgets.Budget(
            f"{name}-budget",
            name=budget_name(args.environment),
            budget_type="COST",
            limit_amount=f"{s.monthly_usd:.2f}",
            limit_unit="USD",
            time_unit="MONTHLY",
            cost_filters=[aws.budgets.BudgetCostFilterArgs(name="TagKeyValue", values=[cost_filter(args.environment)])]
            if s.scope == "environment"
            else None,
            notifications=[
                aws.budgets.BudgetNotificationArgs(
                    comparison_operator="GREATER_THAN",
                    notification_type=kind,
                    threshold=percent,
                    threshold_type="PERCENTAGE",
                    subscriber_sns_topic_arns=[args.topic_arn],
                    subscriber_email_addresses=list(s.emails) or None,
                )
                for kind, percent in NOTIFICATIONS
            ],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
