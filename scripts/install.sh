#!/usr/bin/env bash
# Create .venv (if missing) and install newsrec into it, CPU torch first.
#
# torch comes first, pinned to the CPU build this machine has on disk, so that resolving the
# package's own range (torch>=2.4) installs nothing more; a GPU user who already has a torch in
# the environment keeps it. Override with NEWSREC_TORCH="torch==X" or NEWSREC_TORCH=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  spec="${NEWSREC_TORCH:-torch==2.13.0}"
  [ "$spec" = skip ] || .venv/bin/python -m pip install --quiet "$spec"
fi
.venv/bin/python -m pip install --quiet -e ".[local,plot,serve,dev]"
echo "installed: $(.venv/bin/newsrec --version) in $(pwd)/.venv"
