"""Quality table of the README: the default model beside its baselines, on three datasets.

For each dataset it runs `newsrec ablate`'s engine with the default settings and the alternatives
named by `--alt`, over `--seeds` seeds, and prints mean ± std over seeds for AUC, MRR, nDCG@5 and
nDCG@10, with the content (plain and centred), popularity and random baselines and paired
bootstrap 95% intervals against the centred content baseline.

Protocol, the one the README recommends:
- built-in synth data and mind_recon_dev have times: epochs are chosen on the last day of
  train/ (`--valid-days 1`), and the table reports valid/, a later day that chose nothing;
- llm4rec_mind has one time for every impression: it is split by impression, the held-out 10%
  both chooses the epochs and is reported, so its model rows are optimistic (the table says so).

    python benchmarks/bench_quality.py                                   # all three, 3 seeds
    python benchmarks/bench_quality.py --datasets mind_recon_dev --seeds 1
    python benchmarks/bench_quality.py --alt 'without content prior={"content_prior": false}'

Text vectors come from the local all-MiniLM-L6-v2 (offline; `--stores` caches them between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = ("synth", "llm4rec_mind", "mind_recon_dev")
DEFAULT_ALTS = (
    'without content prior={"content_prior": false}',
    'user_encoder=candidate={"user_encoder": "candidate"}',
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--alt",
        action="append",
        default=None,
        help='NAME={"setting": value} beside the defaults (repeatable; default: no prior, candidate).',
    )
    parser.add_argument("--work", type=Path, default=Path("bench_quality"), help="Runs and data go here.")
    parser.add_argument(
        "--stores", type=Path, default=None, help="Cached text stores (default: WORK/stores)."
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="Also write the tables as JSON here.")
    return parser.parse_args()


def newsrec(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "newsrec_cli", *args], check=True, stdout=subprocess.DEVNULL)


def dataset_path(name: str, work: Path) -> Path:
    if name == "synth":
        path = work / "synth"
        if not (path / "train" / "behaviors.tsv").exists():
            newsrec("data", "synth", "--out", str(path))  # the quickstart's data: 3,000 news, 2,000 users
        return path
    path = SHARED / name
    if not path.exists():
        sys.exit(f"{path} not found (the shared MIND fixtures)")
    return path


def store_for(name: str, data: Path, stores: Path) -> Path:
    """The cached store of the dataset; made (all-MiniLM-L6-v2, the embed defaults) when absent."""
    store = stores / name
    if not (store / "meta.json").exists():
        newsrec("embed", "news", str(data), "--out", str(store))
    return store


def main() -> None:
    args = parse()
    from newsrec_cli.ablate import Variant, run_ablation
    from newsrec_cli.settings import DataSettings, TrainSettings

    alts = []
    for spec in args.alt or DEFAULT_ALTS:
        name, _, changes = spec.partition("=")
        alts.append(Variant(name.strip(), json.loads(changes)))
    variants = [Variant("newsrec (defaults)", {}), *alts]
    stores = args.stores or args.work / "stores"
    tables = {}
    for name in args.datasets:
        data = dataset_path(name, args.work)
        store = store_for(name, data, stores)
        timed = name != "llm4rec_mind"
        started = time.monotonic()
        result = run_ablation(
            data,
            args.work / "runs" / name,
            store=store,
            variants=variants,
            seeds=list(range(args.seeds)),
            settings=TrainSettings(threads=args.threads),
            data_settings=DataSettings(valid_days=1) if timed else DataSettings(),
            say=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
        )
        tables[name] = result.to_dict()
        print(f"\n## {name}: {result.split_note}")
        print(
            f"{result.impressions:,} impressions, {args.seeds} seed(s), {time.monotonic() - started:.0f} s\n"
        )
        print("| model | AUC | MRR | nDCG@5 | nDCG@10 | ΔAUC vs content (centred), 95% CI |")
        print("|---|---|---|---|---|---|")
        for row in result.rows:
            cells = []
            for metric in ("auc", "mrr", "ndcg@5", "ndcg@10"):
                mean, std = row.summary(metric)
                cells.append(f"{mean:.4f} ± {std:.4f}" if row.kind == "model" else f"{mean:.4f}")
            ci = row.vs_content.get("auc")
            delta = f"{ci[0]:+.4f} [{ci[1]:+.4f}, {ci[2]:+.4f}]" if ci else ""
            print(f"| {row.name} | " + " | ".join(cells) + f" | {delta} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(tables, indent=2) + "\n")


if __name__ == "__main__":
    main()
