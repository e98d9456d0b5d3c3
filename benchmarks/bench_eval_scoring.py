"""Benchmark of model scoring in evaluation: news table, user states and candidate scoring, timed
apart, for the inner-product path (default) and the per-pair path (`inner_product=False`).

Scores a sample of a split's impressions with a trained run, the way `newsrec evaluate` does
(`score_with_model`), once per path, and prints the seconds of each phase and the largest
difference between the two paths' logits.

    python benchmarks/bench_eval_scoring.py --run /work/scale_data/run-1proc \\
        --data /work/scale_data/large --impressions 100000 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from newsrec_cli.mind.dataset import load_dataset
from newsrec_cli.model.inference import score_with_model
from newsrec_cli.runs.loading import load_run

console = Console()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="A trained run directory.")
    parser.add_argument("--data", type=Path, required=True, help="The dataset to score.")
    parser.add_argument("--split", default="valid", help="Split scored (default valid).")
    parser.add_argument("--impressions", type=int, default=100_000, help="Impressions sampled (0: all).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2).")
    parser.add_argument("--batch-size", type=int, default=512, help="User states per forward.")
    parser.add_argument("--paths", default="inner,pairs", help="Paths run: inner,pairs (default both).")
    parser.add_argument("--repeat", type=int, default=2, help="Runs of each path; the fastest is shown.")
    return parser.parse_args()


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    dataset = load_dataset(args.data, splits=(args.split,))
    imps = dataset.splits[args.split]
    if 0 < args.impressions < len(imps):
        rng = np.random.default_rng(0)
        imps = imps.subset(np.sort(rng.choice(len(imps), args.impressions, replace=False)))
    run = load_run(args.run, device="cpu")
    run.attach_dataset(dataset, imps)
    console.print(f"loaded in {time.perf_counter() - start:.1f} s: {len(imps):,} impressions, "
                  f"{len(imps.candidates):,} candidates")  # fmt: skip
    table = Table(title=f"score_with_model on {args.data} ({args.split})", title_justify="left")
    for column in ("path", "news s", "users s", "scores s", "total s", "candidates/s", "max |diff|"):
        table.add_column(column, justify="left" if column == "path" else "right")
    reference: np.ndarray | None = None
    for path in args.paths.split(","):
        best: tuple[float, dict[str, float]] | None = None
        for _ in range(args.repeat):  # the first run also reads the memory-mapped arrays
            timings: dict[str, float] = {}
            start = time.perf_counter()
            logits = score_with_model(
                run.model,
                imps,
                history=run.settings.history,
                batch_size=args.batch_size,
                user_rows=run.user_rows(imps),
                bf16=run.settings.bf16,
                inner_product=path == "inner",
                timings=timings,
            )
            total = time.perf_counter() - start
            best = (total, timings) if best is None or total < best[0] else best
        assert best is not None
        total, timings = best
        diff = "-" if reference is None else f"{np.abs(logits - reference).max():.2e}"
        reference = logits if reference is None else reference
        table.add_row(
            path,
            *(f"{timings.get(k, 0.0):.1f}" for k in ("news", "users", "scores")),
            f"{total:.1f}",
            f"{len(imps.candidates) / total:,.0f}",
            diff,
        )
    console.print(table)
    console.print(
        f"torch threads: {args.threads}; batch size {args.batch_size}; fastest of {args.repeat}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
