"""Two `newsrec train` processes into one --out: the second is refused in one line; a killed run
leaves no lock behind, so `train --resume` continues it. Real processes, real kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from evaluate_helpers import make_mind, make_store

NEWSREC = Path(sys.executable).parent / "newsrec"


def _epochs(run: Path) -> list[int]:
    path = run / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def test_second_train_into_one_folder_is_refused_and_a_killed_run_resumes(tmp_path: Path) -> None:
    data, store = make_mind(tmp_path / "mind"), make_store(tmp_path / "store")
    run = tmp_path / "run"
    common = ["--embeddings", str(store), "--dim", "8", "--heads", "2", "--device", "cpu", "--threads", "1"]
    common += ["--select-on", "valid"]  # 4 training impressions: none to hold out
    first = subprocess.Popen(
        [
            str(NEWSREC),
            "train",
            str(data),
            "--out",
            str(run),
            *common,
            "--epochs",
            "100000",
            "--patience",
            "100000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300  # generous: a busy machine starts slowly
        while not _epochs(run):  # epoch 0 written: set up, with the lock held
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first train never validated epoch 0"
            time.sleep(0.2)
        # Stopped, it still holds the lock, and leaves the cores to the second process.
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(
            [str(NEWSREC), "train", str(data), "--out", str(run), *common, "--epochs", "2", "--overwrite"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip() == (
            f"error: {run}: another newsrec train is writing this run folder (it holds .newsrec.lock); "
            "wait for it to end, or choose another --out"
        )
        assert first.poll() is None  # the first one lives on, its files untouched by --overwrite
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    epochs = _epochs(run)
    assert epochs == list(range(len(epochs)))  # one writer: 0, 1, 2, ...
    # kill -9 released the lock with the process: the run resumes with nothing but --resume
    resumed = subprocess.run(
        [str(NEWSREC), "train", "--resume", "--out", str(run), "--time-budget", "0.5", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "another newsrec train" not in resumed.stderr
