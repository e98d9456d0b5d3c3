"""Builders of the model and train tests: tiny synthetic data, stores, graphs, hand-made folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.store import commit, new_meta

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TIME = "11/15/2019 8:00:00 AM"
# A model small enough for a test to train in seconds, on one thread (bit-identical reruns).
TINY_TRAIN = {"dim": 16, "heads": 2, "history": 10, "batch_size": 32, "threads": 1}
runner = CliRunner()


def invoke(*args: str) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def synth(root: Path, news: int = 200, users: int = 100) -> Path:
    """A small synthetic dataset with train/ and valid/ (the data engineer's generator)."""
    invoke(
        "data", "synth", "--out", root / "synth", "--news", str(news), "--users", str(users), "--seed", "0"
    )
    return root / "synth"


def hashing_store(data: Path, out: Path) -> Path:
    """Hashing-provider vectors (deterministic, not semantic) of every news of `data`."""
    invoke("embed", "news", data, "--out", out, "--provider", "hashing")
    return out


def graph(data: Path, out: Path) -> Path:
    invoke("build-graph", data, "--out", out)
    return out


def write_store(path: Path, ids: list[str], vectors: np.ndarray) -> Path:
    signature = {
        "kind": "news",
        "provider": "test",
        "model": "hand-made",
        "dimension": int(vectors.shape[1]),
        "template": "{title}",
        "normalized": False,
    }
    commit(path, ids, vectors.astype(np.float32), new_meta(signature))
    return path


def news_row(news_id: str, category: str = "news", subcategory: str = "world") -> str:
    return "\t".join([news_id, category, subcategory, f"Title of {news_id}", "An abstract.", "", "[]", "[]"])


def write_mind(
    folder: Path, news: list[str], behaviors: list[tuple[str, str, str]], time: str = TIME
) -> Path:
    """A MIND folder; behaviors rows are (user, history, impressions), numbered from 1."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("".join(line + "\n" for line in news), encoding="utf-8")
    lines = [
        f"{i}\t{user}\t{time}\t{hist}\t{imps}\n" for i, (user, hist, imps) in enumerate(behaviors, start=1)
    ]
    (folder / "behaviors.tsv").write_text("".join(lines), encoding="utf-8")
    return folder


def memorable(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """A dataset a model can memorise: 30 users who each always click news of their own group.

    train/ and valid/ hold the same impressions, so "validation" measures fitting (overfit test).
    Returns (dataset, store) with random 16-d text vectors.
    """
    rng = np.random.default_rng(seed)
    ids = [f"N{i}" for i in range(60)]
    groups = {g: ids[g * 10 : (g + 1) * 10] for g in range(6)}
    rows = []
    for u in range(30):
        own = groups[u % 6]
        others = [n for n in ids if n not in own]
        for _ in range(2):
            clicks = list(rng.choice(own, 2, replace=False))
            skips = list(rng.choice(others, 8, replace=False))
            cands = " ".join([f"{n}-1" for n in clicks] + [f"{n}-0" for n in skips])
            history = " ".join(rng.choice(own, 3, replace=False))
            rows.append((f"U{u}", history, cands))
    news = [news_row(n) for n in ids]  # one category: only IDs (or luck) tell the groups apart
    for split in ("train", "valid"):
        write_mind(root / "mem" / split, news, rows)
    store = write_store(root / "mem_store", ids, rng.normal(size=(60, 16)))
    return root / "mem", store


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real MIND fixture not found: {path}")
    return path


def held_out_rows(data: Path, run: Path, metrics: str = "auc,mrr") -> dict[str, dict[str, float]]:
    """`evaluate RUN --baselines` on the split the run's protocol reports (one that chose
    nothing): "model", "random", "popularity", "content" and "centred" (content centred), by value."""
    from newsrec_cli.evaluate.runner import evaluate
    from newsrec_cli.settings import EvaluateSettings

    report = evaluate(EvaluateSettings(baselines=True, metrics=metrics, device="cpu"), data=data, run_dir=run)
    assert report.chosen_on is not None and not report.optimistic, report.selection
    rows: dict[str, dict[str, float]] = {}
    for row in report.rows:
        if row.result is not None:
            key = "centred" if row.name.startswith("content centred") else row.name.split()[0]
            rows.setdefault(key, row.result.values)
    return rows
