"""What `--finetune-text K` gives: frozen store vectors against the last K text layers fine-tuned.

Same data, seeds and settings for every row; the epoch is chosen on the last day of train/
(`--valid-days 1`) and the table reports valid/, a later day that chose nothing (the README's
protocol). It prints AUC, MRR and nDCG@10 (mean ± std over seeds), the paired-bootstrap 95%
interval of ΔAUC against the frozen row, and the training seconds per epoch.

    python benchmarks/bench_finetune.py                                 # built-in synth data, K = 1, 2
    python benchmarks/bench_finetune.py --k 1 --seeds 2 --set history=20
    python benchmarks/bench_finetune.py --data SLICE --store SLICE_STORE --k 1

The store must be the local model's, with text fingerprints; without `--store` one is made with
sentence-transformers itself (`embed --backend torch`: float32, so epoch 0 of a fine-tuned run
equals the frozen run's). On CPU keep the data small: every step runs K transformer layers over the
texts of the batch's news.
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


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MIND folder (default: built-in synth).")
    parser.add_argument("--news", type=int, default=300, help="Synth news (without --data).")
    parser.add_argument("--users", type=int, default=300, help="Synth users (without --data).")
    parser.add_argument("--store", type=Path, default=None, help="Local-model store (default: made).")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2], help="Fine-tuned layer counts.")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="A train setting for every row, key=JSON.")
    parser.add_argument("--work", type=Path, default=Path("bench_finetune"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def newsrec(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "newsrec_cli", *args], check=True, stdout=subprocess.DEVNULL)


def seconds_per_epoch(run_dir: Path) -> float:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    seconds = [json.loads(line)["seconds"] for line in lines if json.loads(line)["epoch"] > 0]
    return sum(seconds) / max(len(seconds), 1)


def main() -> None:
    args = parse()
    from newsrec_cli.ablate import Variant, run_ablation
    from newsrec_cli.ablate.run import run_dir_of
    from newsrec_cli.settings import DataSettings, TrainSettings
    from newsrec_cli.train import train_job

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = args.work / "synth"
        if not (data / "train" / "behaviors.tsv").exists():
            newsrec("data", "synth", "--out", str(data), "--news", str(args.news), "--users", str(args.users))
    store = args.store or args.work / "store"
    if not (store / "meta.json").exists():
        newsrec("embed", str(data), "--out", str(store), "--backend", "torch", "--threads", str(args.threads))
    common = {key: json.loads(value) for key, value in (s.split("=", 1) for s in args.set)}
    variants = [Variant("frozen store vectors", {})]
    variants += [Variant(f"--finetune-text {k}", {"finetune_text": k}) for k in args.k]
    seeds = list(range(args.seeds))
    out = args.work / "runs" / data.name
    started = time.monotonic()
    result = run_ablation(
        data,
        out,
        store=store,
        variants=variants,
        seeds=seeds,
        settings=TrainSettings(threads=args.threads, **common),
        data_settings=DataSettings(valid_days=1),
        say=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
        train=train_job,
    )
    print(f"\n## {data}: {result.split_note}")
    print(
        f"{result.impressions:,} impressions, {len(seeds)} seed(s), settings {common or 'defaults'}, ", end=""
    )
    print(f"{args.threads} thread(s), {time.monotonic() - started:.0f} s\n")
    print("| model | AUC | MRR | nDCG@10 | ΔAUC vs frozen, 95% CI | s/epoch | best epochs |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for row in result.rows:
        cells = []
        for metric in ("auc", "mrr", "ndcg@10"):
            mean, std = row.summary(metric)
            cells.append(f"{mean:.4f} ± {std:.4f}" if row.kind == "model" else f"{mean:.4f}")
        ci = row.vs_full.get("auc")
        delta = f"{ci[0]:+.4f} [{ci[1]:+.4f}, {ci[2]:+.4f}]" if ci else ""
        speed, epochs = "", ""
        variant = next((v for v in variants if v.name == row.name), None)
        if variant is not None:
            dirs = [run_dir_of(out, variant, seed) for seed in seeds]
            speed = f"{sum(seconds_per_epoch(d) for d in dirs) / len(dirs):.1f}"
            epochs = ", ".join(str(_best_epoch(d)) for d in dirs)
        print(f"| {row.name} | " + " | ".join(cells) + f" | {delta} | {speed} | {epochs} |", flush=True)
        rows.append({**row.to_dict(), "seconds_per_epoch": speed, "best_epochs": epochs})
    if args.json:
        args.json.write_text(json.dumps({"split": result.split_note, "rows": rows}, indent=2) + "\n")


def _best_epoch(run_dir: Path) -> int:
    import torch

    return int(torch.load(run_dir / "model.pt", weights_only=True)["epoch"])


if __name__ == "__main__":
    main()
