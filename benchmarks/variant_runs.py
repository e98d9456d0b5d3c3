"""What the held-out-day comparisons of training variants share (bench_history, bench_popularity).

Each variant is a set of `TrainSettings` fields. It is trained once per seed under --work, with
the epoch chosen on the last day of train/ (`--valid-days 1`), then scored on valid/, a later day
that chose nothing. Runs already in --work are reused (a killed one resumes), so a benchmark
continues where it stopped and variants can be added later.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

METRICS = ("auc", "ndcg@10")


def variant_parser(
    description: str, variants: dict[str, dict[str, object]], work: str
) -> argparse.ArgumentParser:
    """The arguments every variant benchmark takes (a script adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path(work))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(variants), choices=list(variants))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    return parser


def trained_runs(
    args: argparse.Namespace, variants: dict[str, dict[str, object]]
) -> Iterator[tuple[str, int, Path]]:
    """(variant, seed, run folder) of every requested run, trained or resumed first."""
    from newsrec_cli.runs.files import CONFIG
    from newsrec_cli.settings import DataSettings, TrainSettings
    from newsrec_cli.train.loop import train

    for name in args.variants:
        for seed in args.seeds:
            run_dir = args.work / name.replace(" ", "-").replace(",", "") / f"seed{seed}"
            if not (run_dir / CONFIG).exists():
                print(f"training {name}, seed {seed} -> {run_dir}", file=sys.stderr, flush=True)
                settings = TrainSettings(seed=seed, threads=args.threads, **variants[name])
                train(
                    args.data,
                    run_dir,
                    store=args.store,
                    settings=settings,
                    data_settings=DataSettings(valid_days=1),
                )
            else:
                train(None, run_dir, resume=True)  # a finished run stays as it is
            yield name, seed, run_dir


def mean_cells(values: Sequence[dict[str, float]], metrics: Sequence[str]) -> list[str]:
    """'mean ± std' over seeds of each metric."""
    from newsrec_cli.ablate.stats import mean_std

    return ["{:.4f} ± {:.4f}".format(*mean_std([v[m] for v in values])) for m in metrics]


def delta_auc(per: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> tuple[str, list[float]]:
    """Paired bootstrap 95% interval of the AUC gain over `reference`, per-impression AUCs
    averaged over the seeds first: the table cell and [mid, low, high]."""
    from newsrec_cli.ablate.stats import paired_bootstrap

    mid, low, high = paired_bootstrap(np.mean(per, axis=0), np.mean(reference, axis=0))
    return f"{mid:+.4f} [{low:+.4f}, {high:+.4f}]", [mid, low, high]


def write_json(path: Path | None, table: list[dict[str, object]]) -> None:
    if path is not None:
        path.write_text(json.dumps(table, indent=2) + "\n")
