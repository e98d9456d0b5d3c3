#!/usr/bin/env bash
# The main job, end to end, on the built-in synthetic dataset: install, then
# synth -> embed (local MiniLM, offline) -> build-graph -> train -> evaluate (+ baselines) -> diagnose.
# Everything lands in ./demo (override with DEMO=dir). Rerunning reuses the data, vectors and
# graph already there and trains a fresh run (train never overwrites a run by itself).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$(pwd)/.venv/bin:$PATH" HF_HUB_OFFLINE=1
D="${DEMO:-demo}"
set -x
newsrec data synth --out "$D/data"
newsrec data stats "$D/data"
newsrec embed "$D/data" --out "$D/embeddings"
newsrec build-graph "$D/data" --out "$D/graph"
rm -rf "$D/run"
newsrec train "$D/data" --embeddings "$D/embeddings" --graph "$D/graph" --out "$D/run"
newsrec evaluate "$D/run" --data "$D/data" --baselines
newsrec diagnose saturation "$D/run"
set +x
echo "The web page on this run: .venv/bin/newsrec serve $D/run --data $D/data   (then open http://127.0.0.1:8000/ui/)"
