#!/usr/bin/env bash
# Installs Gen Studio and what it needs into .venv. Safe to run again: it is quick when nothing changed.
#   bash scripts/setup.sh            the studio
#   bash scripts/setup.sh test       the studio and the test tools
# torch is installed first and on its own: a plain "torch" requirement pulls a multi-GB CUDA build even on
# machines without a GPU. Set STUDIO_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu) to choose the
# wheel index, or STUDIO_TORCH_VERSION to choose the version.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Gen Studio needs Python 3.11 or newer" >&2; exit 1; }
  "$PYTHON" -m venv .venv
fi
pip_quiet() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  version=${STUDIO_TORCH_VERSION:-2.13.0}
  if [ -n "${STUDIO_TORCH_INDEX:-}" ]; then
    pip_quiet "torch==$version" --index-url "$STUDIO_TORCH_INDEX"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    pip_quiet "torch==$version"             # the CUDA build, for this machine's GPU
  else
    echo "No GPU found: installing the CPU build of torch $version" >&2
    pip_quiet "torch==$version"             # resolves to the CPU build where one is provided locally
  fi
fi

extras=""
[ "${1:-}" = "test" ] && extras="[test]"
stamp=".venv/.studio-installed"
wanted="$(sha256sum pyproject.toml | cut -c1-16)$extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  pip_quiet -e ".$extras"
  echo "$wanted" > "$stamp"
fi
