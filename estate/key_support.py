"""Which accepted config keys we do not act on, and why: the one list `validate` reports from.

A key that is absent here is acted on. When a later piece of the estate starts reading a
key, it comes off this list in the same change.
"""

from __future__ import annotations

from collections.abc import Mapping

SCALER_PENDING = "accepted; read by the scaler, which is not built yet"
NO_FIXED_DELAY = "not honoured: the scaler decides when the event arrives and reconciles, with no fixed delay"
ALWAYS_EPHEMERAL = "not honoured: runners are always ephemeral JIT registrations (one job, then gone)"
OWN_USER_DATA = "not honoured: hosts run our user-data, which starts a JIT runner; a custom script is not run"
ALWAYS_ORG = "not honoured: runners are always registered at organisation level"
GITHUB_PENDING = "accepted; read by the GitHub org settings, which are not built yet"
HOST_PENDING = "accepted; read by the host bootstrap, which is not built yet"
CAPACITY_BLOCK_PENDING = "accepted; read by the capacity-block manager, which is not built yet"
NOT_YET = "accepted but not acted on yet"

# runner_config keys, and top-level keys prefixed with their section.
UNACTED_KEYS: Mapping[str, str] = {
    "fifo": SCALER_PENDING,
    "redrive_build_queue": SCALER_PENDING,
    "runner_config.runners_maximum_count": SCALER_PENDING,
    "runner_config.instance_allocation_strategy": SCALER_PENDING,
    "runner_config.instance_max_spot_price": SCALER_PENDING,
    "runner_config.enable_on_demand_failover_for_errors": SCALER_PENDING,
    "runner_config.minimum_running_time_in_minutes": SCALER_PENDING,
    "runner_config.runner_boot_time_in_minutes": SCALER_PENDING,
    "runner_config.idle_config": SCALER_PENDING,
    "runner_config.pool_config": SCALER_PENDING,
    "runner_config.scale_down_schedule_expression": SCALER_PENDING,
    "runner_config.job_queue_retention_in_seconds": SCALER_PENDING,
    "runner_config.scale_up_reserved_concurrent_executions": SCALER_PENDING,
    "runner_config.runner_name_prefix": SCALER_PENDING,
    "runner_config.runner_run_as": HOST_PENDING,
    "estate.hard_limits": SCALER_PENDING,
    "estate.capacity_block.reservation_ids": CAPACITY_BLOCK_PENDING,
    "estate.capacity_block.purchase": CAPACITY_BLOCK_PENDING,
    "estate.capacity_block.max_price_usd": CAPACITY_BLOCK_PENDING,
    "estate.capacity_block.duration_hours": CAPACITY_BLOCK_PENDING,
    "estate.capacity_block.instance_count": CAPACITY_BLOCK_PENDING,
    "runner_config.delay_webhook_event": NO_FIXED_DELAY,
    "runner_config.enable_job_queued_check": NO_FIXED_DELAY,
    "runner_config.enable_ephemeral_runners": ALWAYS_EPHEMERAL,
    "runner_config.enable_jit_config": ALWAYS_EPHEMERAL,
    "runner_config.userdata_template": OWN_USER_DATA,
    "runner_config.userdata_pre_install": OWN_USER_DATA,
    "runner_config.userdata_post_install": OWN_USER_DATA,
    "runner_config.enable_userdata": OWN_USER_DATA,
    "runner_config.runner_as_root": OWN_USER_DATA,
    "runner_config.enable_organization_runners": ALWAYS_ORG,
    "runner_config.pool_runner_owner": ALWAYS_ORG,
    "runner_config.runner_group_name": GITHUB_PENDING,
    "estate.runner_group": GITHUB_PENDING,
    "estate.allow_public_repositories": GITHUB_PENDING,
    "runner_config.create_service_linked_role_spot": NOT_YET,
    "runner_config.enable_runner_binaries_syncer": NOT_YET,
    "runner_config.disable_runner_autoupdate": NOT_YET,
    "runner_config.cloudwatch_config": NOT_YET,
    "runner_config.ami_id_ssm_parameter_name": NOT_YET,
    "runner_config.ami_kms_key_arn": NOT_YET,
}

# Values that ask for what the estate does anyway: setting them is not worth a warning.
MATCHING_VALUES: Mapping[str, object] = {
    "runner_config.enable_ephemeral_runners": True,
    "runner_config.enable_jit_config": True,
    "runner_config.enable_userdata": True,
    "runner_config.enable_organization_runners": True,
    "runner_config.delay_webhook_event": 0,
}
