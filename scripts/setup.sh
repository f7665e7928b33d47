#!/usr/bin/env bash
# Installs Gen Studio and what it needs into .venv, saying what it does as it goes. Safe to run again: when
# nothing changed it only checks (well under a second).
#   bash scripts/setup.sh            the studio
#   bash scripts/setup.sh test       the studio and the test tools
# torch is installed first and on its own: a plain "torch" requirement pulls a multi-GB CUDA build even on
# machines without a GPU, so without one it comes from PyTorch's CPU index (as in the Dockerfile). Set
# STUDIO_TORCH_INDEX to choose the wheel index, or STUDIO_TORCH_VERSION to choose the version.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
did=0  # whether anything was installed
say() { echo "[set-up] $*"; }
# pip's own lines, less the noise: what it collects and downloads is the progress; a repeated install's
# "Requirement already satisfied" lines and the file-index warnings of some machines are not. pip says nothing while
# it unpacks (minutes, on a first install), so a ticker counts the packages it has unpacked so far. (A shell loop, not
# awk: mawk reads a pipe in blocks, so the lines would come in bursts.)
unpacked() { ls -d .venv/lib/python3*/site-packages/*.dist-info 2>/dev/null | wc -l; }
pip_install() {
  PYTHONUNBUFFERED=1 .venv/bin/python -m pip install --progress-bar on "$@" 2>&1 | {
    ticker=""
    while IFS= read -r line; do
      case "$line" in
        "Requirement already satisfied"*|"WARNING: Location"*|"Looking in indexes"*|"Looking in links"*|"  Using cached"*|"Obtaining file"*|"  Created wheel for"*|"  Stored in directory"*) ;;
        "Installing collected packages: "*)
          names=${line#*: }; commas=${names//[^,]/}; total=$(( ${#commas} + 1 ))
          echo "  unpacking $total package(s) ..."
          ( before=$(unpacked); while sleep 15 </dev/null >/dev/null 2>&1; do echo "  ... $(( $(unpacked) - before )) of $total unpacked"; done ) &
          ticker=$! ;;
        "Successfully installed "*)
          [ -z "$ticker" ] || { kill "$ticker" 2>/dev/null || true; ticker=""; }
          set -- $line; echo "  installed $(( $# - 2 )) package(s)" ;;
        *) echo "$line" ;;
      esac
    done
    [ -z "$ticker" ] || kill "$ticker" 2>/dev/null || true  # pip stopped without finishing
  }
}
# torch's one large download: pip straight to the terminal, where it draws a live progress bar (piped, it does not)
pip_install_live() { .venv/bin/python -m pip install "$@" 2> >(grep --line-buffered -v "^WARNING: Location" >&2); }

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Gen Studio needs Python 3.11 or newer" >&2; exit 1; }
  say "first set-up: installing Gen Studio into .venv, 5 to 9 minutes on 2 cores plus downloading ~460 MB (~1.9 GB on disk); later starts skip this"
  say "1/3 creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
  did=1
fi

if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  version=${STUDIO_TORCH_VERSION:-2.13.0}
  did=1
  if [ -n "${STUDIO_TORCH_INDEX:-}" ]; then
    say "2/3 installing torch $version from $STUDIO_TORCH_INDEX"
    pip_install_live "torch==$version" --index-url "$STUDIO_TORCH_INDEX"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    say "2/3 installing torch $version, the CUDA build for this machine's GPU (~3 GB with its NVIDIA libraries)"
    pip_install_live "torch==$version"
  else
    # its few small dependencies come with the studio's, from the usual index
    say "2/3 installing torch $version, the CPU build (no GPU found; ~190 MB to download, ~1 min to unpack)"
    pip_install_live "torch==$version" --no-deps --index-url https://download.pytorch.org/whl/cpu
  fi
fi

extras=""
[ "${1:-}" = "test" ] && extras="[test]"
stamp=".venv/.studio-installed"
hash="$(sha256sum pyproject.toml | cut -c1-16)"
installed="$(cat "$stamp" 2>/dev/null || true)"
# an install with the test tools also serves the plain studio
if [ "$installed" != "$hash$extras" ] && [ "$installed" != "$hash[test]" ]; then
  direct=$(.venv/bin/python -c "import tomllib; print(len(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))")
  say "3/3 installing the studio$([ -n "$extras" ] && echo ' with its test tools') and its $direct dependencies (gradio, transformers, diffusers, ...) with what they need (~110 packages in all on a first install)"
  did=1
  pip_install -e ".$extras"
  echo "$hash$extras" > "$stamp"
fi
if [ "$did" = 1 ]; then say "ready in $((SECONDS - started)) s"; else say "everything is installed (.venv)"; fi
