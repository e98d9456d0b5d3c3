"""Distributed training: `newsrec train --nproc 2` (torch.distributed.run + DDP, gloo on CPU)
against one process on the same data, seed and global batch; a killed rank; --resume.

Each 2-process run starts real worker processes (a few seconds each, one thread per rank).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_helpers import hashing_store, synth
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.mind import load_dataset
from newsrec_cli.objective.batching import EpochBatches, plan_epoch
from newsrec_cli.objective.samples import click_samples
from newsrec_cli.settings import DataSettings, TrainSettings
from newsrec_cli.train import train
from newsrec_cli.train.distributed import combine_metrics, shard_sizes
from newsrec_cli.train.faults import FAULT_ENV, FAULT_EXIT_CODE

# Dropout off: each rank draws its own dropout masks, so with dropout the runs are equal in
# distribution only. Everything else is the defaults (InfoNCE with in-batch negatives, the prior).
SETTINGS: dict[str, Any] = {
    "dim": 16,
    "heads": 2,
    "history": 10,
    "batch_size": 32,
    "epochs": 2,
    "threads": 1,
    "dropout": 0.0,
    "id_dropout": 0.0,
    "text_dropout": 0.0,
    "seed": 3,
    # model.pt must hold trained weights to compare: the untrained epoch 0 may win the selection day
    "choose_untrained": False,
}
# valid/ chooses (and so is what validation scores): the gathered validation is compared with
# `evaluate --split valid` below.
SELECT = DataSettings(select_on="valid")
FLAGS = [
    "--select-on", "valid",
    "--dim", "16", "--heads", "2", "--history", "10", "--batch-size", "32", "--epochs", "2",
    "--threads", "1", "--dropout", "0", "--id-dropout", "0", "--text-dropout", "0", "--seed", "3",
]  # fmt: skip
# Weights of the 2-process run against one process: float32 sums in another order (the gradient
# all-reduce adds two half-batch gradients; each rank's matmuls see half the rows) differ in the
# last bits at every step, AdamW's division by sqrt(v) magnifies that on coordinates whose
# gradient is near 0, and it compounds over the run's steps. Measured: at most 2e-5 here (18
# steps) and 6e-5 after 28 steps, on weights of magnitude up to 3. Another batch convention (each
# rank a full batch, i.e. one process with half the batch) moves them by 3e-2 (checked below).
WEIGHT_ATOL = 1e-3
runner = CliRunner()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "newsrec_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "COLUMNS": "200",
            "NEWSREC_TRAIN_CHOOSE_UNTRAINED": "false",  # as SETTINGS: model.pt is a trained epoch
            **(env or {}),
        },
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)["model"]


def max_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].numel())


def sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def history(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ddp")
    data = synth(root, users=120)
    store = hashing_store(data, root / "store")
    # A batch size that leaves one row in the epoch's last batch, so that rank 1 gets a stand-in
    # row there (257 clicks: 32; should the generator change, any such size, else 32).
    clicks = len(click_samples(load_dataset(data).protocol(select_on="valid").train))
    batch = next((b for b in range(32, 64) if clicks % b == 1), 32)
    settings = TrainSettings(**{**SETTINGS, "batch_size": batch})
    single = train(data, root / "single", store=store, settings=settings, data_settings=SELECT)
    assert single.info.clicks == clicks
    flags = [*FLAGS, "--batch-size", str(batch)]
    ddp = run_cli(
        "train", str(data), "-e", str(store), "--out", str(root / "ddp"), *flags, "--nproc", "2", "--json"
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return {
        "root": root,
        "data": data,
        "store": store,
        "single": single,
        "settings": settings,
        "flags": flags,
        "ddp": json.loads(ddp.stdout),
        "stderr": ddp.stderr,
    }


def test_two_processes_reach_the_weights_of_one_process(runs: dict[str, Any]) -> None:
    root = runs["root"]
    info = runs["ddp"]["info"]
    assert info["processes"] == 2 and info["steps_per_epoch"] == runs["single"].info.steps_per_epoch
    assert max_difference(root / "single", root / "ddp") < WEIGHT_ATOL
    # The training loss of every epoch (mean over the global batches) agrees too.
    for one, two in zip(runs["single"].history[1:], runs["ddp"]["history"][1:], strict=True):
        assert two["train_loss"] == pytest.approx(one.train_loss, rel=1e-5)
    # The tolerance tells batch conventions apart: one process with half the batch is far off.
    half = train(
        runs["data"],
        root / "half",
        store=runs["store"],
        settings=runs["settings"].model_copy(update={"batch_size": runs["settings"].batch_size // 2}),
        data_settings=SELECT,
    )
    assert half.history
    assert max_difference(root / "single", root / "half") > 20 * WEIGHT_ATOL


def test_gathered_validation_equals_single_process_evaluate(runs: dict[str, Any]) -> None:
    root = runs["root"]
    records = runs["ddp"]["history"]
    best = next(r for r in records if r["epoch"] == runs["ddp"]["best_epoch"])
    result = runner.invoke(
        app, ["evaluate", str(root / "ddp"), "--data", str(runs["data"]), "--split", "valid", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    model = next(row for row in report["rows"] if row["name"].startswith("model"))
    assert report["impressions"] == best["valid_impressions"]
    for name in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        assert best["metrics"][name] == pytest.approx(model["values"][name], abs=1e-6), name
    assert len(history(root / "ddp")) == len(records)  # rank 0 alone wrote it


def test_a_dead_rank_ends_the_job_and_resume_finishes_the_run(runs: dict[str, Any]) -> None:
    root, data, store = runs["root"], runs["data"], runs["store"]
    out = root / "killed"
    steps = runs["single"].info.steps_per_epoch
    # run_cli's timeout fails a job that hangs instead of ending
    killed = run_cli(
        "train", str(data), "-e", str(store), "--out", str(out), *runs["flags"], "--nproc", "2",
        env={FAULT_ENV: f"1:step:{steps + 2}:exit"},  # rank 1 leaves hard in epoch 2, after epoch 1's last.pt
    )  # fmt: skip
    assert killed.returncode == 1, killed.stderr[-3000:]
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in killed.stderr, killed.stderr[-3000:]
    assert "rank 1 (pid" in errors[0] and f"exited with code {FAULT_EXIT_CODE}" in errors[0]
    assert "last.pt holds the end of epoch 1" in errors[0], errors[0]
    assert "newsrec train --resume --out" in errors[0]
    assert killed.stderr.count("model: ") == 1  # rank 0 alone talks to the terminal
    assert [r["epoch"] for r in history(out)] == [0, 1]

    resumed = run_cli("train", "--resume", "--out", str(out), "--nproc", "2", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout)
    assert report["info"]["resumed_at"] == [2, 0] and report["stopped"] == "epochs"
    # The resumed run ends where the uninterrupted 2-process run ended, bit for bit.
    assert max_difference(out, root / "ddp") == 0.0
    assert sha256(out / "model.pt") == sha256(root / "ddp" / "model.pt")
    assert [r["metrics"] for r in report["history"]] == [r["metrics"] for r in runs["ddp"]["history"]]


def test_checkpoint_every_resumes_a_dead_rank_inside_the_epoch(runs: dict[str, Any]) -> None:
    root, data, store = runs["root"], runs["data"], runs["store"]
    out = root / "killed_mid_epoch"
    steps = runs["single"].info.steps_per_epoch
    killed = run_cli(
        "train", str(data), "-e", str(store), "--out", str(out), *runs["flags"], "--nproc", "2",
        "--checkpoint-every", "2",
        env={FAULT_ENV: f"1:step:{steps + 3}"},  # SIGKILL; steps + 2 ran (and its checkpoint, when even)
    )  # fmt: skip
    assert killed.returncode == 1, killed.stderr[-3000:]
    saved = (steps + 2) // 2 * 2
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, killed.stderr[-3000:]
    # The rank that died, not rank 0 that the launcher stopped; what last.pt really holds.
    assert "rank 1 (pid" in errors[0] and "was killed by SIGKILL first" in errors[0], errors[0]
    assert f"last.pt holds epoch 2, step {saved - steps} (global step {saved})" in errors[0], errors[0]
    resumed = run_cli("train", "--resume", "--out", str(out), "--nproc", "2", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout)
    assert report["info"]["resumed_at"] == [2, (steps + 2) // 2 * 2 - steps]
    # The same weights bit for bit; not the same bytes: model.pt records --checkpoint-every 2.
    assert max_difference(out, root / "ddp") == 0.0
    assert [r["metrics"] for r in report["history"]] == [r["metrics"] for r in runs["ddp"]["history"]]


def test_each_rank_takes_a_contiguous_share_of_the_global_batch(tmp_path: Path) -> None:
    data = synth(tmp_path)
    imps = load_dataset(data).splits["train"]
    samples = click_samples(imps)
    plan = plan_epoch(samples, 4, seed=0, epoch=0)
    size = 7
    whole = EpochBatches(imps, samples, plan, batch_size=size, history=5)
    shares = [
        EpochBatches(imps, samples, plan, batch_size=size, history=5, rank=r, world=3) for r in range(3)
    ]
    assert len(shares[0]) == len(whole)
    for step in (0, len(whole) - 1):
        parts = [share[step]["candidates"] for share in shares]
        rows = shard_sizes(len(whole[step]["candidates"]), 3)
        glued = torch.cat([part[:n] for part, n in zip(parts, rows, strict=True)])
        assert torch.equal(glued, whole[step]["candidates"])
    assert shard_sizes(1, 2) == [1, 0] and shard_sizes(32, 3) == [11, 11, 10]


def test_metrics_of_shares_combine_to_the_metrics_of_all() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, size=50)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    labels = (rng.random(offsets[-1]) < 0.3).astype(np.int64)
    labels[offsets[:-1]] = 1  # a click in every impression
    labels[offsets[10] : offsets[11]] = 1  # one impression all clicked: no AUC
    scores = rng.normal(size=offsets[-1])
    whole = compute_metrics(scores, labels, offsets)
    parts = []
    for share in np.array_split(np.arange(50), 3):
        lo, hi = offsets[share[0]], offsets[share[-1] + 1]
        part = compute_metrics(scores[lo:hi], labels[lo:hi], offsets[share[0] : share[-1] + 2] - lo)
        parts.append(part.to_dict() | {"values": part.values})
    combined = combine_metrics(parts)
    assert combined.skipped_auc == whole.skipped_auc >= 1 and combined.impressions == 50
    assert combined.counts == whole.counts
    for name, value in whole.values.items():
        assert combined.values[name] == pytest.approx(value, abs=1e-12)


def test_nproc_under_torchrun_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--nproc", "2"],
        env={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
    )
    assert result.exit_code == 2 and "started by torchrun already" in result.output


def test_torchrun_called_directly_runs_the_plain_command(runs: dict[str, Any]) -> None:
    out = runs["root"] / "torchrun"
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "newsrec_cli", "train", str(runs["data"]), "-e", str(runs["store"]), "--out", str(out),
            *runs["flags"], "--max-steps", "3", "--json",
        ],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # rank 0 alone printed: one JSON document
    assert report["info"]["processes"] == 2 and report["stopped"] == "max_steps"
    assert [r["global_step"] for r in history(out)] == [0, 3]
