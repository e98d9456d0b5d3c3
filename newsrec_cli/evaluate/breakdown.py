"""The same metrics per group of candidates: by news category or by the user's history length.

One mechanism serves both: every candidate gets a group, and each group is scored as if its
candidates were the whole data, impression boundaries kept.

- history-length: an impression's candidates all share its history-length bucket, so a group is
  a set of whole impressions.
- category: an impression is cut down to its candidates of that category, i.e. how well the
  ranking orders news within one category. An impression counts for a category where it has a
  click there (the metrics' usual no-click rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from newsrec_cli.evaluate.metrics import MetricResult, compute_metrics
from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.news import NewsTable

HISTORY_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 0), (1, 4), (5, 9), (10, 19), (20, 49), (50, None))
UNKNOWN_CATEGORY = "(no news row)"


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
    scores_are: str = "logits",
) -> list[tuple[str, MetricResult]]:
    """compute_metrics on each group's candidates; groups without candidates are left out."""
    segment = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    out: list[tuple[str, MetricResult]] = []
    for g, name in enumerate(groups.names):
        keep = groups.of_candidate == g
        if not keep.any():
            continue
        # Kept candidates stay in order, so their impressions stay contiguous blocks.
        _, sizes = np.unique(segment[keep], return_counts=True)
        sub_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        result = compute_metrics(scores[keep], labels[keep], sub_offsets, metrics, scores_are=scores_are)
        out.append((name, result))
    return out
