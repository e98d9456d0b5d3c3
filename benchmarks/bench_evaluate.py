"""Benchmark of `newsrec evaluate` at MIND-small dev scale (73,152 impressions, ~2.7M candidates).

Part 1, metrics alone: random scores and labels (4% clicks, log-normal candidate counts with mean
~37, as MIND-small dev), timed for the default metrics, for all of them, and for writing the
leaderboard file. Target: under 5 s for the default metrics on a 2-core CPU.

Part 2, the full command: `evaluate()` as `newsrec evaluate` runs it (read the data, score every
impression with the model, metrics, metrics.json, and the three baselines) on a synthetic MIND
dataset whose valid day has the same number of impressions, with a store of random 384-d vectors
(MiniLM's size) and a run trained for a few steps on it (timing, not quality); with
`--run RUN --data DATA`, on that run and data instead. Target: under 60 s.

    python benchmarks/bench_evaluate.py                 # full size (the lead runs this)
    python benchmarks/bench_evaluate.py --scale 0.02    # a quick check
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from newsrec_cli.embed.store import commit, new_meta
from newsrec_cli.evaluate.metrics import DEFAULT_METRICS, compute_metrics, ranks_from_scores
from newsrec_cli.evaluate.predictions import format_predictions
from newsrec_cli.evaluate.runner import evaluate
from newsrec_cli.mind.dataset import find_splits
from newsrec_cli.mind.news import read_news
from newsrec_cli.mind.synth import synthesize
from newsrec_cli.settings import DataSettings, EvaluateSettings, SynthSettings, TrainSettings
from newsrec_cli.train import train

DEV_IMPRESSIONS = 73_152  # MIND-small dev
DEV_MEAN_CANDIDATES = 37.4  # 2,740,998 candidates / 73,152 impressions
ALL_METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10", "hit@1", "hit@5", "logloss", "ece")

console = Console()


def timed(func: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    """Best wall time of `repeat` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def synthetic_arrays(impressions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sigma = 0.8
    median = DEV_MEAN_CANDIDATES / np.exp(sigma**2 / 2)
    lengths = np.maximum(2, rng.lognormal(np.log(median), sigma, size=impressions).astype(np.int64))
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    scores = rng.standard_normal(int(offsets[-1])).astype(np.float32)
    labels = (rng.random(int(offsets[-1])) < 0.04).astype(np.int8)
    labels[offsets[:-1]] = 1  # every impression has a click, as in MIND
    return scores, labels, offsets


def bench_metrics(impressions: int, table: Table) -> None:
    scores, labels, offsets = synthetic_arrays(impressions)
    size = f"{impressions:,} imp / {len(scores):,} cand"
    seconds, result = timed(lambda: compute_metrics(scores, labels, offsets, DEFAULT_METRICS))
    table.add_row("metrics: auc, mrr, ndcg@5, ndcg@10", size, f"{seconds:.2f}", "< 5 s")
    seconds, _ = timed(lambda: compute_metrics(scores, labels, offsets, ALL_METRICS))
    table.add_row("metrics: + hit@1, hit@5, logloss, ece", size, f"{seconds:.2f}", "")
    ids = np.arange(1, impressions + 1)
    seconds, _ = timed(lambda: format_predictions(ids, offsets, ranks_from_scores(scores, offsets)), repeat=1)
    table.add_row("prediction.txt (ranks + text)", size, f"{seconds:.2f}", "")


def random_store(data: Path, path: Path, dim: int = 384) -> Path:
    """A store with a random unit vector for every news of `data` (timing only, no meaning)."""
    ids: list[str] = []
    for folder in find_splits(data).values():
        ids += read_news(folder / "news.tsv").ids
    ids = list(dict.fromkeys(ids))
    vectors = np.random.default_rng(0).standard_normal((len(ids), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    signature = {"kind": "news", "provider": "random", "model": "bench", "dimension": dim,
                 "template": "", "normalized": True}  # fmt: skip
    commit(path, ids, vectors, new_meta(signature))
    return path


def quick_run(data: Path, store: Path, out: Path, table: Table) -> Path:
    """A run trained for a few steps: its weights are poor, its inference cost is the real one."""
    settings = TrainSettings(use_graph=False, max_steps=20, valid_impressions=500, epochs=1)
    start = time.perf_counter()
    train(data, out, store=store, settings=settings)
    table.add_row("(setup) train 20 steps", "", f"{time.perf_counter() - start:.2f}", "")
    return out


def bench_full(data: Path, run: Path | None, store: Path | None, table: Table, out: Path) -> None:
    start = time.perf_counter()
    report = evaluate(
        EvaluateSettings(baselines=True), data=data, data_settings=DataSettings(), run_dir=run,
        embeddings=store, out_dir=out,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    size = f"{report.impressions:,} imp / {report.candidates:,} cand"
    what = "model + 3 baselines" if run else "baselines (no run)"
    table.add_row(f"full evaluate: {what}", size, f"{seconds:.2f}", "< 60 s")
    for row in report.rows:
        auc = row.result.values["auc"] if row.result else float("nan")
        table.add_row(f"  row {row.name} (AUC {auc:.3f})", "", f"{row.seconds:.2f}", "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="Share of MIND-small dev size (1.0 = full).")
    parser.add_argument("--run", type=Path, help="A trained run directory for the full evaluate.")
    parser.add_argument("--data", type=Path, help="The MIND data of --run (default: synthetic).")
    parser.add_argument("--embeddings", type=Path, help="Store for the content baseline.")
    args = parser.parse_args()

    impressions = max(100, int(DEV_IMPRESSIONS * args.scale))
    table = Table(title=f"newsrec evaluate benchmark (scale {args.scale})")
    for column in ("what", "size", "seconds", "target"):
        table.add_column(column, justify="left" if column in ("what", "size") else "right")
    bench_metrics(impressions, table)

    with tempfile.TemporaryDirectory() as tmp:
        data, run, store = args.data, args.run, args.embeddings
        if data is None:
            # 7 days, the last one valid: about 1/7 of all impressions, ~2.5 per user.
            users = int(impressions * 7 / 2.5)
            news = max(3000, users // 8)
            console.print(f"[dim]setup: synthetic data ({users:,} users, {news:,} news), a store, a run[/]")
            data = Path(tmp) / "synth"
            synthesize(data, SynthSettings(users=users, news=news))
        if run is None:
            store = store or random_store(data, Path(tmp) / "store")
            run = quick_run(data, store, Path(tmp) / "run", table)
        bench_full(data, run, store, table, Path(tmp) / "out")
    console.print(table)


if __name__ == "__main__":
    main()
