"""Parse speed of the MIND readers at MIND-small scale: seconds and peak memory to load a dataset.

Writes a synthetic dataset (scale 1.0 is MIND-small: 65k news, 50k users, ~160k impressions), then
loads its news and behaviors into the compact form (`load_dataset`) in a fresh process, so the peak
resident memory is the loader's alone. Target: under 10 s at scale 1.0 on a 2-core machine.

    python benchmarks/bench_parse.py --scale 0.1          # a quick check
    python benchmarks/bench_parse.py                      # MIND-small scale
    python benchmarks/bench_parse.py --data data/MINDsmall  # a real dataset instead
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from newsrec_cli.mind.synth import synthesize
from newsrec_cli.settings import SynthSettings

MIND_SMALL = {"news": 65_000, "users": 50_000, "impressions_per_user": 3.2}


def _rss_mb() -> float:
    """Peak resident memory of this process so far, MB.

    VmHWM belongs to the address space, which exec replaces; ru_maxrss survives exec and would
    report the parent's peak (the synthetic generator's) in the spawned loader.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _load(path: str, queue: mp.Queue) -> None:
    """In a fresh process: time news alone, then news + behaviors; peak RSS before and after."""
    from newsrec_cli.mind import load_dataset

    base = _rss_mb()
    start = time.perf_counter()
    load_dataset(path, behaviors=False)
    news_s = time.perf_counter() - start
    start = time.perf_counter()
    ds = load_dataset(path)
    total_s = time.perf_counter() - start
    splits = ds.splits.values()
    queue.put(
        {
            "news_seconds": news_s,
            "load_seconds": total_s,
            "peak_rss_mb": _rss_mb(),
            "rss_before_mb": base,
            "news": len(ds.news),
            "impressions": sum(len(s) for s in splits),
            "candidates": sum(len(s.candidates) for s in splits),
            "history": sum(len(s.history) for s in splits),
            "compact_mb": sum(
                a.nbytes
                for s in splits
                for a in (s.history, s.candidates, s.labels, s.history_offsets, s.candidate_offsets)
            )
            / 2**20,
        }
    )


def measure(path: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=(str(path), queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = MIND-small size (default).")
    parser.add_argument("--data", type=Path, help="Load this dataset instead of a synthetic one.")
    parser.add_argument("--repeat", type=int, default=1, help="Loads to run; the fastest is shown.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        synth_s = None
        path = args.data
        if path is None:
            path = Path(tmp) / "synth"
            settings = SynthSettings(
                news=max(200, int(MIND_SMALL["news"] * args.scale)),
                users=max(100, int(MIND_SMALL["users"] * args.scale)),
                impressions_per_user=MIND_SMALL["impressions_per_user"],
            )
            start = time.perf_counter()
            synthesize(path, settings)
            synth_s = time.perf_counter() - start
        runs = [measure(path) for _ in range(max(1, args.repeat))]
    best = min(runs, key=lambda r: r["load_seconds"])
    best.update(
        {
            "scale": args.scale if args.data is None else None,
            "synth_seconds": synth_s,
            "data": str(args.data) if args.data else "synthetic",
            "python": sys.version.split()[0],
        }
    )
    if args.json:
        print(json.dumps(best, indent=2))
        return 0
    table = Table(title=f"MIND parse benchmark ({best['data']}, scale {best['scale']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("news rows", f"{best['news']:,}")
    table.add_row("impressions", f"{best['impressions']:,}")
    table.add_row("candidates", f"{best['candidates']:,}")
    table.add_row("history entries", f"{best['history']:,}")
    if synth_s is not None:
        table.add_row("synth (write) seconds", f"{synth_s:.1f}")
    table.add_row("load news only, seconds", f"{best['news_seconds']:.2f}")
    table.add_row("[bold]load news + behaviors, seconds[/]", f"[bold]{best['load_seconds']:.2f}[/]")
    table.add_row("impressions / s", f"{best['impressions'] / best['load_seconds']:,.0f}")
    table.add_row("peak RSS of the loading process, MB", f"{best['peak_rss_mb']:,.0f}")
    table.add_row("  of which before loading (imports), MB", f"{best['rss_before_mb']:,.0f}")
    table.add_row("compact impression arrays, MB", f"{best['compact_mb']:,.1f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
