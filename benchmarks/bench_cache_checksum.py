"""What verifying the parse-once cache costs, beside the parse it saves, on MIND-large-shaped data.

Makes `newsrec data synth --preset large --scale S` once under --root, then runs the installed
command as a user does: `newsrec data prepare` with an empty cache (the parse, which also writes
the checksums), and again (a cache hit: every file's size and xxh3-128 checksum checked, the
arrays' ranges checked, then memory-mapped). It also times the checksums alone over the cache
files and gives their throughput, from which the full size (scale 1: ~2.2M + 2.4M impressions)
follows by bytes: both the parse and the checksum are linear in the data.

    python benchmarks/bench_cache_checksum.py --root /tmp/bcc --scale 0.02
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from newsrec_cli.mind.cache import file_checksum

NEWSREC = [sys.executable, "-m", "newsrec_cli"]


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=0.02)
    args = parser.parse_args()
    data = args.root / f"large-{args.scale:g}"
    if not (data / "valid" / "behaviors.tsv").exists():
        subprocess.run(
            [*NEWSREC, "data", "synth", "--preset", "large", "--scale", str(args.scale), "--out", str(data)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    cache = args.root / f"cache-{args.scale:g}"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    env = dict(os.environ, NEWSREC_CACHE=str(cache))
    startup = timed([*NEWSREC, "--version"], env)
    parse = timed([*NEWSREC, "data", "prepare", str(data)], env)
    hit = timed([*NEWSREC, "data", "prepare", str(data)], env)
    files = [p for p in cache.rglob("*") if p.is_file() and p.name != "meta.json"]
    size = sum(p.stat().st_size for p in files)
    start = time.perf_counter()
    for path in files:
        file_checksum(path)
    checksum = time.perf_counter() - start
    full = 1 / args.scale
    table = Table(
        title=f"parse-once cache at scale {args.scale:g} of MIND-large ({size / 1e6:,.0f} MB of arrays)"
    )
    for column in ("what", "seconds", "at scale 1 (x bytes)"):
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row("process start (newsrec --version)", f"{startup:.2f}", "")
    table.add_row(
        "data prepare, empty cache (parse + write + checksums)",
        f"{parse:.2f}",
        f"~{(parse - startup) * full:,.0f}",
    )
    table.add_row("data prepare, cache hit (verify + map)", f"{hit:.2f}", f"~{(hit - startup) * full:,.0f}")
    table.add_row(
        f"checksums alone ({size / checksum / 1e9:.2f} GB/s)", f"{checksum:.3f}", f"~{checksum * full:,.1f}"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
