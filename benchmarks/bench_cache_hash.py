"""What keying the parse-once cache by the whole behaviors file costs, at MIND-large size.

Every load of a split hashes all of its behaviors.tsv (xxh3-128) to find its cache, so a file
edited in place with its mtime restored is parsed again instead of served stale (issue 30 §1).
This writes a behaviors file of --gb gigabytes (MIND-large's train behaviors are about 1.2 GB)
by repeating the lines of `newsrec data synth --preset large`, then times the cache key
(`newsrec_cli.mind.cache.source_key`, the function every load calls) several times: the first
pass reads a file just written (mostly from the page cache, as on a machine that read it
recently), and the best of the rest is the in-memory speed. Wall and CPU seconds, and GB/s.

    python benchmarks/bench_cache_hash.py --root /tmp/bch --gb 1.2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from newsrec_cli.mind.cache import source_key

NEWSREC = [sys.executable, "-m", "newsrec_cli"]


def behaviors_file(root: Path, gigabytes: float) -> Path:
    """A behaviors.tsv of about `gigabytes` GB: synthetic MIND-large-shaped lines, repeated."""
    path = root / f"behaviors-{gigabytes:g}GB.tsv"
    target = int(gigabytes * 1e9)
    if path.exists() and path.stat().st_size >= target:
        return path
    seed = root / "synth"
    if not (seed / "train" / "behaviors.tsv").exists():
        subprocess.run(
            [*NEWSREC, "data", "synth", "--preset", "large", "--scale", "0.002", "--out", str(seed)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    block = (seed / "train" / "behaviors.tsv").read_bytes()
    written = 0
    with open(path, "wb") as out:
        while written < target:
            out.write(block)
            written += len(block)
    return path


def timed(path: Path) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    source_key(path, [])
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--gb", type=float, default=1.2, help="size of the behaviors file (GB)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    path = behaviors_file(args.root, args.gb)
    size = path.stat().st_size
    runs = [timed(path) for _ in range(1 + args.repeats)]
    first, rest = runs[0], min(runs[1:])
    table = Table(title=f"whole-file cache key (xxh3-128) of a {size / 1e9:.2f} GB behaviors.tsv")
    for column in ("pass", "wall s", "CPU s", "GB/s (wall)"):
        table.add_column(column, justify="left" if column == "pass" else "right")
    table.add_row(
        "first (file just written)", f"{first[0]:.3f}", f"{first[1]:.3f}", f"{size / first[0] / 1e9:.2f}"
    )
    table.add_row(
        f"best of {args.repeats} more (page cache)",
        f"{rest[0]:.3f}",
        f"{rest[1]:.3f}",
        f"{size / rest[0] / 1e9:.2f}",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
