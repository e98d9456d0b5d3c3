"""History clicks as extra training samples (`train --history-positives`).

Each sample is one click of a user's history: the clicked news is the positive, the user's other
history clicks are the context, and the negatives are news of other users' histories (the same
era of news), of the positive's category or from all of them. The samples are built as
impressions of their own, so the batches, the losses and resume treat them as any impression.

Only the training impressions' histories are read: nothing of the validation or the reported
split reaches them. Impressions stay the main signal: there are `per_click` history samples per
click of the training impressions, a seeded draw among all history clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from newsrec_cli.mind import Impressions

# Redraws of a negative that is one of the user's own history clicks, before the sample is left out.
REDRAWS = 16


@dataclass
class HistorySamples:
    """The history samples as impressions, and how many history clicks they were drawn from."""

    impressions: Impressions
    available: int  # distinct (user, history click) pairs of the training impressions
    dropped: int  # drawn but left out: no negative outside the user's own clicks was found


def history_impressions(
    imps: Impressions,
    categories: np.ndarray,
    *,
    per_click: float,
    pool: int,
    context: int,
    negatives: str,
    seed: int,
) -> HistorySamples:
    """`per_click` history samples per click of `imps`, each an impression of 1 click and `pool`
    non-clicks, with the user's other history clicks (the last `context`) as its history.

    `categories` int [news vocabulary] is each news index's category code; `negatives` is
    "category" (news of the positive's category among all history news) or "random" (any history
    news). Deterministic in `seed`.
    """
    rng = np.random.default_rng([seed, 0x4157])
    lengths = np.asarray(imps.history_lengths, dtype=np.int64)
    users = imps.users.astype(np.int64)
    # One history per user: the longest of their impressions (MIND's histories only grow).
    order = np.lexsort((lengths, users))
    last = np.r_[users[order][1:] != users[order][:-1], True]
    source = order[last]  # (U,) impression whose history stands for the user
    source = source[lengths[source] > 1]  # a single click has no other click as context
    begin = imps.history_offsets[source]
    count = lengths[source]
    available = int(count.sum())
    wanted = min(available, round(per_click * int((imps.labels == 1).sum())))
    empty = HistorySamples(_empty_like(imps), available, 0)
    if wanted == 0:
        return empty
    # Draw the clicks: sample s is position `position[s]` of source history `owner[s]`.
    flat = np.sort(rng.choice(available, wanted, replace=False))
    starts = np.cumsum(count) - count
    owner = np.searchsorted(starts, flat, side="right") - 1
    position = flat - starts[owner]
    positive = imps.history[begin[owner] + position].astype(np.int64)
    sample_users = users[source[owner]]

    news = np.unique(imps.history[imps.history > 0]).astype(np.int64)  # the history news
    picked = _draw_negatives(news, categories, positive, pool, negatives, rng)
    # The user's own history clicks are not negatives: redraw them, then leave the sample out.
    own = np.unique(np.repeat(users[source], count) * len(categories) + _histories(imps, begin, count))
    for _ in range(REDRAWS):
        clash = np.isin(sample_users[:, None] * len(categories) + picked, own)
        if not clash.any():
            break
        rows, cols = np.nonzero(clash)
        picked[rows, cols] = _draw_negatives(news, categories, positive[rows], 1, negatives, rng)[:, 0]
    keep = ~np.isin(sample_users[:, None] * len(categories) + picked, own).any(axis=1)
    owner, position, positive, picked = owner[keep], position[keep], positive[keep], picked[keep]
    if len(owner) == 0:
        return HistorySamples(empty.impressions, available, int((~keep).sum()))

    # Context: the other clicks of the source history, oldest first, the last `context` of them.
    other = count[owner] - 1
    take = np.minimum(other, context)
    skip = other - take  # the oldest ones left out
    history_offsets = np.zeros(len(owner) + 1, dtype=np.int64)
    np.cumsum(take, out=history_offsets[1:])
    within = np.arange(history_offsets[-1]) - np.repeat(history_offsets[:-1], take) + np.repeat(skip, take)
    within += within >= np.repeat(position, take)  # step over the positive itself
    history = imps.history[np.repeat(begin[owner], take) + within]
    # A news clicked twice in the history would show the positive in its own context: left out.
    repeat = history == np.repeat(positive, take)
    if repeat.any():
        history = history[~repeat]
        # every segment holds at least one click (count > 1), so reduceat sums each one alone
        np.cumsum(
            take - np.add.reduceat(repeat, history_offsets[:-1], dtype=np.int64), out=history_offsets[1:]
        )

    width = 1 + pool
    candidates = np.concatenate([positive[:, None], picked], axis=1).astype(imps.candidates.dtype)
    labels = np.zeros(candidates.shape, dtype=imps.labels.dtype)
    labels[:, 0] = 1
    first_seen = _first_time(imps)
    return HistorySamples(
        Impressions(
            impression_ids=-np.arange(1, len(owner) + 1, dtype=imps.impression_ids.dtype),
            users=imps.users[source[owner]],
            # The history came before the user's first training impression: its time stands in.
            times=first_seen[imps.users[source[owner]].astype(np.int64)],
            history_offsets=history_offsets,
            history=history.astype(imps.history.dtype),
            candidate_offsets=np.arange(0, len(owner) * width + 1, width, dtype=np.int64),
            candidates=candidates.reshape(-1),
            labels=labels.reshape(-1),
            news_vocab=imps.news_vocab,
            user_vocab=imps.user_vocab,
            source=imps.source,
        ),
        available,
        int((~keep).sum()),
    )


def _draw_negatives(
    news: np.ndarray, categories: np.ndarray, positive: np.ndarray, k: int, how: str, rng: np.random.Generator
) -> np.ndarray:
    """K news per positive, int64 [S, K]: of its category among `news` ("category"), or any."""
    if how == "random":
        return news[(rng.random((len(positive), k)) * len(news)).astype(np.int64)]
    by_category = news[np.argsort(categories[news], kind="stable")]
    codes = categories[by_category]
    wanted = categories[positive]
    start = np.searchsorted(codes, wanted, side="left")
    size = np.searchsorted(codes, wanted, side="right") - start
    # A category of one news (the positive alone) draws from all of them.
    start, size = np.where(size > 1, start, 0), np.where(size > 1, size, len(news))
    return by_category[start[:, None] + (rng.random((len(positive), k)) * size[:, None]).astype(np.int64)]


def _histories(imps: Impressions, begin: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The clicks of the given history segments, concatenated, int64."""
    offsets = np.cumsum(count) - count
    within = np.arange(int(count.sum())) - np.repeat(offsets, count)
    return imps.history[np.repeat(begin, count) + within].astype(np.int64)


def _first_time(imps: Impressions) -> np.ndarray:
    """Each user code's earliest impression time, datetime64[s] [users]."""
    first = np.full(len(imps.user_vocab), np.datetime64("NaT"), dtype="datetime64[s]")
    order = np.lexsort((imps.times, imps.users))
    users = imps.users[order]
    head = np.r_[True, users[1:] != users[:-1]]
    first[users[head].astype(np.int64)] = imps.times[order][head]
    return first


def _empty_like(imps: Impressions) -> Impressions:
    return imps.subset(np.zeros(0, dtype=np.int64))
