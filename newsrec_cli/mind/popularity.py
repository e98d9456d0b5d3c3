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
by one cumulative sum per news against its own time origin, one range of news at a time so the
sorting stays small), then any (news, time) pair is a binary search: the features of MIND-large's
80M candidate slots take a few passes over arrays, no Python loop per impression. Offline scoring asks every impression at
one time (the end of the training period); replay asks each at its own time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from newsrec_cli.mind.behaviors import Impressions

FEATURES = ("clicks", "impressions", "ctr", "age_hours", "seen")
GLOBAL = 0  # news index 0 is padding, never a real news: it holds the stream of all news
DEFAULT_CTR = 0.04  # before any event: MIND's share of clicks among candidates (about 4%)
BLOCK_HALF_LIVES = 500  # 2^500 ~ 1e150: far inside float64 (see _decayed_prefix)
QUERY_CHUNK = 1 << 22  # (news, time) pairs looked up per pass: bounded memory on MIND-large


BUCKET_EVENTS = 1 << 24  # events grouped per pass: one pass's sort and sums stay near 1 GB


@dataclass(frozen=True)
class PopularityCounts:
    """Decayed click and impression sums of every (news, second) group of a stream, inclusive.

    Groups are sorted by (news, time) and kept as their key alone, news * span + (time - start)
    with span = end - start + 2: `clicks[g]` and `shows[g]` are the decayed sums of the news'
    events up to and including group g, as of its time; `first_seen[n]` is news n's first event
    time (-1 where none). 24 bytes a group, so both splits of MIND-large (165M slots) fit.
    """

    keys: np.ndarray  # int64 [G] sorted
    clicks: np.ndarray  # float64 [G]
    shows: np.ndarray  # float64 [G]
    first_seen: np.ndarray  # int64 [largest news index + 1]
    half_life_hours: float
    prior: float
    start: int  # earliest event second (the keys' origin)
    end: int  # latest event second

    @property
    def span(self) -> int:
        return self.end - self.start + 2

    def seen_news(self) -> np.ndarray:
        """The news indices with at least one event, sorted (GLOBAL first when there are events)."""
        return np.flatnonzero(self.first_seen >= 0)

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
        news = np.asarray(news, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        clicks = np.asarray(clicks, dtype=np.float64)
        start = int(times.min()) if len(times) else 0
        end = int(times.max()) if len(times) else 0
        offsets = times - start
        stream = _Events(np.full(len(times), GLOBAL, np.int64), offsets, clicks)
        return cls._build(
            [_Events(news, offsets, clicks)], stream, start, end, half_life_hours=half_life_hours, prior=prior
        )

    @classmethod
    def from_impressions(cls, *parts: Impressions, half_life_hours: float, prior: float) -> PopularityCounts:
        """Counts of every labelled candidate slot of these impressions (shared news vocabulary)."""
        seconds = [impression_seconds(imps) for imps in parts]
        known = [s for s in seconds if len(s)]
        start = int(min(s.min() for s in known)) if known else 0
        end = int(max(s.max() for s in known)) if known else 0
        events, stream = [], []
        for imps, at in zip(parts, seconds, strict=True):
            counts = imps.candidate_counts
            clicked = np.asarray(imps.labels) == 1
            offsets = (at - start).astype(np.int32)  # seconds since start: 4 bytes a slot
            events.append(_Events(np.asarray(imps.candidates), np.repeat(offsets, counts), clicked))
            # the whole stream per impression rather than per slot: its clicks and candidates
            per_impression = _segment_sums(clicked, imps.candidate_offsets)
            stream.append(_Events(np.full(len(at), GLOBAL, np.int64), offsets, per_impression, counts))
        return cls._build(
            events, _Events.concat(stream), start, end, half_life_hours=half_life_hours, prior=prior
        )

    @classmethod
    def _build(
        cls,
        events: list[_Events],
        stream: _Events,
        start: int,
        end: int,
        *,
        half_life_hours: float,
        prior: float,
    ) -> PopularityCounts:
        """Group and decay the news' events one range of news at a time (ranges of about
        BUCKET_EVENTS events; a news' groups never straddle two), after the whole stream's."""
        if half_life_hours <= 0:
            raise ValueError(f"{cls.__name__}: half_life_hours must be > 0, got {half_life_hours}")
        if prior < 0:
            raise ValueError(f"{cls.__name__}: prior must be >= 0, got {prior}")
        span = end - start + 2
        half_life = half_life_hours * 3600.0
        top = max((int(e.news.max()) for e in events if len(e.news)), default=GLOBAL)
        per_news = np.zeros(top + 1, np.int64)
        for e in events:
            for lo in range(0, len(e.news), BUCKET_EVENTS):  # bincount copies its input to int64
                per_news += np.bincount(e.news[lo : lo + BUCKET_EVENTS], minlength=top + 1)
        total = int(per_news.sum())
        cuts = np.searchsorted(np.cumsum(per_news), np.arange(BUCKET_EVENTS, total, BUCKET_EVENTS))
        bounds = np.unique(np.concatenate([[GLOBAL + 1], cuts, [top + 1]]))  # news ranges [lo, hi)
        first_seen = np.full(top + 1, -1, dtype=np.int64)
        pieces = [_grouped(stream, start, span, half_life, first_seen)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            whole = len(bounds) == 2  # one pass: every event, no copy
            part = _Events.concat([e if whole else e.select(int(lo), int(hi)) for e in events])
            pieces.append(_grouped(part, start, span, half_life, first_seen))
        return cls(
            keys=np.concatenate([p[0] for p in pieces]),
            clicks=np.concatenate([p[1] for p in pieces]),
            shows=np.concatenate([p[2] for p in pieces]),
            first_seen=first_seen,
            half_life_hours=float(half_life_hours),
            prior=float(prior),
            start=start,
            end=end,
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
        span = self.span
        if len(self.keys) == 0:
            zeros = np.zeros(len(news))
            return zeros, zeros, np.full(len(news), -1, dtype=np.int64)
        # a time past the stream's end sees all of it; one before its start sees nothing
        offset = np.clip(at - self.start, 0, span - 1)
        # in key order, so successive binary searches and reads stay close in memory (6x faster
        # on MIND-large's 165M groups than in slot order); the results go back in order at the end
        order = np.argsort(news * span + offset)
        news, at = news[order], at[order]
        base = news * span
        g = np.searchsorted(self.keys, base + offset[order], side="left") - 1  # last group strictly before
        safe = np.maximum(g, 0)
        key = self.keys[safe]
        found = (g >= 0) & (key >= base)  # that group is this news' own
        decay = growth(key % span + self.start, at, self.half_life_hours)
        clicks, shows, first = (np.empty(len(news)), np.empty(len(news)), np.empty(len(news), np.int64))
        clicks[order] = np.where(found, self.clicks[safe] * decay, 0.0)
        shows[order] = np.where(found, self.shows[safe] * decay, 0.0)
        first[order] = np.where(found, self.first_seen[np.clip(news, 0, len(self.first_seen) - 1)], -1)
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


def slot_chunks(imps: Impressions, size: int = QUERY_CHUNK) -> Iterator[tuple[slice, slice]]:
    """Runs of whole impressions of about `size` candidate slots each, as (impressions, slots)
    slices: per-slot arrays are made a run at a time, never for all of MIND-large's 85M slots."""
    offsets = np.asarray(imps.candidate_offsets)
    cuts = np.searchsorted(offsets, np.arange(size, int(offsets[-1]), size))
    bounds = np.unique(np.concatenate([[0], cuts, [len(imps)]]))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        yield slice(int(lo), int(hi)), slice(int(offsets[lo]), int(offsets[hi]))


def slot_features(
    counts: PopularityCounts, imps: Impressions, at: int | None = None, columns: tuple[str, ...] = FEATURES
) -> np.ndarray:
    """Features float32 [C, len(columns)] of every candidate slot of `imps`: each at its
    impression's own time (replay, and training), or all at the second `at` (offline: frozen at
    the training end)."""
    out = np.empty((len(imps.candidates), len(columns)), dtype=np.float32)
    which = [FEATURES.index(c) for c in columns]
    seconds = impression_seconds(imps) if at is None else None
    counts_per = imps.candidate_counts
    for rows, slots in slot_chunks(imps):
        when = np.int64(at) if seconds is None else np.repeat(seconds[rows], counts_per[rows])
        out[slots] = counts.features(np.asarray(imps.candidates[slots]), when)[:, which]
    return out


@dataclass(frozen=True)
class _Events:
    """Events of a stream: news index, seconds since the stream's start, clicks, and shows
    (None: one each)."""

    news: np.ndarray
    offsets: np.ndarray
    clicks: np.ndarray
    shows: np.ndarray | None = None

    def select(self, lo: int, hi: int) -> _Events:
        """The events of news lo <= n < hi."""
        keep = np.flatnonzero((self.news >= lo) & (self.news < hi))
        shows = None if self.shows is None else self.shows[keep]
        return _Events(self.news[keep], self.offsets[keep], self.clicks[keep], shows)

    @staticmethod
    def concat(parts: list[_Events]) -> _Events:
        if len(parts) == 1:
            return parts[0]
        shows = None
        if any(p.shows is not None for p in parts):
            shows = np.concatenate([np.ones(len(p.news)) if p.shows is None else p.shows for p in parts])
        return _Events(
            np.concatenate([p.news for p in parts]),
            np.concatenate([p.offsets for p in parts]),
            np.concatenate([p.clicks for p in parts]),
            shows,
        )


def _grouped(
    events: _Events, start: int, span: int, half_life: float, first_seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys, decayed clicks and decayed shows of the (news, second) groups of `events`; writes
    each news' first event time into `first_seen`."""
    keys = events.news.astype(np.int64) * span + events.offsets
    group_keys, inverse = np.unique(keys, return_inverse=True)
    del keys
    size = len(group_keys)
    shows = (
        np.bincount(inverse, minlength=size).astype(np.float64)
        if events.shows is None
        else np.bincount(inverse, weights=events.shows, minlength=size)
    )
    sums = np.stack([np.bincount(inverse, weights=events.clicks, minlength=size), shows], axis=1)
    del inverse, shows
    news, times = group_keys // span, group_keys % span + start
    seg = _segment_starts(news)
    firsts = np.unique(seg)
    first_seen[news[firsts]] = times[firsts]
    decayed = _decayed_prefix(sums, times, seg, half_life)
    return group_keys, np.ascontiguousarray(decayed[:, 0]), np.ascontiguousarray(decayed[:, 1])


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum float64 [I] of values[offsets[i]:offsets[i+1]] per segment (empty segments sum to 0)."""
    out = np.zeros(len(offsets) - 1)
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    if len(nonempty):
        out[nonempty] = np.add.reduceat(values, offsets[nonempty], dtype=np.float64)
    return out


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
