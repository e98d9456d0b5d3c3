#!/usr/bin/env bash
# Install (if needed), lint, run the test suite. The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check newsrec_cli tests benchmarks examples
.venv/bin/ruff format --check --quiet newsrec_cli tests benchmarks examples
# -rs: list every skipped test with its reason (most need ../shared/data, see docs/development.md).
# -n auto --dist loadfile: one worker per core (pytest-xdist), each test file on one worker, so a
# module's fixture (a trained run, a server) is made once; `-n 0` after it runs serially.
.venv/bin/python -m pytest -rs --durations=20 -n auto --dist loadfile "$@"
