#!/usr/bin/env bash
# Installs what is needed, then starts the studio at http://127.0.0.1:7860 (STUDIO_HOME: ./studio_home).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[serve] starting Gen Studio (a few seconds; it prints its address when it is ready) ..."
exec .venv/bin/studio serve "$@"
