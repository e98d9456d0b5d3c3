"""Popularity on a held-out day: the defaults against --use-popularity, under both protocols.

Each variant is trained per seed (epoch chosen on the last day of train/, `--valid-days 1`) and
scored on valid/, a later day that chose nothing, under the offline protocol (popularity frozen
at the end of train/) and the online replay (valid/ in time order, each impression with the
clicks of every earlier one). It prints AUC and nDCG@10 means over seeds and paired bootstrap
95% intervals over impressions of each row against the defaults scored offline.

    python benchmarks/bench_popularity.py --data ../shared/data/mind_recon_dev --store STORE --seeds 0 1 2
    python benchmarks/bench_popularity.py --data data/trend --store stores/trend --seeds 0

Runs already in --work are reused (variant_runs.py).
"""

from __future__ import annotations

import argparse

import numpy as np
from variant_runs import METRICS, delta_auc, mean_cells, trained_runs, variant_parser, write_json

VARIANTS: dict[str, dict[str, object]] = {
    "defaults": {},
    # the head named: the default head is ctr since it chose better on mind_recon_dev
    "popularity gate, chosen offline": {"use_popularity": True, "popularity_head": "gate"},
    "popularity gate, chosen by replay": {
        "use_popularity": True,
        "popularity_head": "gate",
        "valid_protocol": "replay",
    },
    "popularity ctr, chosen by replay": {
        "use_popularity": True,
        "popularity_head": "ctr",
        "valid_protocol": "replay",
    },
}


def parse() -> argparse.Namespace:
    return variant_parser(__doc__.splitlines()[0], VARIANTS, "bench_popularity").parse_args()


def main() -> None:
    args = parse()
    from newsrec_cli.evaluate.metrics import compute_metrics
    from newsrec_cli.evaluate.model_scores import run_scores
    from newsrec_cli.mind import load_dataset
    from newsrec_cli.runs.loading import load_run

    dataset = load_dataset(args.data)
    known, target = dataset.splits["train"], dataset.splits["valid"]
    labels, offsets = target.labels.astype(np.int64), target.candidate_offsets
    per: dict[tuple[str, str], list[np.ndarray]] = {}
    means: dict[tuple[str, str], list[dict[str, float]]] = {}
    for name, _, run_dir in trained_runs(args, VARIANTS):
        run = load_run(run_dir, "cpu")
        for protocol in ("offline", "replay"):
            scores = run_scores(run, dataset, target, known, protocol)
            result = compute_metrics(scores, labels, offsets, list(METRICS))
            per.setdefault((name, protocol), []).append(np.asarray(result.per_impression["auc"]))
            means.setdefault((name, protocol), []).append(dict(result.values))
    reference = ("defaults", "offline")
    table = []
    print(f"\n{args.data}: valid/ ({len(target):,} impressions), seeds {args.seeds}\n")
    print("| model | protocol | AUC | nDCG@10 | ΔAUC vs defaults offline, 95% CI |")
    print("|---|---|---|---|---|")
    for (name, protocol), values in means.items():
        delta = ""
        row: dict[str, object] = {
            "model": name,
            "protocol": protocol,
            **{m: [v[m] for v in values] for m in METRICS},
        }
        if reference in per and (name, protocol) != reference:
            delta, row["delta_auc"] = delta_auc(per[(name, protocol)], per[reference])
        table.append(row)
        cells = mean_cells(values, METRICS)
        print(f"| {name} | {protocol} | " + " | ".join(cells) + f" | {delta} |", flush=True)
    write_json(args.json, table)


if __name__ == "__main__":
    main()
