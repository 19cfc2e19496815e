#!/usr/bin/env bash
# Create .venv (once) and install the project into it (editable), its dependencies pinned by the
# committed lock (uv pip compile of pyproject.toml; requirements.txt stays the program's pins):
#   bash scripts/setup.sh       the runtime set, requirements.lock: validate, route, preview, simulate, gpus, agent
#   bash scripts/setup.sh dev   the development set, requirements-dev.lock: tests, linters, serve, simulate --plot
# With uv (installed from PyPI into .venv, pinned): about 4x faster than pip; where uv cannot be
# installed, pip reads the same lock. Needs only python3 (3.11+) and PyPI. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
case "${1:-}" in
  "") lock=requirements.lock ;;
  dev) lock=requirements-dev.lock ;;
  *) echo "usage: bash scripts/setup.sh [dev]" >&2; exit 64 ;;
esac
python3 -m venv .venv
if .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"; then
  .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -r "$lock" -e .
else
  echo "setup: uv could not be installed; installing with pip (slower)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$lock" -e .
fi
