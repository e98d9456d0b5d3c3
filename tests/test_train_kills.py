"""A training process killed with SIGKILL (a real one: `NEWSREC_FAULT_KILL`, faults.py) at any
point resumes with `newsrec train --resume --out RUN` alone, every setting coming back from the
run, to the model.pt, last.pt and history.jsonl of the uninterrupted run.

The runs give `--threads 1` and `--checkpoint-every`, and the processes are left torch's own
thread count (2 or more on a multi-core machine): a resume that dropped either would differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import TINY_TRAIN, hashing_store, synth

from newsrec_cli.settings import TrainSettings
from newsrec_cli.train import train
from newsrec_cli.train.faults import KILL_ENV

EVERY = 3  # --checkpoint-every
VALUES = {**TINY_TRAIN, "epochs": 2, "valid_impressions": 40, "checkpoint_every": EVERY}
SETTINGS = TrainSettings(**VALUES)
FLAGS = [part for name, value in VALUES.items() for part in (f"--{name.replace('_', '-')}", str(value))]
TIMING = ("seconds", "samples_per_s")  # the only fields of history.jsonl that a clock sets


def newsrec(*args: str, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", KILL_ENV)}
    if kill:
        env[KILL_ENV] = kill
    return subprocess.run(
        [sys.executable, "-m", "newsrec_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "COLUMNS": "200"},
    )


def history(run: Path) -> list[dict[str, Any]]:
    lines = (run / "history.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def tensors(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = tensors(a)["model"], tensors(b)["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("kills")
    data = synth(root)
    store = hashing_store(data, root / "store")
    full = train(data, root / "full", store=store, settings=SETTINGS)  # uninterrupted
    return {"data": data, "store": store, "full": root / "full", "steps": full.info.steps_per_epoch}


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_run(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """One run killed three times, each resume given `--resume --out` only: while the first
    last.pt (epoch 0) is written, in the middle of epoch 1 (after a --checkpoint-every
    last.pt), and at the end of epoch 2 (validated, in history.jsonl, its last.pt half written)."""
    out, steps = tmp_path / "run", reference["steps"]
    mid = 5 if 5 % EVERY else 4  # epoch 1, after the checkpoint of step EVERY
    assert EVERY < mid < steps
    resume = ["train", "--resume", "--out", str(out)]

    # 1. before the first checkpoint: nothing to resume from but config.json
    start = ["train", str(reference["data"]), "-e", str(reference["store"]), "--out", str(out), *FLAGS]
    killed = newsrec(*start, kill="save:0")
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: nothing of the loop ran after it
    assert not (out / "last.pt").exists() and [r["epoch"] for r in history(out)] == [0]
    config = (out / "config.json").read_bytes()

    # 2. in mid-epoch: last.pt of the last --checkpoint-every step (kept across the resume of 1.)
    killed = newsrec(*resume, kill=f"step:{mid}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "config.json").read_bytes() == config  # not rewritten: the settings it started with
    assert tensors(out / "last.pt")["state"]["global_step"] == (mid - 1) // EVERY * EVERY

    # 3. at the end of an epoch: epoch 2 validated and written to history.jsonl, last.pt not yet
    killed = newsrec(*resume, kill=f"save:{2 * steps}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [r["epoch"] for r in history(out)] == [0, 1, 2]
    assert tensors(out / "last.pt")["state"]["global_step"] == (2 * steps - 1) // EVERY * EVERY

    resumed = newsrec(*resume, "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["info"]["threads"] == 1
    assert (out / "config.json").read_bytes() == config
    assert history(out) == history(reference["full"])  # each epoch once, with the same values
    assert [r["epoch"] for r in history(out)] == [0, 1, 2]
    assert_same_weights(out / "model.pt", reference["full"] / "model.pt")
    assert_same_weights(out / "last.pt", reference["full"] / "last.pt")
