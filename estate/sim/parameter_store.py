"""What runner configs cost in SSM Parameter Store, for `estate simulate`.

Each one-job runner config is an SSM SecureString (lambda_src/aws/jit_parameters.py). GitHub's
`encoded_jit_config` is longer than the 4,096 characters a Standard parameter holds, so every
config is an Advanced parameter, which AWS bills in two parts (AWS Systems Manager pricing,
Parameter Store, https://aws.amazon.com/systems-manager/pricing/, the same in every commercial
region; figures as of PARAMETER_STORE_PRICES_AS_OF):

- storage: $0.05 per advanced parameter per month, prorated hourly. A config lives minutes
  (written at launch, deleted by its host once read, or by the scaler when the host goes), so
  it is billed one hour: $0.05 / 730 h.
- API interactions: $0.05 per 10,000 for advanced parameters. A config takes three:
  PutParameter (scale-up), GetParameter and DeleteParameter (the host). A poll before the config
  exists touches no advanced parameter and is not counted.

Not counted: the KMS requests behind a SecureString ($0.03 per 10,000; about $0.000006 a
config), and Standard-tier configs, which cost nothing (ours are never that small).
"""

from __future__ import annotations

PARAMETER_STORE_PRICES_AS_OF = "2026-11-30 (AWS Systems Manager pricing, Parameter Store; all commercial regions)"
ADVANCED_PARAMETER_USD_PER_MONTH = 0.05
ADVANCED_API_USD_PER_10K_CALLS = 0.05
HOURS_PER_MONTH = 730  # AWS's billing month
BILLED_HOURS_PER_CONFIG = 1  # prorated hourly; a config lives minutes
CALLS_PER_CONFIG = 3  # PutParameter, GetParameter, DeleteParameter

STORAGE_USD_PER_CONFIG = ADVANCED_PARAMETER_USD_PER_MONTH * BILLED_HOURS_PER_CONFIG / HOURS_PER_MONTH
CALLS_USD_PER_CONFIG = ADVANCED_API_USD_PER_10K_CALLS * CALLS_PER_CONFIG / 10_000
USD_PER_RUNNER_CONFIG = STORAGE_USD_PER_CONFIG + CALLS_USD_PER_CONFIG  # $0.0000835


def runner_config_cost_usd(configs: int) -> float:
    """Parameter Store's charge for `configs` runner configs written (about $0.08 a thousand)."""
    return configs * USD_PER_RUNNER_CONFIG
