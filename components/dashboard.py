"""Dashboard: the environment's CloudWatch dashboard, its body built by estate/derive/dashboard.py.

A dashboard cannot carry tags (PutDashboard has none), so it is the one billable resource
without the cost-allocation tags; it costs $3 a month (docs/observability.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from estate.derive.dashboard import dashboard_name


@dataclass(frozen=True)
class DashboardArgs:
    environment: str
    body: dict[str, Any]  # estate.derive.dashboard.dashboard_body


class Dashboard(pulumi.ComponentResource):
    dashboard_name: pulumi.Output[str]

    def __init__(self, name: str, args: DashboardArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:Dashboard", name, None, opts)
        board = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=dashboard_name(args.environment),
            dashboard_body=json.dumps(args.body, sort_keys=True),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_name = board.dashboard_name
        self.register_outputs({"dashboard_name": self.dashboard_name})
