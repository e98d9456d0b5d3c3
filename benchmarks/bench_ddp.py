"""Benchmark of distributed training: `newsrec train --nproc 2` against one process.

On the built-in synthetic dataset (`newsrec data synth`, 3,000 news, 2,000 users) with a hashing
store, this trains the default model with the same seeds and global batch in three set-ups: one
process with one thread, one process with two threads, and two processes (DDP, gloo) with one
thread each. It prints, per run, the best validation AUC and nDCG@10, the training samples/s
(mean over the trained epochs, as history.jsonl records it) and the wall time; then per set-up
the mean and spread of the AUC over the seeds. Dropout is on (the defaults), so the two-process
runs draw other dropout masks than the one-process runs: their AUC is compared within seed noise.

    python benchmarks/bench_ddp.py                    # seeds 0 1 2 (about 10 minutes on 2 cores)
    python benchmarks/bench_ddp.py --seeds 0 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

SETUPS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))


def newsrec(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "newsrec_cli", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"newsrec {' '.join(args[:2])} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def train(
    data: Path, store: Path, out: Path, *, seed: int, nproc: int, threads: int, epochs: int | None
) -> dict:
    args = ["train", str(data), "-e", str(store), "--out", str(out), "--seed", str(seed)]
    args += ["--threads", str(threads), "--json"]
    if epochs:
        args += ["--epochs", str(epochs)]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    started = time.monotonic()
    report = json.loads(newsrec(*args))
    report["wall"] = time.monotonic() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="Default: the setting's (early stopping).")
    parser.add_argument(
        "--speed-only-seed", type=int, default=0, help="Seed of the single 1 x 1 run (speed reference)."
    )
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as folder:
        root = Path(folder)
        newsrec("data", "synth", "--out", str(root / "data"), "--seed", "0")
        newsrec("embed", "news", str(root / "data"), "--out", str(root / "store"), "--provider", "hashing")
        rows: list[tuple[str, int, dict[str, Any]]] = []
        for name, nproc, threads in SETUPS:
            seeds = [args.speed_only_seed] if (nproc, threads) == (1, 1) else args.seeds
            for seed in seeds:
                out = root / f"run-{nproc}x{threads}-{seed}"
                report = train(
                    root / "data",
                    root / "store",
                    out,
                    seed=seed,
                    nproc=nproc,
                    threads=threads,
                    epochs=args.epochs,
                )
                rows.append((name, seed, report))
                console.print(
                    f"{name}, seed {seed}: AUC {report['best_metrics']['auc']:.4f}", highlight=False
                )

    table = Table(title="newsrec train: 1 vs 2 processes, built-in synthetic data", title_justify="left")
    for column in ("set-up", "seed", "best epoch", "valid AUC", "nDCG@10", "samples/s", "wall s"):
        table.add_column(column, justify="left" if column == "set-up" else "right")
    for name, seed, report in rows:
        trained = [r for r in report["history"] if r["epoch"] > 0 and not r["partial"]]
        speed = statistics.mean(r["samples_per_s"] for r in trained) if trained else 0.0
        best = report["best_metrics"]
        table.add_row(
            name,
            str(seed),
            str(report["best_epoch"]),
            f"{best['auc']:.4f}",
            f"{best['ndcg@10']:.4f}",
            f"{speed:,.0f}",
            f"{report['wall']:.0f}",
        )
    console.print(table)
    summary = Table(title="valid AUC over seeds (mean ± sample std)", title_justify="left")
    for column in ("set-up", "runs", "AUC", "samples/s"):
        summary.add_column(column, justify="left" if column == "set-up" else "right")
    for name, _, _ in SETUPS:
        mine = [report for setup, _, report in rows if setup == name]
        aucs = [r["best_metrics"]["auc"] for r in mine]
        spread = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
        speeds = [
            statistics.mean(e["samples_per_s"] for e in r["history"] if e["epoch"] > 0 and not e["partial"])
            for r in mine
        ]
        summary.add_row(
            name,
            str(len(mine)),
            f"{statistics.mean(aucs):.4f} ± {spread:.4f}",
            f"{statistics.mean(speeds):,.0f}",
        )
    console.print(summary)


if __name__ == "__main__":
    main()
