"""History clicks as training signal: the defaults against --history-positives, on a held-out day.

Each variant is trained per seed with the default protocol (epoch chosen on the last day of
train/, `--valid-days 1`) and scored on valid/, a later day that chose nothing (offline protocol).
It prints, per variant, the mean AUC of the choosing day (what a variant is picked by), then AUC
and nDCG@10 of the reported day with paired bootstrap 95% intervals over impressions against the
defaults (per-impression scores averaged over the seeds first).

    python benchmarks/bench_history.py --data ../shared/data/mind_recon_dev --store STORE \\
        --variants defaults 'history 0.5 category' --seeds 0 1 2

Runs already in --work are reused (variant_runs.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from variant_runs import METRICS, delta_auc, mean_cells, trained_runs, variant_parser, write_json

VARIANTS: dict[str, dict[str, object]] = {
    "defaults": {},
    "history 0.5 category": {"history_positives": 0.5, "history_negatives": "category"},
    "history 0.5 random": {"history_positives": 0.5, "history_negatives": "random"},
    "history 1 category": {"history_positives": 1.0, "history_negatives": "category"},
}


def parse() -> argparse.Namespace:
    parser = variant_parser(__doc__.splitlines()[0], VARIANTS, "bench_history")
    parser.add_argument("--train-only", action="store_true", help="Train the runs, print nothing.")
    return parser.parse_args()


def chosen_auc(run_dir: Path) -> float:
    """The choosing day's AUC of the epoch the run kept (the last `best` line of history.jsonl)."""
    best = [
        line["metrics"]["auc"]
        for line in map(json.loads, (run_dir / "history.jsonl").read_text().splitlines())
        if line.get("best")
    ]
    return float(best[-1])


def main() -> None:
    args = parse()
    from newsrec_cli.evaluate.metrics import compute_metrics
    from newsrec_cli.evaluate.model_scores import run_scores
    from newsrec_cli.mind import load_dataset
    from newsrec_cli.runs.loading import load_run

    dataset = load_dataset(args.data)
    known, target = dataset.splits["train"], dataset.splits["valid"]
    labels, offsets = target.labels.astype(np.int64), target.candidate_offsets
    per: dict[str, list[np.ndarray]] = {}
    rows: dict[str, list[dict[str, float]]] = {}
    for name, _, run_dir in trained_runs(args, VARIANTS):
        if args.train_only:
            continue
        scores = run_scores(load_run(run_dir, "cpu"), dataset, target, known, "offline")
        result = compute_metrics(scores, labels, offsets, list(METRICS))
        per.setdefault(name, []).append(np.asarray(result.per_impression["auc"]))
        rows.setdefault(name, []).append({"chosen_auc": chosen_auc(run_dir), **result.values})
    if args.train_only:
        return
    print(
        f"\n{args.data}: chosen on the last day of train/, reported on valid/ ({len(target):,} impressions)"
    )
    print(f"seeds {args.seeds}, store {args.store}\n")
    print(
        "| model | AUC, choosing day | AUC, reported day | nDCG@10, reported day | ΔAUC vs defaults, 95% CI |"
    )
    print("|---|---|---|---|---|")
    table = []
    for name, values in rows.items():
        row: dict[str, object] = {
            "model": name,
            **{m: [v[m] for v in values] for m in ("chosen_auc", *METRICS)},
        }
        delta = ""
        if name != "defaults" and "defaults" in per:
            delta, row["delta_auc"] = delta_auc(per[name], per["defaults"])
        table.append(row)
        cells = mean_cells(values, ("chosen_auc", *METRICS))
        print(f"| {name} | " + " | ".join(cells) + f" | {delta} |", flush=True)
    write_json(args.json, table)


if __name__ == "__main__":
    main()
