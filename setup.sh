#!/usr/bin/env bash
# Set up .venv with this package. `bash setup.sh` for running it, `bash setup.sh dev` for tests too.
#
# PyTorch comes first, so that a machine without a GPU does not download a multi-GB CUDA build:
# - torch already importable in .venv: kept if it is torch>=2.6, the package's only demand;
# - an NVIDIA GPU (nvidia-smi works): the default build from PyPI, which includes CUDA;
# - otherwise a CPU build: a torch wheel already on this machine (pip's --find-links, e.g. a cache
#   that a CI image ships) if there is one, else PyTorch's CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[ "${1:-}" = "dev" ] && extras="[dev]"
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
torch="torch>=2.6"  # as in pyproject.toml
if ! .venv/bin/python -c "import sys, torch; sys.exit(tuple(map(int, torch.__version__.split('.')[:2])) < (2, 6))" \
        2>/dev/null; then
    if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
        "${pip[@]}" "$torch"
    elif ! "${pip[@]}" --no-index --no-deps "$torch" 2>/dev/null; then
        "${pip[@]}" "$torch" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
"${pip[@]}" -e ".${extras}"
