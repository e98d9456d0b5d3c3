"""Causal news popularity from the impression stream: time-decayed clicks and impressions per news.

For a news n at time t only impressions with a timestamp strictly before t count, so an
impression never sees its own labels, nor those of any impression at the same second or later:

.. math::
    C_n(t) = \\sum_{j:\\, t_j < t} y_j\\, 2^{-(t - t_j)/h}, \\qquad
    S_n(t) = \\sum_{j:\\, t_j < t} 2^{-(t - t_j)/h}, \\qquad
    \\mathrm{ctr}_n(t) = \\frac{C_n(t) + m\\, g(t)}{S_n(t) + m}

over the candidate slots j that showed n (y_j its click), with half-life h, and the CTR smoothed
towards the stream's own decayed CTR g(t) of all news with m pseudo-impressions. The age is
t minus the news' first impression before t.

Built once from every event (vectorised: events grouped by (news, second), decayed prefix sums
by one cumulative sum per news against its own time origin), then any
(news, time) pair is a binary search: the features of MIND-large's 80M candidate slots take a
few passes over arrays, no Python loop per impression. Offline scoring asks every impression at
one time (the end of the training period); replay asks each at its own time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from newsrec_cli.mind.behaviors import Impressions

FEATURES = ("clicks", "impressions", "ctr", "age_hours", "seen")
GLOBAL = 0  # news index 0 is padding, never a real news: it holds the stream of all news
DEFAULT_CTR = 0.04  # before any event: MIND's share of clicks among candidates (about 4%)
BLOCK_HALF_LIVES = 500  # 2^500 ~ 1e150: far inside float64 (see _decayed_prefix)
QUERY_CHUNK = 1 << 22  # (news, time) pairs looked up per pass: bounded memory on MIND-large


@dataclass(frozen=True)
class PopularityCounts:
    """Decayed click and impression sums of every (news, second) group of a stream, inclusive.

    Groups are sorted by (news, time); `clicks[g]` and `shows[g]` are the decayed sums of the
    news' events up to and including group g, as of `times[g]`; `first[g]` is the news' first
    event time.
    """

    news: np.ndarray  # int64 [G]
    times: np.ndarray  # int64 [G] seconds
    keys: np.ndarray  # int64 [G] sorted: news * (end - start + 2) + (time - start)
    clicks: np.ndarray  # float64 [G]
    shows: np.ndarray  # float64 [G]
    first: np.ndarray  # int64 [G]
    half_life_hours: float
    prior: float
    start: int  # earliest event second (the keys' origin)
    end: int  # latest event second

    @classmethod
    def from_events(
        cls,
        news: np.ndarray,
        times: np.ndarray,
        clicks: np.ndarray,
        *,
        half_life_hours: float,
        prior: float,
    ) -> PopularityCounts:
        """Counts of events (news index > 0, time in seconds, clicked 0/1), in any order."""
        if half_life_hours <= 0:
            raise ValueError(f"{cls.__name__}: half_life_hours must be > 0, got {half_life_hours}")
        if prior < 0:
            raise ValueError(f"{cls.__name__}: prior must be >= 0, got {prior}")
        news = np.asarray(news, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        clicks = np.asarray(clicks, dtype=np.float64)
        start = int(times.min()) if len(times) else 0
        end = int(times.max()) if len(times) else 0
        # every event twice: under its news and under GLOBAL (the whole stream)
        news = np.concatenate([news, np.full(len(times), GLOBAL, dtype=np.int64)])
        times = np.concatenate([times, times])
        clicks = np.concatenate([clicks, clicks])
        span = end - start + 2
        keys = news * span + (times - start)
        group_keys, inverse = np.unique(keys, return_inverse=True)
        group_news, group_times = group_keys // span, group_keys % span + start
        sums = np.stack(
            [
                np.bincount(inverse, weights=clicks, minlength=len(group_keys)),
                np.bincount(inverse, minlength=len(group_keys)).astype(np.float64),
            ],
            axis=1,
        )
        seg = _segment_starts(group_news)
        decayed = _decayed_prefix(sums, group_times, seg, half_life_hours * 3600.0)
        return cls(
            news=group_news,
            times=group_times,
            keys=group_keys,
            clicks=decayed[:, 0],
            shows=decayed[:, 1],
            first=group_times[seg],
            half_life_hours=float(half_life_hours),
            prior=float(prior),
            start=start,
            end=end,
        )

    @classmethod
    def from_impressions(cls, *parts: Impressions, half_life_hours: float, prior: float) -> PopularityCounts:
        """Counts of every labelled candidate slot of these impressions (shared news vocabulary)."""
        news, times, clicks = [], [], []
        for imps in parts:
            seconds = np.asarray(imps.times).astype("datetime64[s]").astype(np.int64)
            news.append(np.asarray(imps.candidates, dtype=np.int64))
            times.append(np.repeat(seconds, imps.candidate_counts))
            clicks.append(np.asarray(imps.labels) == 1)
        return cls.from_events(
            np.concatenate(news) if news else np.zeros(0, np.int64),
            np.concatenate(times) if times else np.zeros(0, np.int64),
            np.concatenate(clicks) if clicks else np.zeros(0),
            half_life_hours=half_life_hours,
            prior=prior,
        )

    def features(self, news: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Features float32 [..., len(FEATURES)] of news indices `news` at seconds `at` (broadcast
        together): only events strictly before `at` count."""
        news, at = np.broadcast_arrays(np.asarray(news, dtype=np.int64), np.asarray(at, dtype=np.int64))
        shape = news.shape
        news, at = news.reshape(-1), at.reshape(-1)
        out = np.empty((len(news), len(FEATURES)), dtype=np.float32)
        for lo in range(0, len(news), QUERY_CHUNK):
            part = slice(lo, lo + QUERY_CHUNK)
            out[part] = self._features(news[part], at[part])
        return out.reshape(*shape, len(FEATURES))

    def _features(self, news: np.ndarray, at: np.ndarray) -> np.ndarray:
        clicks, shows, first = self.sums_before(news, at)
        # the stream's CTR depends on the time alone: once per distinct second (impressions share them)
        moments, inverse = np.unique(at, return_inverse=True)
        global_clicks, global_shows, _ = self.sums_before(np.full_like(moments, GLOBAL), moments)
        return assemble_features(
            clicks, shows, first, global_clicks[inverse], global_shows[inverse], at, self.prior
        )

    def sums_before(self, news: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decayed clicks, shows as of `at` from events strictly before it, and the first event
        time (-1 where none)."""
        span = self.end - self.start + 2
        if len(self.news) == 0:
            zeros = np.zeros(len(news))
            return zeros, zeros, np.full(len(news), -1, dtype=np.int64)
        # a time past the stream's end sees all of it; one before its start sees nothing
        offset = np.clip(at - self.start, 0, span - 1)
        g = np.searchsorted(self.keys, news * span + offset, side="left") - 1  # last group strictly before
        safe = np.maximum(g, 0)
        found = (g >= 0) & (self.news[safe] == news)
        decay = growth(self.times[safe], at, self.half_life_hours)
        clicks = np.where(found, self.clicks[safe] * decay, 0.0)
        shows = np.where(found, self.shows[safe] * decay, 0.0)
        first = np.where(found, self.first[safe], -1)
        return clicks, shows, first


def growth(since: np.ndarray | int, at: np.ndarray | int, half_life_hours: float) -> np.ndarray:
    """2^-((at - since)/h): what a count made at `since` weighs at `at` (at >= since)."""
    elapsed = np.maximum(np.asarray(at, np.int64) - np.asarray(since, np.int64), 0)
    return np.exp2(-elapsed / (half_life_hours * 3600.0))


def assemble_features(
    clicks: np.ndarray,
    shows: np.ndarray,
    first: np.ndarray,
    global_clicks: np.ndarray,
    global_shows: np.ndarray,
    at: np.ndarray,
    prior: float,
) -> np.ndarray:
    """Features float32 [N, F] from each news' decayed sums as of `at` (first event time, -1 where
    none) and the whole stream's: the one definition batch counts and running counts share."""
    base = np.where(global_shows > 0, global_clicks / np.maximum(global_shows, 1e-300), DEFAULT_CTR)
    seen = first >= 0
    ctr = (clicks + prior * base) / np.maximum(shows + prior, 1e-12)
    ctr = np.where(seen | (prior > 0), ctr, base)  # no smoothing and no event: the base
    age = np.where(seen, (at - np.where(seen, first, at)) / 3600.0, 0.0)
    return np.stack([clicks, shows, ctr, age, seen.astype(np.float64)], axis=1).astype(np.float32)


