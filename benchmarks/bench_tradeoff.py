"""Beyond accuracy on a held-out day: what popularity does to the lists, and what re-rankers cost.

Trains the defaults and `--use-popularity` (ctr head, chosen by replay) per seed, as
bench_popularity.py does (variant_runs.py: runs in --work are reused), and scores valid/, a later
day that chose nothing, both ways (the impression's candidates re-ranked; retrieved from the
split's catalogue, `evaluate --retrieve`) under both protocols. It prints two tables:

1. Popularity: Novelty@10, Popularity@10, Coverage@10 and Calibration@10 of each model, means
   ± std over seeds, and the popularity model's difference to the defaults under the same
   protocol and way, with a paired bootstrap 95% interval (per-impression values averaged over
   seeds first; Coverage@10 averaged over seeds in every resample).
2. Re-rankers: the defaults re-ranked by MMR and by calibration at three λ, offline, candidates:
   the difference in nDCG@10 and in ILD@10 or Calibration@10 to λ = 0, with intervals.

    python benchmarks/bench_tradeoff.py --data ../shared/data/mind_recon_dev --store STORE --seeds 0 1 2
"""

from __future__ import annotations

import warnings

import numpy as np
from bench_popularity import VARIANTS
from variant_runs import trained_runs, variant_parser, write_json

MODELS = ("defaults", "popularity ctr, chosen by replay")
LIST_METRICS = ("novelty@10", "popularity@10", "coverage@10", "calibration@10")
WEIGHTS = (0.2, 0.5, 1.0)


def parse():  # noqa: ANN201 - argparse.Namespace
    parser = variant_parser(__doc__.splitlines()[0], {m: VARIANTS[m] for m in MODELS}, "bench_tradeoff")
    parser.add_argument("--resamples", type=int, default=1000)
    return parser.parse_args()


def main() -> None:
    args = parse()
    from newsrec_cli.evaluate.model_scores import run_scores
    from newsrec_cli.evaluate.paired import compare
    from newsrec_cli.evaluate.retrieve import model_scorer, retrieve_pool, split_catalogue
    from newsrec_cli.evaluate.tradeoff import K, candidate_lists, retrieved_lists, split_facts
    from newsrec_cli.mind import load_dataset
    from newsrec_cli.rerank import RerankSpec, pool_size
    from newsrec_cli.runs.loading import load_run

    dataset = load_dataset(args.data)
    known, target = dataset.splits["train"], dataset.splits["valid"]
    catalogue = split_catalogue(target)
    facts = None
    lists: dict[tuple[str, str, str], list[tuple[dict[str, np.ndarray], np.ndarray]]] = {}
    rerankers: dict[str, list[tuple[dict[str, np.ndarray], np.ndarray]]] = {}
    for name, _, run_dir in trained_runs(args, {m: VARIANTS[m] for m in args.variants}):
        run = load_run(run_dir, "cpu")
        if facts is None:
            facts = split_facts(dataset, known, target, run.store_path)
        for protocol in ("offline", "replay"):
            scores = run_scores(run, dataset, target, known, protocol)
            by_candidates = candidate_lists(scores, target, facts)
            lists.setdefault((name, protocol, "candidates"), []).append(by_candidates(RerankSpec()))
            score = model_scorer(run, dataset, target, known, catalogue, protocol)
            pool = retrieve_pool(target, catalogue, score, pool_size(K))
            lists.setdefault((name, protocol, "retrieve"), []).append(
                retrieved_lists(pool, target, facts)(RerankSpec())
            )
            if name == "defaults" and protocol == "offline":
                for method in ("mmr", "calibration"):
                    for weight in (0.0, *WEIGHTS):
                        key = f"{method}:{weight:g}"
                        rerankers.setdefault(key, []).append(by_candidates(RerankSpec(method, weight)))  # type: ignore[arg-type]
    assert facts is not None
    print(f"\n{args.data}: valid/ ({len(target):,} impressions), seeds {args.seeds}\n")
    table: list[dict[str, object]] = []
    print("| model | protocol | ranking | " + " | ".join(LIST_METRICS) + " |")
    print("|---|---|---|" + "---|" * len(LIST_METRICS))
    for protocol in ("offline", "replay"):
        for ranking in ("candidates", "retrieve"):
            keys = [(m, protocol, ranking) for m in args.variants if (m, protocol, ranking) in lists]
            variants = [_variant(lists[key]) for key in keys]
            compared = compare(variants, target, facts, LIST_METRICS, resamples=args.resamples)
            for key, (values, deltas) in zip(keys, compared, strict=True):
                seeds = lists[key]
                cells = []
                for metric in LIST_METRICS:
                    per_seed = [_seed_value(values_, top, metric, facts) for values_, top in seeds]
                    cell = _mean_std(per_seed)
                    if key[0] != keys[0][0]:
                        mid, low, high = deltas[metric]
                        cell += f"<br>{mid:+.4f} [{low:+.4f}, {high:+.4f}]"
                    cells.append(cell)
                table.append(
                    {
                        "model": key[0],
                        "protocol": protocol,
                        "ranking": ranking,
                        "values": values,
                        "deltas": deltas,
                    }
                )
                print(f"| {key[0]} | {protocol} | {ranking} | " + " | ".join(cells) + " |", flush=True)
    if rerankers:
        print("\nRe-rankers on the defaults, offline, candidates (difference to λ = 0, 95% interval):\n")
        print("| re-ranker | nDCG@10 | ΔnDCG@10 | ILD@10 | ΔILD@10 | Calibration@10 | ΔCalibration@10 |")
        print("|---|---|---|---|---|---|---|")
    for method in ("mmr", "calibration") if rerankers else ():
        keys = [f"{method}:{w:g}" for w in (0.0, *WEIGHTS)]
        variants = [_variant(rerankers[key]) for key in keys]
        names = ("ndcg@10", "ild@10", "calibration@10")
        compared = compare(variants, target, facts, names, resamples=args.resamples)
        for key, (values, deltas) in zip(keys, compared, strict=True):
            cells = []
            for metric in names:
                mid, low, high = deltas[metric]
                cells += [
                    f"{values[metric]:.4f}",
                    "" if key.endswith(":0") else f"{mid:+.4f} [{low:+.4f}, {high:+.4f}]",
                ]
            table.append({"reranker": key, "values": values, "deltas": deltas})
            print(f"| {key} | " + " | ".join(cells) + " |", flush=True)
    write_json(args.json, table)


def _variant(seeds: list[tuple[dict[str, np.ndarray], np.ndarray]]):  # noqa: ANN202
    """Per-impression values averaged over seeds (NaN where a seed skips one), all seeds' lists."""
    from newsrec_cli.evaluate.paired import Variant

    names = seeds[0][0].keys()
    with warnings.catch_warnings():  # an impression every seed skips stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        values = {m: np.nanmean(np.stack([v[m] for v, _ in seeds]), axis=0) for m in names}
    return Variant(values, [top for _, top in seeds])


def _seed_value(values: dict[str, np.ndarray], top: np.ndarray, metric: str, facts) -> float:  # noqa: ANN001
    from newsrec_cli.evaluate import beyond

    if metric == "coverage@10":
        return beyond.coverage(beyond.exposure(top, len(facts.categories)), facts.catalogue)
    x = values[metric]
    return float(np.nanmean(x))


def _mean_std(values: list[float]) -> str:
    from newsrec_cli.ablate.stats import mean_std

    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


if __name__ == "__main__":
    main()
