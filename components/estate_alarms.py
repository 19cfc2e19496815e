"""EstateAlarms: what the estate's own metrics (lambda_src/core/metric_catalog.py) should wake
someone for, per pool and for the whole stack. Every alarm notifies the alarm topic under a
stable physical name (components/alarms.py); docs/runbook.md has a section for each.

Per pool: jobs waiting past its `estate.wait_alarm_minutes`, launches failing, its caps holding
jobs back; per capacity-block pool: a block ending with jobs still running, a faulty GPU; for
the stack: the spend rate above the budget's alarm (when the stack has a budget)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.alarms import alarm_name, metric_alarm
from lambda_src.core.metric_catalog import NAMESPACE
from lambda_src.core.tags import POOL

AT_CAP_MINUTES = 15  # a cap holding jobs back this long is worth a look (a burst is not)
LAUNCH_FAILURE_WINDOWS = 2  # consecutive 5-minute windows with a failed launch
SPEND_RATE_HOURS = 3  # hours the spend rate stays above the alarm's rate


@dataclass(frozen=True)
class AlarmedPool:
    name: str
    capacity_block: bool
    wait_alarm_s: int


@dataclass(frozen=True)
class EstateAlarmsArgs:
    environment: str
    pools: Sequence[AlarmedPool]
    topic_arn: pulumi.Input[str]
    tags: dict[str, str]
    spend_alarm_usd_per_hour: float | None = None  # from the stack's budget; none: no spend-rate alarm


# (label suffix, metric, statistic, period, periods, threshold, what) per pool; the threshold of
# "jobs-waiting" is the pool's own.
def pool_alarms(pool: AlarmedPool) -> list[tuple[str, str, str, int, int, float, str]]:
    found = [
        ("jobs-waiting", "oldest_wait", "Maximum", 60, 2, float(pool.wait_alarm_s),
         f"a job of pool {pool.name} has waited over {pool.wait_alarm_s // 60} min for a runner"),
        ("launch-failures", "launch_failures", "Sum", 300, LAUNCH_FAILURE_WINDOWS, 0.0,
         f"launching for pool {pool.name} failed in {LAUNCH_FAILURE_WINDOWS} consecutive 5-minute windows"),
    ]  # fmt: skip
    if pool.capacity_block:
        found += [
            ("block-ending-busy", "block_overran", "Maximum", 60, 1, 0.0,
             f"a capacity block of pool {pool.name} ends with jobs still running on it"),
            ("faulty-gpu", "slots_faulty", "Maximum", 300, 1, 0.0, f"a slot of pool {pool.name} left rotation: an unhealthy GPU"),
        ]  # fmt: skip
    else:
        found.append(
            ("at-cap", "at_cap", "Minimum", 300, AT_CAP_MINUTES // 5, 0.0,
             f"pool {pool.name} has been at its cap for {AT_CAP_MINUTES} min with jobs waiting")
        )  # fmt: skip
    return found


class EstateAlarms(pulumi.ComponentResource):
    def __init__(self, name: str, args: EstateAlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:EstateAlarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        env = args.environment
        for pool in args.pools:
            for label, metric, stat, period, periods, threshold, what in pool_alarms(pool):
                metric_alarm(
                    f"{name}-{pool.name}-{label}",
                    name=alarm_name(env, f"{pool.name}-{label}"),
                    topic_arn=args.topic_arn,
                    alarm_description=f"runner-estate {env}: {what} (runbook: {label})",
                    namespace=NAMESPACE,
                    metric_name=metric,
                    dimensions={"environment": env, "pool": pool.name},
                    statistic=stat,
                    period=period,
                    evaluation_periods=periods,
                    threshold=threshold,
                    comparison_operator="GreaterThanThreshold",
                    treat_missing_data="notBreaching",
                    tags={**args.tags, POOL: pool.name},
                    opts=child,
                )
        if args.spend_alarm_usd_per_hour is not None:
            rate = args.spend_alarm_usd_per_hour
            sources = [("hosts", "reconcile"), ("blocks", "cb_manager")]
            metric_alarm(
                f"{name}-spend-rate",
                name=alarm_name(env, "spend-rate"),
                topic_arn=args.topic_arn,
                alarm_description=f"runner-estate {env}: hosts and capacity blocks cost over ${rate:g}/hour for {SPEND_RATE_HOURS} hours"
                " (runbook: spend-rate)",
                metric_queries=[
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="spend", expression="FILL(hosts, 0) + FILL(blocks, 0)", label="USD per hour", return_data=True
                    ),
                    *(
                        aws.cloudwatch.MetricAlarmMetricQueryArgs(
                            id=query_id,
                            return_data=False,
                            metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                                namespace=NAMESPACE,
                                metric_name="spend_rate",
                                dimensions={"environment": env, "function": function},
                                stat="Average",
                                period=3600,
                            ),
                        )
                        for query_id, function in sources
                    ),
                ],
                evaluation_periods=SPEND_RATE_HOURS,
                threshold=rate,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
                tags=args.tags,
                opts=child,
            )
        self.register_outputs({})
