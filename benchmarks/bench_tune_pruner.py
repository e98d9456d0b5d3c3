"""Which pruner `newsrec tune` uses by default: median, Hyperband or none, measured.

For each pruner and sampler seed, one study of --trials trials on synthetic data (the default
search space, every trial --epochs epochs, one thread), then: the best validation AUC found,
the epochs trained in all (the cost, free of machine load), the trials pruned and the seconds.
A pruner is worth it when it trains fewer epochs for the same best AUC.

    python benchmarks/bench_tune_pruner.py --trials 12 --seeds 2     # the figures in docs/tuning.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from newsrec_cli.settings import TrainSettings
from newsrec_cli.train import train_job as run_training
from newsrec_cli.tune.report import study_report
from newsrec_cli.tune.space import load_space
from newsrec_cli.tune.study import TuneSetup, tune


def newsrec(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "newsrec_cli", *args], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=2, help="Sampler seeds per pruner.")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--news", type=int, default=600)
    parser.add_argument("--users", type=int, default=400)
    args = parser.parse_args()
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        newsrec(
            "data", "synth", "--out", str(root / "data"), "--news", str(args.news), "--users", str(args.users)
        )
        newsrec("embed", "news", str(root / "data"), "--out", str(root / "store"), "--provider", "hashing")
        train = TrainSettings(epochs=args.epochs, threads=1, patience=args.epochs).model_dump(mode="json")
        for pruner in ("median", "hyperband", "none"):
            results = []
            for seed in range(args.seeds):
                setup = TuneSetup(
                    data=root / "data",
                    out=root / f"{pruner}-{seed}",
                    store=root / "store",
                    space=load_space(None),
                    train=train,
                    trials=args.trials,
                    pruner=pruner,
                    seed=seed,
                )
                start = time.perf_counter()
                tune(setup, run_training)
                seconds = time.perf_counter() - start
                report = study_report(setup)
                epochs = sum(r.epochs or 0 for r in report.rows)
                pruned = sum(r.state == "pruned" for r in report.rows)
                best = report.best.auc if report.best else float("nan")
                results.append((best, epochs, pruned, seconds))
                console.print(
                    f"{pruner} seed {seed}: best AUC {best:.4f}, {epochs} epochs, {pruned} pruned, {seconds:.0f} s"
                )
            rows.append((pruner, results))
    table = Table(
        title=f"tune pruners: {args.trials} trials x {args.seeds} seeds, {args.epochs} epochs each, "
        f"synthetic {args.news} news / {args.users} users, default space",
        title_justify="left",
    )
    for name in ("pruner", "best valid AUC (mean)", "per seed", "epochs trained", "pruned", "seconds"):
        table.add_column(name, justify="left" if name == "pruner" else "right")
    for pruner, results in rows:
        table.add_row(
            pruner,
            f"{statistics.mean(r[0] for r in results):.4f}",
            " / ".join(f"{r[0]:.4f}" for r in results),
            f"{sum(r[1] for r in results)}",
            f"{sum(r[2] for r in results)}",
            f"{sum(r[3] for r in results):.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
