"""Which accepted config keys we do not act on, and why: the one list `validate` reports from.

A key that is absent here is acted on. When a later piece of the estate starts reading a
key, it comes off this list in the same change.
"""

from __future__ import annotations

from collections.abc import Mapping

ONE_SCALE_DOWN = "not honoured: one scale-down cycle, every minute, serves every pool"
LEDGER_DEDUPLICATES = "not needed: the ledger stores each job once, so pool queues are standard SQS"
NO_FIXED_DELAY = "not honoured: the scaler decides when the event arrives and reconciles, with no fixed delay"
ALWAYS_EPHEMERAL = "not honoured: runners are always ephemeral JIT registrations (one job, then gone)"
OWN_USER_DATA = "not honoured: hosts run our user-data, which starts a JIT runner; a custom script is not run"
ALWAYS_ORG = "not honoured: runners are always registered at organisation level"
NOT_YET = "accepted but not acted on yet"

# runner_config keys, and top-level keys prefixed with their section.
UNACTED_KEYS: Mapping[str, str] = {
    "fifo": LEDGER_DEDUPLICATES,
    "runner_config.scale_down_schedule_expression": ONE_SCALE_DOWN,
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
