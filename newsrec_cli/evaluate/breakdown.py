"""The same metrics per group of candidates: by news category or by the user's history length.

One mechanism serves both: every candidate gets a group, and each group is scored as if its
candidates were the whole data, impression boundaries kept.

- history-length: an impression's candidates all share its history-length bucket, so a group is
  a set of whole impressions.
- category: an impression is cut down to its candidates of that category, i.e. how well the
  ranking orders news within one category. An impression counts for a category where it has a
  click there (the metrics' usual no-click rule). Of the beyond-accuracy metrics, Categories@k
  and Calibration@k are left out here: within one category they are 1 and a one-hot divergence
  by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from newsrec_cli.evaluate.beyond_rows import UNKNOWN_CATEGORY
from newsrec_cli.evaluate.metrics import MetricResult, compute_metrics
from newsrec_cli.evaluate.rows import Lists
from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.news import NewsTable

HISTORY_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 0), (1, 4), (5, 9), (10, 19), (20, 49), (50, None))


@dataclass
class Groups:
    """A group index per candidate and the group names, in display order."""

    names: list[str]
    of_candidate: np.ndarray  # int64 [C]


def history_groups(impressions: Impressions) -> Groups:
    """Buckets of history length (0, 1-4, 5-9, 10-19, 20-49, 50+), one per impression."""
    lengths = impressions.history_lengths
    bucket = np.zeros(len(impressions), dtype=np.int64)
    names = []
    for b, (low, high) in enumerate(HISTORY_BUCKETS):
        span = f"{low}+" if high is None else str(low) if low == high else f"{low}-{high}"
        names.append(f"history {span}")
        bucket[lengths >= low] = b
    return Groups(names, bucket[impressions.candidate_impression])


def category_groups(impressions: Impressions, news: NewsTable) -> Groups:
    """The category of each candidate (vocabulary index i is news row i-1, per MindDataset)."""
    categories = np.asarray(news.category + [UNKNOWN_CATEGORY], dtype=object)
    row = impressions.candidates.astype(np.int64) - 1
    row = np.where((row >= 0) & (row < len(news)), row, len(news))
    names, codes = np.unique(categories[row], return_inverse=True)
    return Groups([str(n) for n in names], codes.astype(np.int64))


def metrics_by_group(
    scores: np.ndarray,
    labels: np.ndarray,
    offsets: np.ndarray,
    groups: Groups,
    metrics: Sequence[str],
    *,
    scores_are: Literal["logits", "probabilities"] = "logits",
) -> list[tuple[str, MetricResult]]:
    """compute_metrics on each group's candidates; groups without candidates are left out."""
    lists = Lists(np.zeros(len(scores), np.int64), labels, offsets, np.arange(len(offsets) - 1))

    def score(_: str, part: np.ndarray, sub: Lists) -> MetricResult:
        return compute_metrics(part, sub.labels, sub.offsets, metrics, scores_are=scores_are)

    return results_by_group(scores, lists, groups, score)


def results_by_group(
    scores: np.ndarray,
    lists: Lists,
    groups: Groups,
    score: Callable[[str, np.ndarray, Lists], MetricResult],
) -> list[tuple[str, MetricResult]]:
    """`score(group, scores, lists)` on each group's candidates; groups without candidates are left out."""
    offsets = np.asarray(lists.offsets)
    segment = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    out: list[tuple[str, MetricResult]] = []
    for g, name in enumerate(groups.names):
        keep = groups.of_candidate == g
        if not keep.any():
            continue
        # Kept candidates stay in order, so their impressions stay contiguous blocks.
        kept, sizes = np.unique(segment[keep], return_counts=True)
        sub_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        sub = Lists(lists.items[keep], lists.labels[keep], sub_offsets, np.asarray(lists.owners)[kept])
        out.append((name, score(name, scores[keep], sub)))
    return out
