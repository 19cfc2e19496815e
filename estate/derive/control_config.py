"""Compile the control plane's settings (lambda_src/core/settings.py) from validated config.

One place decides how runner-config keys become scaler behaviour; the ScalerFunctions
component, `estate serve` and the tests all call it, with deploy-time ids filled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from estate.config.loader import Estate
from estate.config.pool import Pool
from estate.config.prices import PriceError, PriceTable
from estate.config.stack_config import StackConfig, app_key_parameter
from estate.derive.runner_groups import pool_admission
from lambda_src.core.gpu_slots import slot_labels
from lambda_src.core.settings import AppSettings, ControlPlaneSettings, IdleWindow, PoolSettings, PoolWindow

# Upstream's default when `minimum_running_time_in_minutes` is unset (Linux runners).
DEFAULT_MINIMUM_RUNNING_MINUTES = 5


def jit_parameter_prefix(environment: str) -> str:
    return f"/runner-estate/{environment}/jit/"


def pool_settings(
    pool: Pool,
    launch_template_id: str = "",
    subnet_ids: Sequence[str] = (),
    queue_url: str = "",
    *,
    events_queue_arn: str = "",
    reports_queue_arn: str = "",
    security_group_ids: Sequence[str] = (),
    public_ip: bool = False,
    image_parameter: str = "",
) -> PoolSettings:
    rc, limits = pool.runner, pool.spec.estate.hard_limits
    cap = rc.runners_maximum_count if limits.max_instances is None else min(rc.runners_maximum_count, limits.max_instances)
    minimum = rc.minimum_running_time_in_minutes
    return PoolSettings(
        name=pool.name,
        capacity_type=pool.capacity_type,
        instance_types=tuple(t.name for t in pool.instance_types),
        labels=pool.base_labels,
        runner_group=pool.runner_group,
        max_instances=cap,
        allocation_strategy=rc.instance_allocation_strategy,
        max_spot_price=rc.instance_max_spot_price,
        failover_errors=tuple(rc.enable_on_demand_failover_for_errors),
        name_prefix=rc.runner_name_prefix,
        minimum_running_s=60 * (DEFAULT_MINIMUM_RUNNING_MINUTES if minimum is None else minimum),
        boot_timeout_s=60 * rc.runner_boot_time_in_minutes,
        idle_windows=tuple(IdleWindow(w.cron, w.timeZone, w.idleCount, w.evictionStrategy) for w in rc.idle_config),
        pool_windows=tuple(PoolWindow(w.schedule_expression, w.schedule_expression_timezone, w.size) for w in rc.pool_config),
        launch_template_id=launch_template_id,
        subnet_ids=tuple(subnet_ids),
        queue_url=queue_url,
        max_hourly_usd=limits.max_hourly_usd,
        host_hourly_usd=host_hourly_usd(pool),
        hourly_usd=expected_hourly_usd(pool),
        host_gpus=max(t.gpu_count for t in pool.instance_types),
        max_jobs_per_host=reuse.max_jobs if (reuse := pool.spec.estate.reuse_hosts) is not None else 1,
        max_lifetime_s=60 * (pool.max_lifetime_minutes or 0),
        keeps_volumes=any(not disk.delete_on_termination for disk in rc.block_device_mappings),
        job_timeout_s=60 * pool.job_timeout_minutes,
        image_parameter=image_parameter,
        warm=pool.warm_settings,
        **capacity_block_settings(pool),
        events_queue_arn=events_queue_arn,
        reports_queue_arn=reports_queue_arn,
        security_group_ids=tuple(security_group_ids),
        public_ip=public_ip,
    )


def capacity_block_settings(pool: Pool) -> dict[str, Any]:
    """What the capacity-block manager needs of a pool: its slots, longest job and blocks."""
    block, layout = pool.spec.estate.capacity_block, pool.slot_layout
    if block is None or layout is None:
        return {}
    return {
        "gpus_per_node": pool.gpus_per_node,
        "slot_gpus": tuple(g.gpus for g in layout.groups for _ in range(g.count)),
        "slot_labels": tuple(slot_labels(layout, pool.gpu_labels)),
        "reservation_ids": tuple(block.reservation_ids),
        "renew": block.renew,
        "renew_max_price_usd": block.max_price_usd,
        "renew_duration_hours": block.duration_hours,
        "renew_instance_count": block.instance_count,
        "efa": block.efa,
    }


def host_hourly_usd(pool: Pool) -> float:
    """What one host of the pool can cost an hour at most: its dearest type, on-demand (spot
    can fail over to it). 0 when a type has no price; `Pool.check` refuses that when a
    `max_hourly_usd` depends on it."""
    prices = PriceTable()
    try:
        return max(prices.hourly(t.name, "on-demand") for t in pool.instance_types)
    except PriceError:
        return 0.0


def expected_hourly_usd(pool: Pool) -> float:
    """What one host-hour of the pool is expected to cost in its own market (spot, on-demand or
    the capacity block's rate), averaged over its types: the price per-job costs and the spend
    rate use. 0 when a type has no price (costs then read 0; `prices --refresh` fetches one)."""
    prices = PriceTable()
    try:
        found = [prices.hourly(t.name, pool.capacity_type) for t in pool.instance_types]
    except PriceError:
        return 0.0
    return round(sum(found) / len(found), 6)


def control_settings(
    stack: StackConfig,
    estate: Estate,
    *,
    table_name: str,
    pools: Mapping[str, PoolSettings],
    api_url: str | None = None,
) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        environment=stack.environment,
        region=stack.region,
        org=stack.github.org,
        app_id=stack.github.app_id,
        installation_id=stack.github.installation_id,
        webhook_id=stack.github.webhook_id,
        warm_ebs_budget_gib=stack.warm_pools.ebs_budget_gib,
        more_apps=tuple(AppSettings(a.app_id, app_key_parameter(stack, a.app_id), a.installation_id) for a in stack.github.extra_apps),
        api_url=api_url or stack.github.api_url,
        table_name=table_name,
        webhook_secret_parameter=stack.secrets.webhook_secret,
        app_key_parameter=stack.secrets.github_app_private_key,
        jit_parameter_prefix=jit_parameter_prefix(stack.environment),
        pools=dict(pools),
        routing=estate.routing_table(pool_admission(stack, estate)),
    )
