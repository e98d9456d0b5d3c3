"""Popularity on a held-out day: the defaults against --use-popularity, under both protocols.

Each variant is trained per seed (epoch chosen on the last day of train/, `--valid-days 1`) and
scored on valid/, a later day that chose nothing, under the offline protocol (popularity frozen
at the end of train/) and the online replay (valid/ in time order, each impression with the
clicks of every earlier one). It prints AUC and nDCG@10 means over seeds and paired bootstrap
95% intervals over impressions of each row against the defaults scored offline.

    python benchmarks/bench_popularity.py --data ../shared/data/mind_recon_dev --store STORE --seeds 0 1 2
    python benchmarks/bench_popularity.py --data data/trend --store stores/trend --seeds 0

Runs already in --work are reused, so a killed benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

VARIANTS = {
    "defaults": {},
    "popularity gate, chosen offline": {"use_popularity": True},
    "popularity gate, chosen by replay": {"use_popularity": True, "valid_protocol": "replay"},
    "popularity ctr, chosen by replay": {
        "use_popularity": True,
        "popularity_head": "ctr",
        "valid_protocol": "replay",
    },
}
METRICS = ("auc", "ndcg@10")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("bench_popularity"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse()
    from newsrec_cli.ablate.stats import mean_std, paired_bootstrap
    from newsrec_cli.evaluate.metrics import compute_metrics
    from newsrec_cli.evaluate.model_scores import run_scores
    from newsrec_cli.mind import load_dataset
    from newsrec_cli.runs.files import CONFIG
    from newsrec_cli.runs.loading import load_run
    from newsrec_cli.settings import DataSettings, TrainSettings
    from newsrec_cli.train.loop import train

    data_settings = DataSettings(valid_days=1)
    dataset = load_dataset(args.data)
    known, target = dataset.splits["train"], dataset.splits["valid"]
    labels, offsets = target.labels.astype(np.int64), target.candidate_offsets
    per: dict[tuple[str, str], list[dict[str, np.ndarray]]] = {}
    means: dict[tuple[str, str], list[dict[str, float]]] = {}
    for name in args.variants:
        for seed in args.seeds:
            run_dir = args.work / name.replace(" ", "-").replace(",", "") / f"seed{seed}"
            if not (run_dir / CONFIG).exists():
                print(f"training {name}, seed {seed} -> {run_dir}", file=sys.stderr, flush=True)
                settings = TrainSettings(seed=seed, threads=args.threads, **VARIANTS[name])
                train(args.data, run_dir, store=args.store, settings=settings, data_settings=data_settings)
            else:
                train(None, run_dir, resume=True)
            run = load_run(run_dir, "cpu")
            for protocol in ("offline", "replay"):
                scores = run_scores(run, dataset, target, known, protocol)
                result = compute_metrics(scores, labels, offsets, list(METRICS))
                per.setdefault((name, protocol), []).append(dict(result.per_impression))
                means.setdefault((name, protocol), []).append(dict(result.values))
    reference = ("defaults", "offline")
    table = []
    print(f"\n{args.data}: valid/ ({len(target):,} impressions), seeds {args.seeds}\n")
    print("| model | protocol | AUC | nDCG@10 | ΔAUC vs defaults offline, 95% CI |")
    print("|---|---|---|---|---|")
    for (name, protocol), values in means.items():
        cells = []
        for metric in METRICS:
            mean, std = mean_std([v[metric] for v in values])
            cells.append(f"{mean:.4f} ± {std:.4f}")
        delta = ""
        row = {"model": name, "protocol": protocol, **{m: [v[m] for v in values] for m in METRICS}}
        if reference in per and (name, protocol) != reference:
            a = np.mean([p["auc"] for p in per[(name, protocol)]], axis=0)
            b = np.mean([p["auc"] for p in per[reference]], axis=0)
            mid, low, high = paired_bootstrap(a, b)
            delta = f"{mid:+.4f} [{low:+.4f}, {high:+.4f}]"
            row["delta_auc"] = [mid, low, high]
        table.append(row)
        print(f"| {name} | {protocol} | " + " | ".join(cells) + f" | {delta} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
