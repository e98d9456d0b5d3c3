"""News IDs that behaviors mention but news.tsv lacks: a clear error, not "embed them"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from train_helpers import news_row, write_mind, write_store
from typer.testing import CliRunner

from newsrec_cli.cli import app

runner = CliRunner()


def _dataset(root: Path) -> tuple[Path, Path]:
    news = [f"N{i}" for i in range(1, 9)]
    rows = [("U1", "N1 N2", "N3-1 N4-0 N5-0"), ("U2", "N2 N404", "N6-1 N7-0 N8-0")]
    data = write_mind(root / "data" / "train", [news_row(n) for n in news], rows)
    write_mind(root / "data" / "valid", [news_row(n) for n in news], [("U1", "N1", "N3-0 N5-1 N405-0")])
    store = write_store(root / "store", news, np.random.default_rng(0).normal(size=(8, 8)))
    return data.parent, store


def test_ids_missing_from_news_tsv_are_named(tmp_path: Path) -> None:
    data, store = _dataset(tmp_path)
    # two hand-made impressions in train/, too few to hold any out: valid/ chooses
    args = ["train", str(data), "--select-on", "valid", "--embeddings", str(store)]
    args += ["--out", str(tmp_path / "run"), "--threads", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in result.output
    assert "2 news IDs in the impressions have no row in news.tsv (first: N404, N405)" in message
    assert "newsrec filter --require-embeddings" in message and "behaviors.tsv" in message

    learned = runner.invoke(
        app,
        [
            *args[:-4],
            "--out",
            str(tmp_path / "run2"),
            "--threads",
            "1",
            "--missing",
            "learned",
            "--max-steps",
            "2",
            "--dim",
            "16",
            "--heads",
            "2",
        ],
    )
    assert learned.exit_code == 0, learned.output


def test_unknown_ids_name_the_first_line_and_the_counts(tmp_path: Path) -> None:
    """Issue 30 §7: per file and field, the first line that uses an unknown ID and how many lines do."""
    news = [f"N{i}" for i in range(1, 9)]
    rows = [
        ("U1", "N1 N2", "N3-1 N4-0 N5-0"),
        ("U2", "N2 N404", "N6-1 N7-0 N8-0"),
        ("U3", "N1", "N3-1 N4-0"),
        ("U4", "N406 N404", "N6-1 N7-0"),
    ]
    data = write_mind(tmp_path / "data" / "train", [news_row(n) for n in news], rows).parent
    valid = [("U1", "N1", "N3-0 N5-1"), ("U2", "N1", "N4-1 N5-0"), ("U1", "N1", "N3-0 N405-1 N407-0")]
    write_mind(data / "valid", [news_row(n) for n in news], valid)
    store = write_store(tmp_path / "store", news, np.random.default_rng(0).normal(size=(8, 8)))
    args = [
        "train",
        str(data),
        "--select-on",
        "valid",
        "--embeddings",
        str(store),
        "--out",
        str(tmp_path / "r"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {data / 'train' / 'behaviors.tsv'}:2, field History: 4 news IDs in the impressions have "
        "no row in news.tsv (first: N404, N406, N405, N407); field History: 2 IDs on 2 lines, first line 2; "
        f"field Impressions of {data / 'valid' / 'behaviors.tsv'}: 2 IDs on 1 line, first line 3; drop them "
        "with `newsrec filter --require-embeddings STORE`, or train with --missing learned"
    )
