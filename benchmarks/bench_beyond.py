"""What the beyond-accuracy metrics cost `newsrec evaluate` on MIND-large-shaped data.

Issue 27's target: `evaluate` with every beyond-accuracy metric (ILD, categories, calibration,
novelty, popularity, coverage, Gini at k = 5 and 10) takes at most 1.3x the time it takes without
them, in bounded memory. Each evaluation runs as its own `newsrec` process, as a user runs it
(bench_scale.py's `run`: wall time, CPU time and peak RSS from os.wait4), back to back:

1. `newsrec data synth --preset large [--scale F]` once under --root (skipped when present) and
   `newsrec data prepare` (the parse-once cache, so no evaluation pays for parsing);
2. a random unit 384-d text store (MiniLM's size; the values do not change the speed);
3. `newsrec evaluate --data DATA --baselines --embeddings STORE --metrics auc,mrr,ndcg@5,ndcg@10`
   (random, popularity, content and centred content rows: four rankings of every impression),
   then the same with `,beyond` added, then (--repeat) the pair again in the other order.

The ratio is taken on CPU time (user + system) as well as wall time: the machine is shared, and
the CPU time of a process is what its own work costs.

    python benchmarks/bench_beyond.py --root /work/tmp-large                # full size
    python benchmarks/bench_beyond.py --root /tmp/bb --scale 0.05 --json beyond.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_scale import NEWSREC, Step, gib, make_store, run, synth_large, timing  # the script's folder
from rich.console import Console
from rich.table import Table

TARGET = 1.3  # with the beyond metrics, at most this many times the time without
ACCURACY = "auc,mrr,ndcg@5,ndcg@10"
console = Console()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="Folder for the data and the store.")
    parser.add_argument("--data", type=Path, default=None, help="An existing dataset (default ROOT/large).")
    parser.add_argument("--scale", type=float, default=1.0, help="Share of MIND-large's size (default 1).")
    parser.add_argument("--repeat", action="store_true", help="Run the pair again, in the other order.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    return parser.parse_args()


def must(step: Step) -> Step:
    if step.returncode != 0:
        sys.exit(f"{step.name} failed")
    return step


def evaluate(name: str, data: Path, store: Path, metrics: str) -> Step:
    command = [*NEWSREC, "evaluate", "--data", str(data), "--baselines", "--embeddings", str(store)]
    return must(run(name, [*command, "--metrics", metrics, "--json"], env={"OMP_WAIT_POLICY": "PASSIVE"}))


def main() -> None:
    args = parse()
    data = args.data or args.root / ("large" if args.scale == 1 else f"large-{args.scale:g}")
    if not (data / "valid" / "behaviors.tsv").exists():
        must(synth_large(data, args.scale))
    must(run("prepare", [*NEWSREC, "data", "prepare", str(data)]))
    store = make_store(data, args.root / f"store-random-384-{data.name}")

    order = [("without", ACCURACY), ("with", f"{ACCURACY},beyond")]
    if args.repeat:
        order += order[::-1]
    steps: list[tuple[str, Step]] = []
    for label, metrics in order:
        steps.append((label, evaluate(f"evaluate {label} beyond", data, store, metrics)))
    report = json.loads(steps[-1][1].stdout)

    table = Table(
        title=f"evaluate, {report['impressions']:,} impressions, 4 baseline rows: beyond-accuracy cost"
    )
    for column in ("metrics", "time", "peak RSS"):
        table.add_column(column, justify="left" if column == "metrics" else "right")
    for label, step in steps:
        table.add_row(f"{label} beyond", timing(step), gib(step.peak_rss))
    console.print(table)

    def total(label: str, attr: str) -> float:
        return sum(getattr(step, attr) for name, step in steps if name == label)

    wall = total("with", "seconds") / total("without", "seconds")
    cpu = total("with", "cpu") / total("without", "cpu")
    verdict = "meets" if cpu <= TARGET else "misses"
    console.print(f"ratio with/without: wall {wall:.2f}x, CPU {cpu:.2f}x ({verdict} the {TARGET}x target)")
    if args.json:
        figures = {
            "impressions": report["impressions"],
            "candidates": report["candidates"],
            "steps": [
                {"beyond": label, "seconds": s.seconds, "cpu": s.cpu, "peak_rss": s.peak_rss}
                for label, s in steps
            ],
            "ratio_wall": wall,
            "ratio_cpu": cpu,
            "target": TARGET,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
