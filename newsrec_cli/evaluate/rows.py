"""One row of evaluate's table: accuracy and beyond-accuracy metrics of one ranking, in one pass.

Each chunk of whole impressions is sorted once (`metrics.rank_order`); the accuracy metrics read
the order, and the top-k lists cut from it feed the beyond-accuracy metrics. So the beyond
metrics cost no second sort, and memory stays a few chunks whatever the split's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from newsrec_cli.evaluate.beyond import top_k_from_order
from newsrec_cli.evaluate.beyond_rows import BeyondAccumulator, SplitFacts
from newsrec_cli.evaluate.metrics import (
    CHUNK_CANDIDATES,
    MetricAccumulator,
    MetricResult,
    check_inputs,
    check_offsets,
    impression_chunks,
    rank_order,
)


@dataclass(frozen=True)
class Lists:
    """Flat ranked lists: list b is `offsets[b]:offsets[b+1]` of `items` (news indices) and
    `labels`, and belongs to impression `owners[b]` of the reported split (for its history)."""

    items: np.ndarray  # int [C]
    labels: np.ndarray  # int8 [C]
    offsets: np.ndarray  # int64 [B+1]
    owners: np.ndarray  # int64 [B]


def score_lists(
    scores: np.ndarray,
    lists: Lists,
    accuracy: Sequence[str],
    beyond_names: Sequence[str] = (),
    facts: SplitFacts | None = None,
    history_offsets: np.ndarray | None = None,
    *,
    scores_are: Literal["logits", "probabilities"] = "logits",
    chunk_candidates: int = CHUNK_CANDIDATES,
    own_catalogue: bool = False,
) -> MetricResult:
    """Accuracy metrics (as `compute_metrics`) and beyond-accuracy metrics of one ranking.

    `history_offsets` are the reported split's, which `lists.owners` index (calibration only).
    `own_catalogue`: coverage and Gini over the distinct items of `lists` (a group of the split),
    not over the split's candidates.
    """
    scores = np.asarray(scores, dtype=np.float64)
    offsets = check_offsets(lists.offsets, len(scores))
    check_inputs(scores, np.asarray(lists.labels))
    accumulator = MetricAccumulator(accuracy, scores_are=scores_are) if accuracy else None
    extra = None
    if beyond_names and facts is not None:
        catalogue = np.unique(np.asarray(lists.items, dtype=np.int64)) if own_catalogue else None
        extra = BeyondAccumulator(list(beyond_names), facts, catalogue)
    for lo, hi in impression_chunks(offsets, chunk_candidates):
        a, b = int(offsets[lo]), int(offsets[hi])
        local = offsets[lo : hi + 1] - a
        s = scores[a:b]
        order = rank_order(s, local)
        if accumulator is not None:
            accumulator.add(s, lists.labels[a:b], local, checked=True, order=order)
        if extra is not None:
            top = top_k_from_order(order, local, extra.k, np.asarray(lists.items[a:b], dtype=np.int64))
            history = None
            if extra.needs_history():
                assert facts is not None and history_offsets is not None
                history = facts.history_distribution(history_offsets, lists.owners[lo:hi])
            extra.add(top, history)
    result = accumulator.result() if accumulator is not None else MetricResult({}, {}, 0, len(offsets) - 1, 0)
    if extra is not None:
        result.absorb(extra.result(), with_history=extra.needs_history())
    return result
