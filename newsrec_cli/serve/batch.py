"""Combine concurrent calls into one batch: requests that arrive while a batch runs go together in
the next one, so a lone request waits for nothing and a crowd shares one matrix product.

No timer: the first caller runs the batch (the leader); callers that arrive meanwhile queue, and
when the leader's own result is in, the oldest of them leads the next batch with everything
queued by then. Used for exact retrieval, whose cost is one pass over every news' key: B queries
in one (N, D) x (D, B) product read the keys once instead of B times.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    __slots__ = ("done", "error", "item", "lead", "result")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = threading.Event()
        self.lead = False  # woken to lead the next batch, not with a result
        self.result: Result | None = None
        self.error: BaseException | None = None


class Batcher(Generic[Item, Result]):
    """`batcher(item)` returns `run([items])[i]` for its item; at most `max_batch` items a batch."""

    def __init__(self, run: Callable[[list[Item]], list[Result]], max_batch: int = 64) -> None:
        self.run = run
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[Item, Result]] = []
        self._busy = False

    def __call__(self, item: Item) -> Result:
        slot: _Slot[Item, Result] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._busy
            self._busy = True
        while not lead:
            slot.done.wait()
            if not slot.lead:
                break
            slot.lead, lead = False, True
            slot.done.clear()
        if lead:
            self._lead(slot)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self, own: _Slot[Item, Result]) -> None:
        while not own.done.is_set():
            with self._lock:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                results = self.run([s.item for s in batch])
                for s, r in zip(batch, results, strict=True):
                    s.result = r
            except BaseException as exc:  # each caller raises it; the next batch still runs
                for s in batch:
                    s.error = exc
            for s in batch:
                s.done.set()
        with self._lock:  # hand over: the oldest waiting caller leads the next batch
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.done.set()
            else:
                self._busy = False
