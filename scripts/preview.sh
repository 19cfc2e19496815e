#!/usr/bin/env bash
# Set up the runtime set, then run the Pulumi program offline under mocks for a stack (default:
# prod). Extra arguments go to `estate preview`, e.g. --json or --stack staging.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/estate preview "$@"
