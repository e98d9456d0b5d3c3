"""Every file newsrec writes goes through `newsrec_cli/atomic.py` (temporary file, fsync, rename):
a run folder, a synthetic dataset and `config init`, watched at the one atomic writer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from evaluate_helpers import make_mind, make_store, train_tiny_run
from typer.testing import CliRunner

from newsrec_cli import atomic
from newsrec_cli.cli import app

runner = CliRunner()
APPENDED = {"history.jsonl"}  # one line per epoch, appended (and flushed) as each epoch ends


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> set[Path]:
    """The paths atomic.atomic_handle replaced."""
    paths: set[Path] = set()
    real = atomic.atomic_handle

    @contextlib.contextmanager
    def watched(path: Path) -> Iterator:
        with real(path) as handle:
            yield handle
        paths.add(Path(path).resolve())

    monkeypatch.setattr(atomic, "atomic_handle", watched)
    return paths


def _files(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()}


def test_a_run_folder_is_written_through_atomic(tmp_path: Path, written: set[Path]) -> None:
    data, store = make_mind(tmp_path / "mind"), make_store(tmp_path / "store")
    run = tmp_path / "run"
    train_tiny_run(data, run, store)
    expected = {
        p
        for p in _files(run)
        if p.name not in APPENDED and "tensorboard" not in p.parts and p.name != ".newsrec.lock"
    }
    assert {p.name for p in expected} >= {"config.json", "model.pt", "vocab_news.tsv", "vocab_categories.txt"}
    assert expected - written == set()


def test_synth_and_config_init_are_written_through_atomic(tmp_path: Path, written: set[Path]) -> None:
    out = tmp_path / "synth"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--news", "200", "--users", "100"])
    assert result.exit_code == 0, result.output
    assert _files(out) - written == set() and len(_files(out)) >= 6
    toml = tmp_path / "newsrec.toml"
    assert runner.invoke(app, ["config", "init", str(toml)]).exit_code == 0
    assert toml.resolve() in written
