"""Builders for the diagnose tests: hand-made MIND folders, stores, a synthetic dataset, table parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.store import commit, new_meta

TIME = "11/15/2019 8:00:00 AM"
ENTITY = json.dumps(
    [
        {
            "Label": "Paris",
            "Type": "G",
            "WikidataId": "Q90",
            "Confidence": 1.0,
            "OccurrenceOffsets": [0],
            "SurfaceForms": ["Paris"],
        }
    ]
)


def news_row(news_id: str, entities: str = "[]") -> str:
    return "\t".join([news_id, "news", "world", f"Title of {news_id}", "An abstract.", "", entities, "[]"])


def write_mind(folder: Path, news: list[str], behaviors: list[tuple[str, str, str]]) -> Path:
    """A MIND folder; behaviors rows are (user, history, impressions), numbered from 1."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("".join(line + "\n" for line in news), encoding="utf-8")
    lines = [
        f"{i}\t{user}\t{TIME}\t{hist}\t{imps}\n" for i, (user, hist, imps) in enumerate(behaviors, start=1)
    ]
    (folder / "behaviors.tsv").write_text("".join(lines), encoding="utf-8")
    return folder


def write_store(path: Path, ids: list[str], vectors: np.ndarray, *, normalized: bool = False) -> Path:
    """A news store written with the store's own commit (NaN rows are written raw afterwards)."""
    finite = np.nan_to_num(vectors.astype(np.float32), nan=0.0)
    signature = {
        "kind": "news",
        "provider": "test",
        "model": "hand-made",
        "dimension": int(vectors.shape[1]),
        "template": "{title}",
        "normalized": normalized,
    }
    commit(path, ids, finite, new_meta(signature))
    if np.isnan(vectors).any():
        np.save(path / "vectors.npy", vectors.astype(np.float32))
    return path


def synth_with_store(root: Path) -> tuple[Path, Path]:
    """A small synthetic dataset (train/ and valid/) and a hashing-provider store of its news."""
    data, store = root / "synth", root / "store"
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "synth", "--out", str(data), "--news", "200", "--users", "100", "--seed", "0"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["embed", "news", str(data), "--out", str(store), "--provider", "hashing"])
    assert result.exit_code == 0, result.output
    return data, store


def wide_console() -> Console:
    """A console wide enough that no table wraps, so rows can be read back cell by cell."""
    return Console(width=400, color_system=None, force_terminal=False)


def table_rows(output: str, title: str) -> list[list[str]]:
    """The body rows of the rich table titled `title` in `output`, as stripped cell texts."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title[:40]))
    rows, body = [], False
    for line in lines[start + 1 :]:
        if line.startswith(("┡", "╇")):
            body = True
            continue
        if line.startswith("└"):
            break
        if body and line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip().strip("│").split("│")])
    return rows
