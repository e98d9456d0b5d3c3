"""Training samples as flat arrays: one per click, with negatives drawn from its impression.

Everything is vectorised over numpy arrays built from `Impressions` (no Python object per click),
so MIND-small's ~236k clicks take well under a second per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from newsrec_cli.mind import Impressions


@dataclass
class ClickSamples:
    """One sample per click: its impression and clicked news, plus each impression's non-clicks.

    Impression i's unclicked candidates are `negatives[neg_offsets[i]:neg_offsets[i+1]]`. Clicks
    in impressions without any unclicked candidate are left out (nothing to contrast them with)
    and counted in `dropped`.
    """

    impression: np.ndarray  # int64 [S]
    positive: np.ndarray  # int64 [S] news index
    neg_offsets: np.ndarray  # int64 [I+1]
    negatives: np.ndarray  # int64 [sum of non-clicks]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.impression)


def click_samples(imps: Impressions) -> ClickSamples:
    """Samples of every click of labelled impressions."""
    imp_of = imps.candidate_impression  # (C,)
    labels = imps.labels
    neg = labels == 0
    neg_counts = np.bincount(imp_of[neg], minlength=len(imps))
    neg_offsets = np.zeros(len(imps) + 1, dtype=np.int64)
    np.cumsum(neg_counts, out=neg_offsets[1:])
    clicks = np.flatnonzero(labels == 1)
    impression = imp_of[clicks]
    usable = neg_counts[impression] > 0
    return ClickSamples(
        impression=impression[usable].astype(np.int64),
        positive=imps.candidates[clicks][usable].astype(np.int64),
        neg_offsets=neg_offsets,
        negatives=imps.candidates[neg].astype(np.int64),
        dropped=int((~usable).sum()),
    )


def sample_negatives(samples: ClickSamples, k: int, rng: np.random.Generator) -> np.ndarray:
    """K unclicked news of the same impression per sample, int64 [S, K].

    Without replacement where the impression has at least K non-clicks, with replacement where
    it has fewer (MIND's own recipe). Rows with a repeated draw are redrawn until none is left.
    """
    start = samples.neg_offsets[samples.impression]  # (S,)
    count = samples.neg_offsets[samples.impression + 1] - start  # (S,)
    pick = (rng.random((len(samples), k)) * count[:, None]).astype(np.int64)  # (S, K)
    if k > 1:
        redraw = _has_repeats(pick) & (count >= k)
        while redraw.any():
            rows = np.flatnonzero(redraw)
            pick[rows] = (rng.random((len(rows), k)) * count[rows, None]).astype(np.int64)
            redraw[rows] = _has_repeats(pick[rows])
    return samples.negatives[start[:, None] + pick]


def _has_repeats(pick: np.ndarray) -> np.ndarray:
    ordered = np.sort(pick, axis=1)
    return (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
