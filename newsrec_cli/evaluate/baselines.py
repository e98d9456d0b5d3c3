"""The floor beside every model: random, popularity and zero-shot content scores.

Each baseline returns one float64 score per candidate of `impressions`, aligned with
`impressions.candidates`, for `compute_metrics`. None of them trains anything.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import MissingVectorsError
from newsrec_cli.mind.behaviors import Impressions, distinct_news
from newsrec_cli.mind.popularity import PopularityView, protocol_view
from newsrec_cli.mind.vocab import Vocab
from newsrec_cli.settings import TrainSettings

TIE_BREAK = 0.5  # popularity noise stays below one click, so it only orders news with equal counts
CHUNK = 8192  # candidates per step of the content baseline: two CHUNK x dim buffers stay in cache
USER_CHUNK = 65_536  # impressions whose user vectors are held at once


def random_scores(impressions: Impressions, seed: int = 0) -> np.ndarray:
    """Uniform random scores (seeded): AUC 0.5 in expectation, the floor of every ranking metric."""
    return np.random.default_rng(seed).random(len(impressions.candidates))


def causal_view(train: Impressions, target: Impressions) -> PopularityView:
    """The replay popularity baseline's counts: every impression of `target` sees the clicks of
    `train` and of the `target` impressions before it, with a run's default half-life and prior."""
    defaults = TrainSettings()
    return protocol_view(
        "replay",
        train,
        target,
        half_life_hours=defaults.popularity_half_life,
        prior=defaults.popularity_prior,
    )


def click_counts(train: Impressions, size: int) -> np.ndarray:
    """Clicks per news index in the training impressions (candidates labelled 1), float64 [size]."""
    clicked = train.candidates[train.labels == 1]
    return np.bincount(clicked, minlength=size).astype(np.float64)[:size]


def popularity_scores(train: Impressions, impressions: Impressions, seed: int = 0) -> np.ndarray:
    """Clicks of each candidate in the training split, plus seeded noise in [0, 0.5).

    News never clicked in training (most test news are fresh) score 0 + noise: the noise orders
    them at random among themselves rather than by their listed position, and being under one
    click it never reorders news with different counts.
    """
    size = max(len(impressions.news_vocab), int(impressions.candidates.max(initial=0)) + 1)
    counts = click_counts(train, size)
    noise = np.random.default_rng(seed).random(len(impressions.candidates)) * TIE_BREAK
    return counts[impressions.candidates] + noise


def news_center(store: EmbeddingStore, news_vocab: Vocab, known: Impressions) -> np.ndarray:
    """The mean text vector of the news that the `known` impressions use (their histories and
    candidates) and the store holds, float32 [T]: news known at training time, never the news of
    the reported split (its fresh news would leak into every score)."""
    ids = [news_vocab.ids[i] for i in distinct_news(known)]
    vectors, _ = store.lookup([id_ for id_ in ids if id_ in store])
    return vectors.mean(axis=0).astype(np.float32) if len(vectors) else np.zeros(store.dim, np.float32)


def content_scores(
    store: EmbeddingStore,
    impressions: Impressions,
    news_vocab: Vocab | None = None,
    *,
    centred_on: Impressions | None = None,
) -> np.ndarray:
    """Cosine of each candidate's text vector to the mean of its user's history vectors.

    With `centred_on` (the training impressions), every vector first has the mean text vector of
    their news subtracted (`news_center`): the common direction that sentence vectors share is taken out,
    as the model's content prior does. Every candidate and history news must have a vector in
    the store (MissingVectorsError otherwise: a silent zero vector would pass for a real
    score). An impression whose user has no history scores 0 for all candidates: a tie, ranked
    by the metrics' tie rule.
    """
    vocab = news_vocab or impressions.news_vocab
    used = distinct_news(impressions)
    if (impressions.history == 0).any() or (impressions.candidates == 0).any():
        used = np.concatenate(([0], used))  # index 0 is padding, looked up as before
    ids = [vocab.ids[i] for i in used]
    vectors, missing = store.lookup(ids)
    if missing:
        raise MissingVectorsError(missing, len(ids), store.path)
    if centred_on is not None:
        vectors = vectors - news_center(store, vocab, centred_on)
    # Row k of `unit` is news index used[k], L2-normalised; `row_of` maps news index -> k.
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    row_of = np.zeros(int(used.max(initial=0)) + 1, dtype=np.int64)
    row_of[used] = np.arange(len(used))

    scores = np.empty(len(impressions.candidates), dtype=np.float32)
    h_off = np.asarray(impressions.history_offsets)
    c_off = np.asarray(impressions.candidate_offsets)
    # Gathers into reused buffers: fresh C x D copies cost more in page faults than the dot products.
    news_buf = np.empty((CHUNK, unit.shape[1]), dtype=np.float32)
    user_buf = np.empty_like(news_buf)
    for lo in range(0, len(impressions), USER_CHUNK):  # users of a chunk of impressions at a time
        hi = min(lo + USER_CHUNK, len(impressions))
        # Mean of history vectors per impression as a sparse (impressions x news) average.
        lengths = np.diff(h_off[lo : hi + 1])
        weights = np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32)
        history = np.asarray(impressions.history[h_off[lo] : h_off[hi]], dtype=np.int64)
        averaging = sparse.csr_matrix(
            (weights, row_of[history], h_off[lo : hi + 1] - h_off[lo]), shape=(hi - lo, len(used))
        )
        users = np.asarray(averaging @ unit, dtype=np.float32)  # (chunk, D)
        user_norms = np.linalg.norm(users, axis=1, keepdims=True)
        users /= np.where(user_norms > 0, user_norms, 1.0)  # empty history stays the zero vector

        a, b = int(c_off[lo]), int(c_off[hi])
        cand_rows = row_of[np.asarray(impressions.candidates[a:b], dtype=np.int64)]
        owner = np.repeat(np.arange(hi - lo), np.diff(c_off[lo : hi + 1]))
        for start in range(0, b - a, CHUNK):
            n = min(CHUNK, b - a - start)
            np.take(unit, cand_rows[start : start + n], axis=0, out=news_buf[:n])
            np.take(users, owner[start : start + n], axis=0, out=user_buf[:n])
            np.einsum("cd,cd->c", news_buf[:n], user_buf[:n], out=scores[a + start : a + start + n])
    return scores.astype(np.float64)
