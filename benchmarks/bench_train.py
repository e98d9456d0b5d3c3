"""Benchmark of `newsrec train`: one epoch at MIND-small scale on this machine.

MIND-small's training log has ~157k impressions and ~236k clicks over ~65k news. This script
writes a synthetic MIND dataset of that size (`newsrec data synth`, scaled by `--scale`), a store
of random unit 384-d vectors (all-MiniLM-L6-v2's size; values do not change the speed), and trains
the default model for one epoch (listwise loss, K=4, history 50), then validates on the last day.
It reports clicks/s and impressions/s of the epoch, the validation time, and peak memory (RSS of
this process, which only trains; on CUDA also the peak GPU memory). Target on the 2-core CPU:
the epoch in under 10 minutes (~400 clicks/s).

    python benchmarks/bench_train.py                 # full size (the lead runs this)
    python benchmarks/bench_train.py --scale 0.02    # a quick check
    python benchmarks/bench_train.py --device cuda   # on a GPU (bf16 autocast)
    python benchmarks/bench_train.py --scale 0.05 --compare-determinism --threads 1

`--compare-determinism` trains the same epoch again with torch's unordered CPU kernels (what
newsrec did before training became deterministic, train/determinism.py), alternating the two
`--repeat` times, and reports each one's epoch seconds, CPU seconds and the cost of the order.

OMP_WAIT_POLICY defaults to PASSIVE here (set before torch loads): on a CPU shared with other
processes, OpenMP threads that spin while waiting lose most of their time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIND_SMALL_NEWS = 65_238
MIND_SMALL_USERS = 50_000
MIND_SMALL_TRAIN_IMPRESSIONS = 156_965
DAYS = 7  # the last day becomes valid/


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="Share of MIND-small's size (default 1).")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda.")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)."
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers.")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="Clicks per step (default: the setting's)."
    )
    parser.add_argument("--dim", type=int, default=None, help="Model size (default: the setting's).")
    parser.add_argument("--omp-wait", choices=["passive", "active"], default="passive")
    parser.add_argument("--keep", type=Path, default=None, help="Write data and run here and keep them.")
    parser.add_argument(
        "--compare-determinism",
        action="store_true",
        help="Also train with unordered (nondeterministic) CPU kernels and report the cost.",
    )
    parser.add_argument("--repeat", type=int, default=2, help="Pairs of runs of --compare-determinism.")
    return parser.parse_args()


def make_data(root: Path, scale: float) -> Path:
    """A synthetic MIND dataset of MIND-small's size times `scale`, written by a child process."""
    users = max(50, round(MIND_SMALL_USERS * scale))
    per_user = MIND_SMALL_TRAIN_IMPRESSIONS * DAYS / (DAYS - 1) / MIND_SMALL_USERS
    news = max(200, round(MIND_SMALL_NEWS * scale))
    cmd = [
        sys.executable,
        "-m",
        "newsrec_cli",
        "data",
        "synth",
        "--out",
        str(root / "data"),
        "--news",
        str(news),
        "--users",
        str(users),
        "--days",
        str(DAYS),
        "--impressions-per-user",
        f"{per_user:.3f}",
        "--seed",
        "0",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return root / "data"


def make_store(data: Path, out: Path, dim: int = 384) -> Path:
    import numpy as np

    from newsrec_cli.embed.store import commit, new_meta
    from newsrec_cli.mind import load_dataset

    ids = load_dataset(data, behaviors=False).news.ids
    vectors = np.random.default_rng(0).normal(size=(len(ids), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    signature = {
        "kind": "news",
        "provider": "bench",
        "model": "random-unit",
        "dimension": dim,
        "template": "{title}",
        "normalized": True,
    }
    commit(out, ids, vectors, new_meta(signature))
    return out


def main() -> None:
    args = parse()
    os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait.upper())
    import torch
    from rich.console import Console
    from rich.table import Table

    from newsrec_cli.runs.records import TrainCallbacks
    from newsrec_cli.settings import TrainSettings
    from newsrec_cli.train import train

    console = Console()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_train_"))
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = make_data(root, args.scale)
    store = make_store(data, root / "store")
    prepare = time.perf_counter() - start

    class Clock(TrainCallbacks):
        validate_start = 0.0
        validate_end = 0.0

        def on_validate(self, epoch: int, impressions: int) -> None:
            self.validate_start = time.perf_counter()

        def on_epoch_end(self, record: object) -> None:
            self.validate_end = time.perf_counter()

    overrides = {
        k: v
        for k, v in {"batch_size": args.batch_size, "dim": args.dim, "threads": args.threads}.items()
        if v is not None
    }
    settings = TrainSettings(epochs=1, device=args.device, workers=args.workers, **overrides)
    clock = Clock()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(data, root / "run", store=store, settings=settings, callbacks=clock)
    if args.compare_determinism:
        compare_determinism(console, data, store, root, settings, args.repeat)
    record = result.history[-1]
    info = result.info
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    table = Table(
        title=f"newsrec train, one epoch (scale {args.scale:g} of MIND-small)", title_justify="left"
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        (
            "device",
            f"{info.device} ({info.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})",
        ),
        ("train impressions", f"{info.train_impressions:,}"),
        ("clicks (samples, K=4)", f"{info.clicks:,}"),
        ("news / with an ID vector", f"{info.news:,} / {info.news_with_id:,}"),
        ("model", f"{' + '.join(info.modalities)}, dim {settings.dim}, {info.parameters:,} parameters"),
        ("steps (batch)", f"{info.steps_per_epoch:,} ({settings.batch_size})"),
        ("epoch seconds", f"{record.seconds:,.1f}"),
        ("clicks/s", f"{info.clicks / record.seconds:,.0f}"),
        ("impressions/s", f"{info.train_impressions / record.seconds:,.0f}"),
        (
            f"validation seconds ({info.valid_impressions:,} impressions)",
            f"{clock.validate_end - clock.validate_start:,.1f}",
        ),
        (
            "valid AUC / nDCG@10 (random vectors: speed only)",
            f"{record.metrics['auc']:.4f} / {record.metrics['ndcg@10']:.4f}",
        ),
        ("peak RSS of the training process", f"{rss_gib:.2f} GiB"),
        ("data + store preparation seconds", f"{prepare:,.1f}"),
    ]
    if torch.cuda.is_available() and info.device.startswith("cuda"):
        rows.append(("peak GPU memory", f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    minutes = record.seconds / 60
    verdict = "[green]within[/]" if minutes < 10 else "[red]over[/]"
    console.print(f"epoch: {minutes:.1f} min, {verdict} the 10-minute target at this scale")
    if args.keep is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def compare_determinism(
    console: Any, data: Path, store: Path, root: Path, settings: Any, repeat: int
) -> None:
    """The epoch with deterministic kernels (the default) against torch's unordered ones,
    alternating so that a change of load on a shared machine hits both alike."""
    from rich.table import Table

    from newsrec_cli.train import train
    from newsrec_cli.train.determinism import unordered

    seconds: dict[str, list[float]] = {"deterministic": [], "unordered": []}
    cpu: dict[str, list[float]] = {"deterministic": [], "unordered": []}
    for i in range(repeat):
        for name in ("deterministic", "unordered"):
            before = resource.getrusage(resource.RUSAGE_SELF)
            with unordered() if name == "unordered" else contextlib.nullcontext():
                result = train(data, root / f"cmp_{name}_{i}", store=store, settings=settings)
            after = resource.getrusage(resource.RUSAGE_SELF)
            assert result.info.determinism.startswith("deterministic") == (name == "deterministic")
            seconds[name].append(result.history[-1].seconds)
            cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    table = Table(
        title=f"the cost of deterministic kernels ({result.info.threads} threads)", title_justify="left"
    )
    for column in ("kernels", "epoch seconds (each run)", "CPU seconds, whole run (each run)"):
        table.add_column(column)
    for name in seconds:
        table.add_row(
            name,
            ", ".join(f"{s:.1f}" for s in seconds[name]),
            ", ".join(f"{s:.1f}" for s in cpu[name]),
        )
    console.print(table)
    ratio = min(seconds["deterministic"]) / min(seconds["unordered"])
    cpu_ratio = min(cpu["deterministic"]) / min(cpu["unordered"])
    console.print(f"deterministic / unordered, best of {repeat}: epoch {ratio:.3f}x, CPU {cpu_ratio:.3f}x")


if __name__ == "__main__":
    main()
