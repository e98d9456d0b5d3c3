"""Quality table of the README: the default model beside its baselines, on three datasets.

For each dataset it runs `newsrec ablate`'s engine with the default settings (and any `--alt`
alternatives), over `--seeds` seeds, and prints mean ± std over seeds for AUC, MRR, nDCG@5 and
nDCG@10, with the content (plain and centred), popularity and random baselines and paired
bootstrap 95% intervals against the centred content baseline. The store backend (the embed
defaults: all-MiniLM-L6-v2, ONNX int8 on CPU) is named in each table's heading.

Protocol: the default one (`newsrec train` with no option, `mind/protocol.py`):
- built-in synth data and mind_recon_dev have times: epochs are chosen on the last day of
  train/, and the table reports valid/, a later day that chose nothing;
- llm4rec_mind is one folder with one time for every impression: it is cut twice by impression,
  10% reported, 10% of the rest choosing the epochs (same users and news on both sides).

    python benchmarks/bench_quality.py --work bq                       # all three, 3 seeds
    python benchmarks/bench_quality.py --work bq-quick --quick          # CI: small synth, 1 seed, asserts
    python benchmarks/bench_quality.py --datasets mind_recon_dev --seeds 1
    python benchmarks/bench_quality.py --alt 'without content prior={"content_prior": false}'

From an empty `--work` everything is made: the synthetic data, the text stores, every run.
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
# --quick: a smaller synthetic dataset and one seed, so CI rebuilds the synthetic table in a
# minute or two on 2 cores; the model must still beat its own untrained prior's baseline there.
QUICK_SYNTH = ("--news", "1000", "--users", "1500")
BASELINES = ("content (centred)", "content", "popularity", "random")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=None, help="Seeds 0..N-1 (default 3; --quick: 1).")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI size: the synthetic table only, smaller data, one seed; exits 1 unless the model "
        "beats centred content on the reported split.",
    )
    parser.add_argument(
        "--alt",
        action="append",
        default=None,
        help='NAME={"setting": value} beside the defaults (repeatable; default: none).',
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


def dataset_path(name: str, work: Path, quick: bool) -> Path:
    if name == "synth":
        path = work / "synth"
        if not (path / "train" / "behaviors.tsv").exists():
            # the quickstart's data: 3,000 news, 2,000 users (--quick: 1,000 news, 1,500 users)
            newsrec("data", "synth", "--out", str(path), *(QUICK_SYNTH if quick else ()))
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


def backend_of(store: Path) -> str:
    """The store's model and runtime as its meta.json records them."""
    meta = json.loads((store / "meta.json").read_text(encoding="utf-8"))
    return f"{meta.get('provider')}: {meta.get('model')}"


def main() -> None:
    args = parse()
    from newsrec_cli.ablate import Variant, run_ablation
    from newsrec_cli.settings import DataSettings, TrainSettings
    from newsrec_cli.train import train_job

    seeds = args.seeds or (1 if args.quick else 3)
    datasets = ["synth"] if args.quick else args.datasets
    alts = []
    for spec in args.alt or ():
        name, _, changes = spec.partition("=")
        alts.append(Variant(name.strip(), json.loads(changes)))
    variants = [Variant("newsrec (defaults)", {}), *alts]
    stores = args.stores or args.work / "stores"
    print("command: python " + " ".join(sys.argv))
    begun = time.monotonic()
    tables = {}
    for name in datasets:
        started = time.monotonic()
        data = dataset_path(name, args.work, args.quick)
        store = store_for(name, data, stores)
        result = run_ablation(
            data,
            args.work / "runs" / name,
            store=store,
            variants=variants,
            seeds=list(range(seeds)),
            settings=TrainSettings(threads=args.threads),
            data_settings=DataSettings(),  # the default protocol: chosen on one split, reported on another
            say=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
            train=train_job,
        )
        seconds = time.monotonic() - started
        tables[name] = {**result.to_dict(), "store": backend_of(store), "seconds": round(seconds, 1)}
        print(f"\n## {name}: {result.split_note}")
        print(
            f"{result.impressions:,} impressions reported, {seeds} seed(s), text vectors {backend_of(store)}; "
            f"{seconds:.0f} s (data, store and runs made from scratch where absent)\n"
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
    print(f"\nwall time: {time.monotonic() - begun:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(tables, indent=2) + "\n")
    if args.quick:
        check_quick(tables["synth"])


def check_quick(table: dict) -> None:
    """The CI check: every row is there and the model beats centred content on the reported split."""
    rows = {row["name"]: row for row in table["rows"]}
    expected = ["newsrec (defaults)", *BASELINES]
    if list(rows) != expected:
        sys.exit(f"quick table rows {list(rows)}, expected {expected}")
    model, centred = rows["newsrec (defaults)"]["mean"]["auc"], rows["content (centred)"]["mean"]["auc"]
    if not model > centred:
        sys.exit(f"quick table: the model's AUC {model:.4f} does not beat centred content {centred:.4f}")
    print(f"quick check passed: model AUC {model:.4f} > centred content {centred:.4f}")


if __name__ == "__main__":
    main()
