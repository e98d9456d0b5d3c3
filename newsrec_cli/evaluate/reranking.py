"""`evaluate --rerank`: each impression's candidates re-ranked (`newsrec_cli.rerank`) before scoring.

The re-ranker works on padded batches (B lists of N candidates, D-dimensional vectors); here a
split's flat candidates are cut into batches whose padded size stays under `PAD_BUDGET` values,
and the new order comes back as flat scores: minus the position in the re-ranked list, so every
metric, the prediction file and the breakdowns read it as they read a model's scores (no ties).
"""

from __future__ import annotations

import numpy as np

from newsrec_cli.evaluate.beyond_rows import SplitFacts
from newsrec_cli.evaluate.rows import Lists
from newsrec_cli.rerank import RerankSpec, rerank

PAD_BUDGET = 1 << 23  # B x N x D values per batch: 64 MB of float64 in the re-ranker


def rerank_scores(
    scores: np.ndarray,
    lists: Lists,
    spec: RerankSpec,
    k: int,
    facts: SplitFacts,
    history_offsets: np.ndarray,
) -> np.ndarray:
    """Flat scores (C,) of each impression's re-ranked order: the top k chosen by `spec`, the rest
    in the model's order; `scores` unchanged when the spec keeps the model's order.

    MMR reads `facts.vectors` (L2-normalised text vectors); calibration the news' categories and
    each history's category distribution (impression `lists.owners[b]` of the reported split).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not spec.active:
        return scores
    if spec.method == "mmr" and facts.vectors is None:
        raise ValueError("mmr needs the news' text vectors")  # the runner checks first, in words
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    width = facts.vectors.shape[1] if spec.method == "mmr" and facts.vectors is not None else 1
    out = np.empty_like(scores)
    lo = 0
    while lo < len(lengths):
        hi = _batch_end(lengths, lo, max(PAD_BUDGET // width, 1))
        a, b = int(offsets[lo]), int(offsets[hi])
        local = offsets[lo : hi + 1] - a
        n = lengths[lo:hi]
        B, N = hi - lo, int(n.max(initial=0))  # lists, longest list
        valid = np.arange(N)[None, :] < n[:, None]
        flat = local[:-1, None] + np.arange(N)[None, :]  # (B, N) flat position, past the end for padding
        at = np.where(valid, flat, 0)
        items = np.asarray(lists.items[a:b], dtype=np.int64)[at] if b > a else np.zeros((B, N), np.int64)
        padded = np.where(valid, scores[a:b][at] if b > a else 0.0, 0.0)
        kwargs: dict[str, np.ndarray] = {}
        if spec.method == "mmr":
            assert facts.vectors is not None
            kwargs["vectors"] = facts.vectors[items]  # (B, N, D); padding rows are never chosen
        else:
            kwargs["categories"] = np.where(valid, facts.categories[items], -1)
            kwargs["history"] = facts.history_distribution(history_offsets, lists.owners[lo:hi])
        order = rerank(padded, min(k, max(N, 1)), spec, valid=valid, **kwargs) if N else np.zeros((B, 0), int)
        position = np.empty_like(order)
        np.put_along_axis(position, order, np.arange(N)[None, :].repeat(B, axis=0), axis=1)
        out[a:b] = -position[valid].astype(np.float64)
        lo = hi
    return out


def _batch_end(lengths: np.ndarray, lo: int, budget: int) -> int:
    """The end of a batch from `lo` whose B x (longest list) stays within `budget` (at least one list)."""
    window = lengths[lo : lo + budget]  # every list holds a candidate or more: B <= budget
    running = np.maximum.accumulate(window) * np.arange(1, len(window) + 1)
    return lo + max(int(np.searchsorted(running, budget, side="right")), 1)
