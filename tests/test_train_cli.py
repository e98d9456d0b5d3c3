"""`newsrec train` through the CLI: tables and JSON, resume, and one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from train_helpers import hashing_store, synth, write_store
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.commands import train as train_cmd
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.behaviors import distinct_news

runner = CliRunner()
FAST = [
    "--dim",
    "16",
    "--heads",
    "2",
    "--history",
    "10",
    "--batch-size",
    "32",
    "--threads",
    "1",
    "--valid-impressions",
    "60",
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train_cli")
    data = synth(root)
    return data, hashing_store(data, root / "store")


def one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_train_prints_the_epoch_table_and_names_the_best_epoch(
    synthetic: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, store = synthetic
    monkeypatch.setattr(train_cmd, "console", Console(width=300))
    result = runner.invoke(
        app,
        [
            "train",
            str(data),
            "--embeddings",
            str(store),
            "--out",
            str(tmp_path / "run"),
            *FAST,
            "--epochs",
            "2",
            "--fusion",
            "gate",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    header = next(line for line in out.splitlines() if "train loss" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == [
        "epoch",
        "train loss",
        "AUC",
        "MRR",
        "nDCG@5",
        "nDCG@10",
        "seconds",
        "samples/s",
    ]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2]  # epoch 0: the untrained model (content prior)
    best = max(history, key=lambda r: r["metrics"]["auc"])
    assert f"best epoch: {best['epoch']} (valid AUC {best['metrics']['auc']:.4f}" in out
    assert "the last day of train/" in out and "reported later: valid/" in out


def test_train_json_summary_and_resume(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    data, store = synthetic
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            str(data),
            "-e",
            str(store),
            "-o",
            str(run),
            *FAST,
            "--epochs",
            "2",
            "--time-budget",
            "0.001",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stopped"] == "time_budget" and summary["history"][-1]["partial"] is True
    assert summary["info"]["modalities"] == ["id", "text", "category"]
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["train"]["dim"] == 16 and config["embeddings"]["path"] == str(store.resolve())
    assert config["settings"]["data"]["split"] == "auto" and "graph" in config["settings"]
    result = runner.invoke(app, ["train", "--resume", "-o", str(run), "--json"])
    assert result.exit_code == 0, result.output
    resumed = json.loads(result.stdout)
    assert resumed["info"]["resumed_at"] == [1, 1]
    assert resumed["stopped"] in ("epochs", "early_stopping")


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--fusion", "sum"], 2, "train.fusion = 'sum' (from flag)"),
        (["--lr", "-1"], 2, "train.lr = -1.0"),
        (["--no-use-id", "--no-use-text", "--no-use-category"], 2, "every modality is off"),
        (["--heads", "3"], 2, "train.dim = 16 must be divisible by train.heads = 3"),
        (["--split", "weekly"], 2, "data.split = 'weekly'"),
        (
            ["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"],
            2,
            "train.device",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(
    synthetic: tuple[Path, Path], tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    data, store = synthetic
    result = runner.invoke(
        app, ["train", str(data), "-e", str(store), "-o", str(tmp_path / "run"), *FAST, *args]
    )
    assert result.exit_code == code, result.output
    assert needle in one_error_line(result.stderr)


def test_missing_files_and_wrong_stores_are_one_line_errors(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    missing = runner.invoke(
        app, ["train", str(data), "-e", str(tmp_path / "nope"), "-o", str(tmp_path / "r")]
    )
    assert missing.exit_code == 2 and "Invalid value for '--embeddings'" in missing.output
    not_a_store = tmp_path / "empty"
    not_a_store.mkdir()
    result = runner.invoke(
        app, ["train", str(data), "-e", str(not_a_store), "-o", str(tmp_path / "r1"), *FAST]
    )
    assert result.exit_code == 1 and "not an embedding store" in one_error_line(result.stderr)
    dataset = load_dataset(data)
    gone = {dataset.news_vocab.ids[i] for i in distinct_news(dataset.protocol().train)[:3]}
    ids = [i for i in dataset.news.ids if i not in gone]  # 3 news the training impressions use
    short = write_store(tmp_path / "short", ids, np.ones((len(ids), 8)))
    result = runner.invoke(app, ["train", str(data), "-e", str(short), "-o", str(tmp_path / "r2"), *FAST])
    assert result.exit_code == 1
    assert "3 of" in one_error_line(result.stderr) and "--missing learned" in result.stderr
    result = runner.invoke(app, ["train", "--resume", "-o", str(tmp_path / "never")])
    assert result.exit_code == 1 and "run directory not found" in one_error_line(result.stderr)
    result = runner.invoke(app, ["train", "-o", str(tmp_path / "r3")])
    assert result.exit_code == 2 and "DATA" in result.output


def test_a_store_of_another_dimension_on_resume_is_a_one_line_error(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    run = tmp_path / "run"
    first = runner.invoke(
        app,
        [
            "train",
            str(data),
            "-e",
            str(store),
            "-o",
            str(run),
            *FAST,
            "--epochs",
            "2",
            "--time-budget",
            "0.001",
        ],
    )
    assert first.exit_code == 0, first.output
    ids = load_dataset(data, behaviors=False).news.ids
    other = write_store(tmp_path / "other", ids, np.ones((len(ids), 8)))
    result = runner.invoke(app, ["train", "--resume", "-o", str(run), "-e", str(other)])
    assert result.exit_code == 1
    assert "vectors have dimension 8 but the model was trained on 256-d vectors" in one_error_line(
        result.stderr
    )


@pytest.mark.slow
def test_help_and_a_run_as_a_subprocess(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    data, store = synthetic
    help_text = subprocess.run(
        [sys.executable, "-m", "newsrec_cli", "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Example: newsrec train" in help_text and "--embeddings" in help_text
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "newsrec_cli",
            "train",
            str(data),
            "-e",
            str(store),
            "-o",
            str(tmp_path / "run"),
            *FAST,
            "--max-steps",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stopped"] == "max_steps"
