"""Deterministic training: the same seed, data, vectors and `--threads` give bit-identical weights.

On CPU with more than one thread, torch's kernel for `index_put_(accumulate=True)`, the backward
of indexing rows by a tensor (`vectors[inverse]`, `learned[rows]`: every gathered news vector),
splits the rows over threads and adds with atomics: the order of the float additions, and so the
last bits of the gradients, change from run to run. (`index_add_`, `scatter_add_`, embedding and
embedding_bag backward are ordered already.) Under `torch.use_deterministic_algorithms(True)` the
kernel adds in index order, whichever module indexes. Measured cost in docs/training.md
("Reproducibility"; benchmarks/bench_train.py --compare-determinism).

CUDA is left as it was: torch's deterministic CUDA kernels need `CUBLAS_WORKSPACE_CONFIG` set
before CUDA starts, and some have no deterministic form at all. A CUDA run records
`"deterministic": false` in config.json and says so in `train`'s model line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_UNORDERED = False  # set by `unordered()` (the benchmark's comparison) only


@dataclass(frozen=True)
class Determinism:
    """Whether this run's numbers repeat bit for bit (at the same thread count), and if not why."""

    deterministic: bool
    reason: str = ""  # why not, when not

    def to_dict(self) -> dict[str, object]:
        return {"deterministic": self.deterministic, **({"reason": self.reason} if self.reason else {})}

    def describe(self) -> str:
        """For the model line of `train`: "deterministic" or "NOT deterministic: why"."""
        return "deterministic" if self.deterministic else f"NOT deterministic: {self.reason}"


def plan(device: torch.device) -> Determinism:
    """What a run on `device` gets."""
    if _UNORDERED:
        return Determinism(False, "unordered CPU accumulation (benchmark comparison)")
    if device.type != "cpu":
        return Determinism(False, f"{device.type} kernels run in their own order")
    return Determinism(True)


@contextmanager
def ordered_ops(determinism: Determinism) -> Iterator[None]:
    """Deterministic kernels while training, then the caller's own choice back (train() is also
    called in-process, by tune, tests and notebooks)."""
    if not determinism.deterministic:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    # Deterministic mode would also fill every new tensor with NaN before its kernel writes it:
    # a guard against kernels reading memory they never wrote, not part of the order, and a cost.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


@contextmanager
def unordered() -> Iterator[None]:
    """Training with torch's default (unordered) kernels, to measure what the order costs:
    benchmarks/bench_train.py only. Runs inside it record that they are not deterministic."""
    global _UNORDERED
    _UNORDERED = True
    try:
        yield
    finally:
        _UNORDERED = False