PROTOCOLS = ("offline", "replay")


@dataclass(frozen=True)
class PopularityView:
    """Counts and how a scored split reads them: `at` one second for every impression (offline:
    frozen at the end of the training period), or None: each at its own time (replay)."""

    counts: PopularityCounts
    at: int | None

    @property
    def protocol(self) -> str:
        return "replay" if self.at is None else "offline"


def protocol_view(
    protocol: str,
    known: Impressions,
    scored: Impressions,
    *,
    half_life_hours: float,
    prior: float,
) -> PopularityView:
    """The counts a split `scored` is scored with, given the impressions `known` before it.

    offline: the counts of `known`, frozen one second after its last impression. replay: the
    counts of `known` and `scored` together, each scored impression at its own time (so it sees
    every earlier one and, strictly-before, never its own clicks or later ones).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "offline":
        counts = PopularityCounts.from_impressions(known, half_life_hours=half_life_hours, prior=prior)
        return PopularityView(counts, counts.end + 1)
    counts = PopularityCounts.from_impressions(known, scored, half_life_hours=half_life_hours, prior=prior)
    return PopularityView(counts, None)


def impression_seconds(imps: Impressions) -> np.ndarray:
    """Each impression's time in seconds since the epoch, int64 [I]."""
    return np.asarray(imps.times).astype("datetime64[s]").astype(np.int64)


