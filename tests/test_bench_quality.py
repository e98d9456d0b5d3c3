"""`benchmarks/bench_quality.py --quick` (what CI runs): from an empty --work it makes the small
synthetic dataset, its MiniLM store and the run, and prints the Results table; the model must
beat centred content on valid/, the day that chose nothing, or the script exits 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"


@pytest.mark.slow
def test_quick_table_from_an_empty_work_folder(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tables.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--work", str(tmp_path / "work"), "--quick", "--threads", "1"]
        + ["--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = json.loads(out.read_text())["synth"]
    names = [row["name"] for row in table["rows"]]
    assert names == ["newsrec (defaults)", "content (centred)", "content", "popularity", "random"]
    assert (
        table["split_note"].startswith("chosen on the last day of train/")
        and "reported on valid/" in table["split_note"]
    )
    assert "onnx int8" in table["store"]
    auc = {row["name"]: row["mean"]["auc"] for row in table["rows"]}
    assert auc["newsrec (defaults)"] > auc["content (centred)"]
    assert "quick check passed" in done.stdout and "| newsrec (defaults) |" in done.stdout
