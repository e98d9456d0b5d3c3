"""Array helpers rewritten for MIND-large's sizes give what the plain versions gave."""

from __future__ import annotations

import numpy as np
from evaluate_helpers import make_impressions

from newsrec_cli.model.inputs import needed_news
from newsrec_cli.objective.samples import click_samples


def test_click_samples_with_empty_and_click_free_impressions() -> None:
    lengths = [3, 0, 4, 0, 0, 2, 5, 1]
    labels = np.array([1, 0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1], dtype=np.int8)
    imps = make_impressions(lengths, labels=labels)
    samples = click_samples(imps)
    # the plain version: an impression index per candidate, counted with bincount
    imp_of = imps.candidate_impression
    neg_counts = np.bincount(imp_of[labels == 0], minlength=len(imps))
    clicks = np.flatnonzero(labels == 1)
    usable = neg_counts[imp_of[clicks]] > 0
    assert samples.neg_offsets.tolist() == [0, *np.cumsum(neg_counts).tolist()]
    assert samples.impression.tolist() == imp_of[clicks][usable].tolist()
    assert samples.positive.tolist() == imps.candidates[clicks][usable].tolist()
    assert samples.dropped == 3  # the two clicks of impression 5 (all clicked) and the one of 7


def test_needed_news_equals_unique() -> None:
    imps = make_impressions([3, 2, 4])
    imps.history = np.array([5, 0, 2, 2, 30], dtype=np.int32)
    imps.history_offsets = np.array([0, 2, 2, 5], dtype=np.int64)
    expected = np.unique(np.concatenate([imps.candidates, imps.history]).astype(np.int64))
    assert needed_news(imps).tolist() == expected[expected > 0].tolist()
