"""Replay evaluation against offline evaluation on MIND-large-shaped data: wall time, CPU, peak RSS.

The acceptance line of issue 22: replay evaluation of the 2.4M valid impressions of
`data synth --preset large` stays within 1.5x of the offline evaluation's time. Each step runs as
its own `newsrec` process, as a user runs it (bench_scale.py's `run`: peak RSS from os.wait4):

1. `newsrec data synth --preset large [--scale F]` once under --root (skipped when present);
2. a brief run with popularity, so the protocol changes the model's scores: `newsrec train
   --use-popularity --epochs 1 --max-steps N --dim 32` on random 384-d text vectors;
3. `newsrec evaluate RUN --protocol offline` and `newsrec evaluate RUN --protocol replay` on the
   same run and split (the first evaluate also parses the split into the cache: a warm-up
   `data prepare` runs before both, so neither pays for it).

    python benchmarks/bench_replay.py --root /work/replay_data                 # full size
    python benchmarks/bench_replay.py --root /tmp/replay --scale 0.25 --json replay.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_scale import (  # the script's folder is on sys.path
    NEWSREC,
    gib,
    make_store,
    run,
    synth_large,
    timing,
)

TARGET = 1.5  # replay time at most this many times the offline time


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="Folder for the data, store and run.")
    parser.add_argument("--scale", type=float, default=1.0, help="Share of MIND-large's size (default 1).")
    parser.add_argument("--max-steps", type=int, default=20, help="Training steps of the brief run.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def must(step: object) -> None:
    if getattr(step, "returncode", 1) != 0:
        sys.exit(f"{getattr(step, 'name', 'step')} failed")


def main() -> None:
    args = parse()
    data = args.root / "large"
    if not (data / "valid" / "behaviors.tsv").exists():
        must(synth_large(data, args.scale))
    must(run("prepare", [*NEWSREC, "data", "prepare", str(data)]))
    store = make_store(data, args.root / "store-random-384")
    run_dir = args.root / "run-popularity"
    if not (run_dir / "model.pt").exists():
        must(
            run(
                "train",
                [*NEWSREC, "train", str(data), "-e", str(store), "--out", str(run_dir), "--overwrite",
                 "--use-popularity", "--epochs", "1", "--max-steps", str(args.max_steps), "--dim", "32",
                 "--valid-impressions", "2000", "--threads", str(args.threads)],
            )
        )  # fmt: skip
    steps = {}
    for protocol in ("offline", "replay"):
        step = run(
            f"evaluate --protocol {protocol}",
            [*NEWSREC, "evaluate", str(run_dir), "--data", str(data), "--split", "valid",
             "--protocol", protocol, "--json"],
        )  # fmt: skip
        must(step)
        steps[protocol] = (step, json.loads(step.stdout))
    offline, replay = steps["offline"][0], steps["replay"][0]
    impressions = steps["offline"][1].get("impressions")
    ratio = replay.seconds / offline.seconds
    print(f"\n{data} ({impressions:,} impressions), scale {args.scale}\n")
    print("| protocol | wall (CPU) | peak RSS | AUC |")
    print("|---|---|---|---|")
    for protocol, (step, report) in steps.items():
        auc = next(
            (row["values"]["auc"] for row in report["rows"] if row.get("kind") == "model"), float("nan")
        )
        print(f"| {protocol} | {timing(step)} | {gib(step.peak_rss)} | {auc:.4f} |")
    print(
        f"\nreplay / offline wall time: {ratio:.2f}x (CPU {replay.cpu / offline.cpu:.2f}x); target <= {TARGET}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "scale": args.scale,
                    "impressions": impressions,
                    **{
                        p: {"seconds": s.seconds, "cpu": s.cpu, "peak_rss": s.peak_rss}
                        for p, (s, _) in steps.items()
                    },
                    "ratio": ratio,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
