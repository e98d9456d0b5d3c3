"""One `train` at a time per run folder: an OS lock on `.newsrec.lock`, held while the run is written.

The lock is `flock` (through filelock), so the kernel releases it when its process ends, however
it ends: a run killed with kill -9 leaves a folder that `train --resume` can lock again, and a
second `train` into a folder in use is refused at once instead of interleaving history.jsonl.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from newsrec_cli.errors import InputError

LOCK_FILE = ".newsrec.lock"


@contextmanager
def run_dir_lock(out: Path) -> Iterator[None]:
    """Hold the lock of run folder `out` (made if absent); InputError when another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(
            f"another newsrec train is writing this run folder (it holds {LOCK_FILE}); "
            "wait for it to end, or choose another --out",
            path=out,
        ) from None
    try:
        yield
    finally:
        lock.release()
