#!/usr/bin/env bash
# Installs what is needed (the studio, test tools, chromium, PostgreSQL when possible) and runs every test.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_cli.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
eval "$(bash scripts/test_services.sh)"
exec .venv/bin/python -m pytest "$@"
