"""Training gives the same model bit for bit: two runs at torch's default thread count, and a
run killed with SIGKILL (a real one: `NEWSREC_FAULT`, faults.py) at any point and resumed with
`newsrec train --resume --out RUN` alone, every setting coming back from the run, equal the
uninterrupted run: the same weights, history.jsonl, and model.pt down to its SHA-256.

The default-thread runs give no `--threads` (torch's own count, 2 or more on a multi-core
machine: the CPU kernels that add rows by index race there unless training orders them,
train/determinism.py); the `--threads 1` run checks that a resume keeps the recorded count.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import TINY_TRAIN, hashing_store, synth

from newsrec_cli.errors import SettingsError
from newsrec_cli.runs import checkpoint
from newsrec_cli.runs.records import TrainCallbacks
from newsrec_cli.settings import TrainSettings
from newsrec_cli.train import train
from newsrec_cli.train.faults import FAULT_ENV, Fault, planned_fault

EVERY = 3  # --checkpoint-every
VALUES = {**TINY_TRAIN, "epochs": 2, "valid_impressions": 40, "checkpoint_every": EVERY}
SETTINGS = TrainSettings(**VALUES)  # --threads 1
DEFAULT_VALUES = {k: v for k, v in VALUES.items() if k != "threads"}
TIMING = ("seconds", "samples_per_s")  # the only fields of history.jsonl that a clock sets


def flags(values: dict[str, Any]) -> list[str]:
    return [part for name, value in values.items() for part in (f"--{name.replace('_', '-')}", str(value))]


def newsrec(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", FAULT_ENV)}
    if len(os.sched_getaffinity(0)) < 2:
        env["OMP_NUM_THREADS"] = "2"  # torch's default is read from it: two threads still race
    if fault:
        env[FAULT_ENV] = fault
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


def sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = tensors(a)["model"], tensors(b)["model"]
    assert wa.keys() == wb.keys()
    differ = [key for key in wa if not torch.equal(wa[key], wb[key])]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ: {differ[:5]}"


def assert_same_run(run: Path, reference: Path) -> None:
    assert history(run) == history(reference)  # each epoch once, with the same values
    assert_same_weights(run / "model.pt", reference / "model.pt")
    assert_same_weights(run / "last.pt", reference / "last.pt")
    assert sha256(run / "model.pt") == sha256(reference / "model.pt")  # users compare checksums


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("kills")
    data = synth(root)
    store = hashing_store(data, root / "store")
    full = train(data, root / "full", store=store, settings=SETTINGS)  # uninterrupted, one thread
    start = ["train", str(data), "-e", str(store)]
    done = newsrec(*start, "--out", str(root / "default"), *flags(DEFAULT_VALUES), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    threads = json.loads(done.stdout)["info"]["threads"]  # torch's default: the cores
    assert threads >= 2, "the default-thread runs must run on several threads"
    return {
        "threads": threads,
        "data": data,
        "store": store,
        "start": start,
        "full": root / "full",
        "default": root / "default",
        "steps": full.info.steps_per_epoch,
    }


def test_two_runs_at_the_default_thread_count_are_bit_identical(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    done = newsrec(*reference["start"], "--out", str(tmp_path / "again"), *flags(DEFAULT_VALUES))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "deterministic" in done.stderr and "NOT deterministic" not in done.stderr  # the model line
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["determinism"] == {"deterministic": True}
    assert_same_run(tmp_path / "again", reference["default"])


def test_steps_run_with_ordered_kernels_and_the_switch_is_left_as_found(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """Whether two-thread sums race depends on the machine's load; the switch does not."""
    seen: list[tuple[bool, bool]] = []

    class Watch(TrainCallbacks):
        def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
            fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
            seen.append((torch.are_deterministic_algorithms_enabled(), fill))
            return False

    assert not torch.are_deterministic_algorithms_enabled()
    settings = SETTINGS.model_copy(update={"max_steps": 2, "checkpoint_every": 0})
    train(reference["data"], tmp_path / "run", store=reference["store"], settings=settings, callbacks=Watch())
    assert seen == [(True, False), (True, False)]  # ordered, and no NaN fill of new tensors (its cost)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_run(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """At the default thread count, one run killed three times, each resume given
    `--resume --out` only: while the first last.pt (epoch 0) is written, in the middle of epoch
    1 (after a --checkpoint-every last.pt), and at the end of epoch 2 (validated, in
    history.jsonl, its last.pt half written)."""
    out, steps = tmp_path / "run", reference["steps"]
    mid = 5 if 5 % EVERY else 4  # epoch 1, after the checkpoint of step EVERY
    assert EVERY < mid < steps
    resume = ["train", "--resume", "--out", str(out)]

    # 1. before the first checkpoint: nothing to resume from but config.json
    killed = newsrec(*reference["start"], "--out", str(out), *flags(DEFAULT_VALUES), fault="save:0")
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: nothing of the loop ran after it
    assert not (out / "last.pt").exists() and [r["epoch"] for r in history(out)] == [0]
    config = (out / "config.json").read_bytes()

    # 2. in mid-epoch: last.pt of the last --checkpoint-every step (kept across the resume of 1.)
    killed = newsrec(*resume, fault=f"step:{mid}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "config.json").read_bytes() == config  # not rewritten: the settings it started with
    assert tensors(out / "last.pt")["state"]["global_step"] == (mid - 1) // EVERY * EVERY

    # 3. at the end of an epoch: epoch 2 validated and written to history.jsonl, last.pt not yet
    killed = newsrec(*resume, fault=f"save:{2 * steps}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [r["epoch"] for r in history(out)] == [0, 1, 2]
    assert tensors(out / "last.pt")["state"]["global_step"] == (2 * steps - 1) // EVERY * EVERY

    resumed = newsrec(*resume, "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["info"]["threads"] == reference["threads"]
    assert (out / "config.json").read_bytes() == config
    assert [r["epoch"] for r in history(out)] == [0, 1, 2]
    assert_same_run(out, reference["default"])


def test_a_resume_keeps_the_recorded_thread_count(reference: dict[str, Any], tmp_path: Path) -> None:
    """`--threads 1`, killed in mid-epoch 2 and resumed with `--resume --out` alone: one thread
    again (another count sums floats in another order), the in-process run's model bit for bit."""
    out, steps = tmp_path / "run", reference["steps"]
    killed = newsrec(*reference["start"], "--out", str(out), *flags(VALUES), fault=f"step:{steps + 2}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = train(None, out, resume=True)  # in this process: its thread count comes back too
    assert resumed.info.threads == 1
    assert_same_run(out, reference["full"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("step:4", Fault("step", 4)),
        ("0:save:0", Fault("save", 0)),
        ("0:step:7:exit", Fault("step", 7, "exit")),
    ],
)
def test_a_fault_plan_reads_rank_point_step_and_how(
    raw: str, expected: Fault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_ENV, raw)
    assert planned_fault(0) == expected and planned_fault(1) is None  # another rank's plan


@pytest.mark.parametrize("raw", ["step:two", "boot:3", "1:step:3:explode", "step"])
def test_a_fault_plan_that_does_not_parse_is_refused(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_ENV, raw)
    with pytest.raises(SettingsError, match=f"{FAULT_ENV}="):
        planned_fault(0)


def test_equal_content_with_other_sharing_gives_equal_bytes(tmp_path: Path) -> None:
    """As a fresh run (one string object in two fields) and a resumed one (two, read from JSON)."""
    weights = {"w": torch.arange(4.0)}
    shared = "auto"
    one = {"model": weights, "settings": {"split": shared, "select_on": shared}}
    two = {"model": weights, "settings": json.loads('{"split": "auto", "select_on": "auto"}')}
    two["settings"]["select_on"] = "".join(["au", "to"])  # equal, another object
    assert one == two and one["settings"]["split"] is one["settings"]["select_on"]
    checkpoint.save(tmp_path / "one.pt", one)
    checkpoint.save(tmp_path / "two.pt", two)
    assert sha256(tmp_path / "one.pt") == sha256(tmp_path / "two.pt")
    # the control: torch.save as it is pickles the sharing, so the bytes differ
    torch.save(one, tmp_path / "raw_one.pt")
    torch.save(two, tmp_path / "raw_two.pt")
    assert sha256(tmp_path / "raw_one.pt") != sha256(tmp_path / "raw_two.pt")
    assert checkpoint.load(tmp_path / "two.pt")["settings"] == one["settings"]
