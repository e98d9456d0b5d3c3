#!/usr/bin/env bash
# Create .venv (if missing) and install newsrec into it, torch first.
#
# torch comes first, pinned, so that resolving the package's own range (torch>=2.4) installs
# nothing more; a user who already has a torch in the environment keeps it. Which build:
#   - no NVIDIA GPU (laptop, CPU server): PyTorch's CPU-only wheel index, when it answers within a
#     few seconds. From PyPI alone the same pin is a CUDA build plus gigabytes of nvidia-* packages.
#   - an NVIDIA GPU (nvidia-smi lists one), or the CPU index unreachable: what pip resolves from its
#     configured indexes (PyPI: the CUDA build; a machine with a local wheel folder: that wheel).
# Overrides: NEWSREC_TORCH="torch==X" or skip; NEWSREC_TORCH_INDEX=auto (default), pip (plain
# resolution) or a URL; NEWSREC_CPU_INDEX (the CPU index probed); NEWSREC_PROBE_TIMEOUT (seconds).
# `bash scripts/install.sh --torch-index` prints the choice and why, and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
CPU_INDEX="${NEWSREC_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

has_nvidia_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU "
}

# True when the index answers an HTTP request within the timeout (any 2xx/3xx: it is there).
reachable() {
  "$PY" - "$1" "${NEWSREC_PROBE_TIMEOUT:-4}" <<'PYEOF' >/dev/null 2>&1
import sys, urllib.request
url, timeout = sys.argv[1].rstrip("/") + "/torch/", float(sys.argv[2])
urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
PYEOF
}

# Prints "INDEX<TAB>why"; INDEX is a URL for pip's --index-url, or "pip" for plain resolution.
torch_index() {
  local choice="${NEWSREC_TORCH_INDEX:-auto}"
  if [ "$choice" != auto ]; then
    printf '%s\t%s\n' "$choice" "set by NEWSREC_TORCH_INDEX"
  elif [ "$(uname -s)" = Darwin ]; then
    printf 'pip\t%s\n' "macOS: PyPI's wheels are CPU/MPS builds already"
  elif has_nvidia_gpu; then
    printf 'pip\t%s\n' "an NVIDIA GPU is present: pip's default build (CUDA on PyPI)"
  elif reachable "$CPU_INDEX"; then
    printf '%s\t%s\n' "$CPU_INDEX" "no NVIDIA GPU: PyTorch's CPU-only wheels"
  else
    printf 'pip\t%s\n' "no NVIDIA GPU, but $CPU_INDEX is unreachable: pip's configured indexes"
  fi
}

if [ "${1:-}" = --torch-index ]; then
  torch_index
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  spec="${NEWSREC_TORCH:-torch==2.13.0}"
  if [ "$spec" != skip ]; then
    IFS=$'\t' read -r index why < <(torch_index)
    echo "torch: $spec from $([ "$index" = pip ] && echo "pip's indexes" || echo "$index") ($why)"
    if [ "$index" = pip ]; then
      .venv/bin/python -m pip install --quiet "$spec"
    else
      .venv/bin/python -m pip install --quiet --index-url "$index" "$spec"
    fi
  fi
fi
.venv/bin/python -m pip install --quiet -e ".[local,plot,serve,dev]"
echo "installed: $(.venv/bin/newsrec --version) in $(pwd)/.venv"