def slot_features(counts: PopularityCounts, imps: Impressions, at: int | None = None) -> np.ndarray:
    """Features [C, F] of every candidate slot of `imps`: each at its impression's own time
    (replay, and training), or all at the second `at` (offline: frozen at the training end)."""
    seconds = np.repeat(impression_seconds(imps), imps.candidate_counts) if at is None else np.int64(at)
    return counts.features(np.asarray(imps.candidates), seconds)


def _segment_starts(news: np.ndarray) -> np.ndarray:
    """Index of the first group of each group's news (groups sorted by news)."""
    new = np.ones(len(news), dtype=bool)
    new[1:] = news[1:] != news[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(len(news)), 0))


def _decayed_prefix(values: np.ndarray, times: np.ndarray, seg: np.ndarray, half_life: float) -> np.ndarray:
    """x_g = sum over groups g' <= g of the same segment of values[g'] * 2^-((t_g - t_g')/h).

    Per block, one cumulative sum of values * 2^((t - r)/h), r the block's start (pandas' grouped
    cumsum: positive terms, no cancellation), times 2^-((t_g - r)/h). A block is a segment's run
    of at most BLOCK_HALF_LIVES half-lives, so 2^((t - r)/h) stays inside float64; a later block
    of a segment adds the end of the block before it, decayed (a loop over such blocks only: on
    MIND no news lives 500 half-lives).
    """
    width = BLOCK_HALF_LIVES * half_life
    block = ((times - times[seg]) // width).astype(np.int64)
    new = np.ones(len(times), dtype=bool)
    new[1:] = (seg[1:] != seg[:-1]) | (block[1:] != block[:-1])
    sub = np.cumsum(new) - 1  # block number of each group
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(times)) - 1  # last group of each block
    ref = times[seg][starts] + block[starts] * width  # each block's start time
    grow = np.exp2((times - ref[sub]) / half_life)[:, None]  # (G, 1), at most 2^BLOCK_HALF_LIVES
    x = pd.DataFrame(values * grow).groupby(sub, sort=False).cumsum().to_numpy() / grow
    later = np.flatnonzero(
        seg[starts] == seg[np.maximum(starts - 1, 0)]
    )  # blocks after their segment's first
    for b in later[later > 0]:  # in order: the block before already holds its own carry
        span, e = slice(starts[b], ends[b] + 1), ends[b - 1]
        x[span] += x[e] * np.exp2(-(times[span] - times[e]) / half_life)[:, None]
    return x
