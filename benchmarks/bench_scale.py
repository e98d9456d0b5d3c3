"""Benchmark of MIND-large on one machine: parse once, memory-mapped loads, training, streamed evaluation.

Data: `newsrec data synth --preset large` (161,013 news, 1M users, 2,232,748 training and 2.4M
labelled valid impressions, MIND's history and candidate-length distributions; ~2.8 GB of
behaviors), made once under --root, or an existing dataset given with --data. The text store is
random unit 384-d vectors (MiniLM's size; values do not change the speed): embedding 161k news
with MiniLM on 2 CPU cores would take ~40 min and measure nothing about scale.

Every step runs as its own process (the installed `newsrec` command, as a user runs it) and its
peak RSS is read from `os.wait4` (the child's, and its reaped children's, VmHWM):

1. first parse: `newsrec data prepare` with an empty cache folder (NEWSREC_CACHE)
2. cached load: the same command again (memory-maps the arrays; news.tsv is still read)
3. training, 1 process: `newsrec train --max-steps N` (an epoch of 3.3M clicks takes hours on
   2 cores; samples/s of the steps is what scales), validation on a sample
4. training, 2 processes: the same with `--nproc 2` when `newsrec train` has that option
5. evaluation of the full valid split with the step-3 model (`newsrec evaluate RUN --write-predictions`)
6. scoring the prediction file it wrote (`newsrec evaluate --predictions`)

Targets on the 2-core, 24 GB machine: cached load <= 10 s; training peak RSS <= 6 GB;
evaluation of 2.4M impressions <= 5 min with peak RSS <= 8 GB.

    python benchmarks/bench_scale.py --root /work/scale_data            # full size
    python benchmarks/bench_scale.py --root /tmp/bs --scale 0.01         # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

NEWSREC = [sys.executable, "-m", "newsrec_cli"]
console = Console()


@dataclass
class Step:
    name: str
    seconds: float
    cpu: float  # user + system seconds of the child and its reaped children
    peak_rss: int  # bytes
    stdout: str
    returncode: int


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="Folder for the data, cache and runs.")
    parser.add_argument(
        "--data", type=Path, default=None, help="Use this dataset instead of synthesising one."
    )
    parser.add_argument("--scale", type=float, default=1.0, help="Share of MIND-large's size (default 1).")
    parser.add_argument("--max-steps", type=int, default=200, help="Training steps measured (default 200).")
    parser.add_argument("--batch-size", type=int, default=64, help="Clicks per step (default 64).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of one training process.")
    parser.add_argument(
        "--skip", default="", help="Comma-separated steps to skip: parse,train,nproc,evaluate."
    )
    return parser.parse_args()


def run(name: str, args: list[str], env: dict[str, str] | None = None) -> Step:
    """Run a child process: wall time and peak RSS from os.wait4 (the child's own, or that of the
    largest of its reaped children, such as torchrun's workers)."""
    console.print(f"[bold]{name}[/]: {' '.join(args)}", highlight=False)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(args, stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        console.print(
            f"[red]{name} failed ({child.returncode})[/]: {stderr.strip()[-2000:]}", highlight=False
        )
    cpu = usage.ru_utime + usage.ru_stime
    return Step(name, seconds, cpu, usage.ru_maxrss * 1024, stdout, child.returncode)


def synth_large(data: Path, scale: float) -> Step:
    """`newsrec data synth --preset large --scale SCALE --out DATA` as its own process."""
    command = [*NEWSREC, "data", "synth", "--preset", "large", "--scale", str(scale), "--out", str(data)]
    return run("synth", command)


def timing(step: Step) -> str:
    """Wall time and CPU time: on a shared machine the CPU time says more than the wall time."""
    return f"{step.seconds:,.1f} s (CPU {step.cpu:,.1f} s)"


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def make_store(data: Path, out: Path, dim: int = 384) -> Path:
    """bench_train's random unit store (timing only), made once under --root."""
    from bench_train import make_store as random_unit_store  # the script's folder is on sys.path

    return out if (out / "meta.json").exists() else random_unit_store(data, out, dim)


def main() -> None:
    args = parse()
    skip = set(filter(None, args.skip.split(",")))
    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str]] = []  # what, time, peak RSS, note

    data = args.data
    if data is None:
        data = root / ("large" if args.scale == 1 else f"large-{args.scale:g}")
        if not (data / "valid" / "behaviors.tsv").exists():
            step = synth_large(data, args.scale)
            rows.append(("synthesise the dataset (once)", timing(step), gib(step.peak_rss), ""))
    behaviors_gb = sum((data / s / "behaviors.tsv").stat().st_size for s in ("train", "valid")) / 1e9

    # Later steps use the default cache (beside the data); the first parse writes to a fresh folder.
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    sizes = ""
    if "parse" not in skip:
        fresh = root / "bench-first-parse"
        shutil.rmtree(fresh, ignore_errors=True)
        step = run(
            "first parse",
            [*NEWSREC, "data", "prepare", str(data), "--json"],
            {**env, "NEWSREC_CACHE": str(fresh)},
        )
        shutil.rmtree(fresh, ignore_errors=True)
        report = json.loads(step.stdout)
        splits = {r["split"]: r for r in report["splits"]}
        sizes = ", ".join(
            f"{s} {r['impressions']:,} imps / {r['candidates']:,} cands" for s, r in splits.items()
        )
        cache_gb = sum(r["bytes"] for r in report["splits"]) / 1e9
        rows.append(
            (
                f"first parse of behaviors.tsv ({behaviors_gb:.2f} GB) into the cache",
                timing(step),
                gib(step.peak_rss),
                f"{sizes}; cache {cache_gb:.2f} GB",
            )
        )
    run("make sure the cache exists", [*NEWSREC, "data", "prepare", str(data), "--json"], env)
    step = run("cached load", [*NEWSREC, "data", "prepare", str(data), "--json"], env)
    report = json.loads(step.stdout)
    rows.append(
        (
            "cached load (news.tsv parsed, behaviors memory-mapped)",
            f"{report['seconds']:,.1f} s in load_dataset; command {timing(step)}",
            gib(step.peak_rss),
            "target <= 10 s",
        )
    )

    store = make_store(data, root / "store-random-384")
    run_dir = root / "run-1proc"
    train_args = [
        "train", str(data), "-e", str(store), "--epochs", "1", "--max-steps", str(args.max_steps),
        "--batch-size", str(args.batch_size), "--valid-impressions", "2000", "--json",
    ]  # fmt: skip
    if "train" not in skip:
        step = run(
            "train, 1 process",
            [*NEWSREC, *train_args, "--out", str(run_dir), "--overwrite", "--threads", str(args.threads)],
            env,
        )
        result = json.loads(step.stdout)
        record = result["history"][-1]
        info = result["info"]
        rows.append(
            (
                f"train, 1 process x {args.threads} threads: {args.max_steps} steps of {args.batch_size} clicks",
                f"{record['samples_per_s']:,.0f} samples/s",
                gib(step.peak_rss),
                f"{info['clicks']:,} clicks/epoch: an epoch ~{info['clicks'] / record['samples_per_s'] / 3600:.1f} h; "
                f"command {timing(step)}; target RSS <= 6 GB",
            )
        )

    help_text = subprocess.run(
        [*NEWSREC, "train", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    ).stdout
    if "nproc" in skip:
        rows.append(("train, 2 processes", "-", "-", "skipped (--skip nproc)"))
    elif "--nproc" not in help_text:
        rows.append(("train, 2 processes", "-", "-", "skipped: this newsrec train has no --nproc option"))
    else:
        step = run(
            "train, 2 processes",
            [
                *NEWSREC,
                *train_args,
                "--out",
                str(root / "run-2proc"),
                "--overwrite",
                "--nproc",
                "2",
                "--threads",
                "1",
            ],
            env,
        )
        if step.returncode == 0:
            record = json.loads(step.stdout)["history"][-1]
            rows.append(
                (
                    f"train, 2 processes x 1 thread (DDP, gloo): {args.max_steps} steps",
                    f"{record['samples_per_s']:,.0f} samples/s",
                    gib(step.peak_rss),
                    f"peak RSS of the largest process; command {timing(step)}",
                )
            )
        else:
            rows.append(("train, 2 processes", "-", "-", f"failed (exit {step.returncode})"))

    if "evaluate" not in skip:
        out = root / "eval"
        out.mkdir(exist_ok=True)
        step = run(
            "evaluate, model",
            [*NEWSREC, "evaluate", str(run_dir), "--data", str(data), "--split", "valid",
             "--write-predictions", "--out", str(out), "--json"],
            env,
        )  # fmt: skip
        report = json.loads(step.stdout)
        model_row = report["rows"][0]
        rows.append(
            (
                f"evaluate the full valid split ({report['impressions']:,} impressions, "
                f"{report['candidates']:,} candidates), model + prediction.txt",
                timing(step),
                gib(step.peak_rss),
                f"AUC {model_row['values']['auc']:.4f}; target <= 300 s, RSS <= 8 GB",
            )
        )
        predictions = out / "prediction.txt"
        step = run(
            "evaluate --predictions",
            [*NEWSREC, "evaluate", "--predictions", str(predictions), "--data", str(data), "--split", "valid",
             "--out", str(root / "eval-file"), "--json"],
            env,
        )  # fmt: skip
        file_row = json.loads(step.stdout)["rows"][0]
        rows.append(
            (
                f"evaluate --predictions ({predictions.stat().st_size / 1e6:,.0f} MB prediction.txt)",
                timing(step),
                gib(step.peak_rss),
                f"MRR {file_row['values']['mrr']:.4f} (model row {model_row['values']['mrr']:.4f})",
            )
        )

    table = Table(title=f"MIND-large-shaped data on this machine ({data})", title_justify="left")
    for column in ("step", "time / rate", "peak RSS", "note"):
        table.add_column(
            column, overflow="fold", justify="right" if column in ("time / rate", "peak RSS") else "left"
        )
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"CPU: {os.cpu_count()} cores; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
