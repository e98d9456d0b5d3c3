"""Concurrent calls combined into one batch: every caller gets its own result, a crowd shares a
batch, an error reaches each caller of its batch (batched retrieval itself: test_serve_cache.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from newsrec_cli.serve.batch import Batcher


def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        gate.wait(60)  # the first batch holds until everyone has queued behind it
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch=8)
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(batcher, i) for i in range(20)]
        deadline = time.monotonic() + 60  # generous: threads start slowly on a busy machine
        while len(batcher._queue) < 19 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        results = [f.result(timeout=10) for f in futures]
    assert results == [i * 10 for i in range(20)]
    assert sizes[0] == 1 and sum(sizes) == 20 and max(sizes) == 8 and len(sizes) == 4  # 1, 8, 8, 3
    assert batcher(7) == 70 and sizes[-1] == 1  # alone: a batch of one, at once


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs() -> None:
    def run(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("bad item")
        return items

    batcher: Batcher[int, int] = Batcher(run)
    with pytest.raises(ValueError, match="bad item"):
        batcher(-1)
    assert batcher(3) == 3
