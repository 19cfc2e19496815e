#!/usr/bin/env bash
# Build the functions' own dependencies (PyJWT + cryptography) for their platform: Linux arm64,
# Python 3.12 (components/scaler_functions.py). Run before `pulumi up`; the program refuses to
# deploy without them. boto3 is not bundled: the Lambda runtime provides it.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] && python=.venv/bin/python
rm -rf build/lambda-deps
"$python" -m pip install --quiet --disable-pip-version-check \
    --target build/lambda-deps \
    --platform manylinux2014_aarch64 --implementation cp --python-version 3.12 --only-binary=:all: \
    -r lambda_src/requirements.txt
rm -rf build/lambda-deps/bin
echo "built build/lambda-deps: $(du -sh build/lambda-deps | cut -f1)"
