"""The incremental popularity counter: the counts of `popularity.py`, updated one batch of events
at a time (what serving's POST /v1/events applies), keyed by news ID.

Each key (a news ID, or GLOBAL_KEY for the whole stream) holds its decayed sums as of its own
reference second T (its latest event), so no exponent ever grows and events may come in any
order; two sums merge by decaying both to the later reference:

.. math::
    C_n(T) = \\sum_{j:\\, t_j \\le T} y_j\\, 2^{-(T - t_j)/h}, \\qquad
    C_n(t) = C_n(T)\\, 2^{-(t - T)/h} \\quad (t > T)

and likewise for impressions. Read at a time after every event applied, that is exactly
`PopularityCounts`' C_n(t): the same decay (`growth`), the same smoothing and age
(`assemble_features`).

The sums live in a `SumStore`: `MemorySums` here (one process, saved as an npz), or Redis
(`newsrec_cli.serve.redis_sums`); both merge a batch with `merge`. A store also holds each
news' first event time, the latest event time and how many impressions were applied.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.errors import InputError
from newsrec_cli.mind.popularity import GLOBAL, PopularityCounts, assemble_features, growth

GLOBAL_KEY = ""  # the whole stream's sums (no news ID is empty)
FORMAT = "newsrec-popularity-counts"
NO_EVENT = -1  # `latest` and `first` where there is none
# The event seconds the counts hold: from the Unix epoch (NO_EVENT is second -1, and a news counts
# as seen from a first event at a second >= 0) to the calendar's last second but one, so that the
# clock (one second after the latest event) is still a time a client can read.
FIRST_SECOND = 0
LAST_SECOND = int(np.datetime64("9999-12-31T23:59:58", "s").astype(np.int64))


@dataclass(frozen=True)
class CountsSpec:
    """What the sums mean: the run's half-life and prior, and the second the counts started at
    (one second after the training period: the offline protocol's clock)."""

    half_life_hours: float
    prior: float
    origin: int

    def to_dict(self) -> dict[str, Any]:
        return {"half_life_hours": self.half_life_hours, "prior": self.prior, "origin": self.origin}


@dataclass(frozen=True)
class Batch:
    """A batch of events summed per key (news IDs and GLOBAL_KEY): what a store adds at once."""

    keys: list[str]
    clicks: np.ndarray  # float64 [K] decayed sums as of `ref`
    shows: np.ndarray  # float64 [K]
    ref: np.ndarray  # int64 [K] each key's reference second (its latest event here)
    first: np.ndarray  # int64 [K] earliest event second of each key in the batch
    latest: int
    impressions: int


class SumStore(Protocol):
    def add(self, batch: Batch) -> None: ...

    def clock(self) -> tuple[int, int]:
        """(latest event second or NO_EVENT, impressions applied)."""
        ...

    def read(
        self, keys: list[str]
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[int, int]]:
        """The keys' clicks and shows (float64) as of each key's reference second, the reference
        and first event seconds (int64, NO_EVENT where none), and `clock()`, in one consistent
        snapshot (no batch applied between the two)."""
        ...


@dataclass(frozen=True)
class Reading:
    """Features of news read in one snapshot of the counts, with that snapshot's clock."""

    features: np.ndarray  # float32 [N, F]
    at: int  # the second they are read at: RunningCounts.now() of this snapshot
    latest: int  # latest event second or NO_EVENT
    impressions: int  # impressions applied


class RunningCounts:
    """Popularity features of news IDs from a `SumStore`, and the batches of events it adds."""

    def __init__(self, spec: CountsSpec, store: SumStore) -> None:
        self.spec = spec
        self.store = store

    def batch(self, news: list[str], times: np.ndarray, clicks: np.ndarray, impressions: int) -> Batch:
        """Candidate slots (news ID, second, clicked 0/1), each under its news and GLOBAL_KEY."""
        times = np.asarray(times, np.int64)
        keys, inverse = np.unique(
            np.asarray([*news, *([GLOBAL_KEY] * len(news))], dtype=object), return_inverse=True
        )
        times = np.concatenate([times, times])
        clicked = np.concatenate([clicks, clicks]).astype(np.float64)
        ref = np.full(len(keys), np.iinfo(np.int64).min, np.int64)
        np.maximum.at(ref, inverse, times)
        first = np.full(len(keys), np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, inverse, times)
        weights = growth(times, ref[inverse], self.spec.half_life_hours)
        return Batch(
            keys=[str(k) for k in keys],
            clicks=np.bincount(inverse, weights=weights * clicked, minlength=len(keys)),
            shows=np.bincount(inverse, weights=weights, minlength=len(keys)),
            ref=ref,
            first=first,
            latest=int(times.max()) if len(times) else NO_EVENT,
            impressions=impressions,
        )

    def apply(self, news: list[str], times: np.ndarray, clicks: np.ndarray, impressions: int) -> None:
        self.store.add(self.batch(news, times, clicks, impressions))

    def now(self) -> int:
        """The counts' clock: one second after the latest event (never before the origin), so that
        every event applied counts, as `PopularityCounts` reads times strictly after events."""
        latest, _ = self.store.clock()
        return self.second_after(latest)

    def second_after(self, latest: int) -> int:
        return max(latest + 1, self.spec.origin)

    def features(self, news: list[str], at: int | None = None) -> np.ndarray:
        """Features float32 [N, F] of news IDs at second `at` (default `now()`)."""
        at = self.now() if at is None else int(at)
        sums, _ = self.store.read([*news, GLOBAL_KEY])
        return self._assemble(news, sums, at)

    def read(self, news: list[str]) -> Reading:
        """Features of news IDs at `now()`, sums and clock from one snapshot of the store: the
        features, their second and the freshness a response reports agree even while events land."""
        sums, (latest, impressions) = self.store.read([*news, GLOBAL_KEY])
        at = self.second_after(latest)
        return Reading(self._assemble(news, sums, at), at, latest, impressions)

    def _assemble(
        self, news: list[str], sums: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], at: int
    ) -> np.ndarray:
        clicks, shows, ref, first = sums
        decay = growth(ref, at, self.spec.half_life_hours)
        clicks, shows = clicks * decay, shows * decay
        n = len(news)
        return assemble_features(
            clicks[:n],
            shows[:n],
            first[:n],
            np.full(n, clicks[n]),
            np.full(n, shows[n]),
            np.full(n, at, np.int64),
            self.spec.prior,
        )


def merge(
    half_life_hours: float,
    old: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    batch: Batch,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sums (clicks, shows, ref, first) of `old` (a store's, for the batch's keys; ref and
    first NO_EVENT where none) with the batch added: both decayed to the later reference."""
    clicks, shows, ref, first = old
    new = ref == NO_EVENT
    at = np.where(new, batch.ref, np.maximum(ref, batch.ref))
    keep = np.where(new, 0.0, growth(np.where(new, at, ref), at, half_life_hours))
    add = growth(batch.ref, at, half_life_hours)
    return (
        clicks * keep + batch.clicks * add,
        shows * keep + batch.shows * add,
        at,
        np.where(new, batch.first, np.minimum(first, batch.first)),
    )


def frozen_batch(counts: PopularityCounts, news_ids: list[str], impressions: int) -> tuple[CountsSpec, Batch]:
    """The counts of a stream frozen one second after its end (the offline protocol), as a batch
    a store starts from; `news_ids[i]` is the ID of news index i (the counts' vocabulary)."""
    origin = counts.end + 1
    index = counts.seen_news()
    clicks, shows, first = counts.sums_before(index, np.full(len(index), origin, np.int64))
    keys = [GLOBAL_KEY if i == GLOBAL else news_ids[i] for i in index]
    spec = CountsSpec(counts.half_life_hours, counts.prior, origin)
    latest = counts.end if len(counts.keys) else NO_EVENT
    ref = np.full(len(index), origin, np.int64)
    return spec, Batch(keys, clicks, shows, ref, first.astype(np.int64), latest, impressions)


class MemorySums:
    """Sums held in this process, saved to an npz file (atomically) after every batch when `path`
    is given; thread-safe."""

    def __init__(self, spec: CountsSpec, path: Path | None = None) -> None:
        self.spec = spec
        self.path = path
        self.index: dict[str, int] = {}
        self.clicks = np.zeros(0, np.float64)
        self.shows = np.zeros(0, np.float64)
        self.ref = np.zeros(0, np.int64)
        self.first = np.zeros(0, np.int64)
        self.latest = NO_EVENT
        self.impressions = 0
        self.lock = threading.Lock()

    def _rows(self, keys: list[str]) -> np.ndarray:
        rows = [self.index.setdefault(k, len(self.index)) for k in keys]
        if len(self.index) > len(self.clicks):
            grow = max(len(self.index), 2 * len(self.clicks)) - len(self.clicks)
            self.clicks = np.concatenate([self.clicks, np.zeros(grow)])
            self.shows = np.concatenate([self.shows, np.zeros(grow)])
            self.ref = np.concatenate([self.ref, np.full(grow, NO_EVENT, np.int64)])
            self.first = np.concatenate([self.first, np.full(grow, NO_EVENT, np.int64)])
        return np.asarray(rows, np.int64)

    def add(self, batch: Batch) -> None:
        with self.lock:
            rows = self._rows(batch.keys)
            old = (self.clicks[rows], self.shows[rows], self.ref[rows], self.first[rows])
            merged = merge(self.spec.half_life_hours, old, batch)
            self.clicks[rows], self.shows[rows], self.ref[rows], self.first[rows] = merged
            self.latest = max(self.latest, batch.latest)
            self.impressions += batch.impressions
            if self.path is not None:
                self._save(self.path)

    def clock(self) -> tuple[int, int]:
        with self.lock:
            return self.latest, self.impressions

    def read(
        self, keys: list[str]
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[int, int]]:
        with self.lock:
            clock = (self.latest, self.impressions)
            if not len(self.clicks):
                none = np.full(len(keys), NO_EVENT, np.int64)
                return (np.zeros(len(keys)), np.zeros(len(keys)), none, none), clock
            rows = np.asarray([self.index.get(k, -1) for k in keys], np.int64)
            known = rows >= 0
            safe = np.where(known, rows, 0)
            sums = (
                np.where(known, self.clicks[safe], 0.0),
                np.where(known, self.shows[safe], 0.0),
                np.where(known, self.ref[safe], NO_EVENT),
                np.where(known, self.first[safe], NO_EVENT),
            )
            return sums, clock

    # ------------------------------------------------------------------ files

    def _save(self, path: Path) -> None:
        """An npz of plain arrays (no pickle): the header as JSON text, then the columns. Binary,
        so a save after every batch costs milliseconds, and float64 reads back bit-identical."""
        n = len(self.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": FORMAT,
            "spec": self.spec.to_dict(),
            "latest": self.latest,
            "impressions": self.impressions,
        }
        atomic.write_npz(
            path,
            header=np.asarray(json.dumps(header)),
            keys=np.asarray(list(self.index), dtype=str),
            clicks=self.clicks[:n],
            shows=self.shows[:n],
            ref=self.ref[:n],
            first=self.first[:n],
        )

    def save(self, path: Path) -> None:
        with self.lock:
            self._save(path)

    @classmethod
    def load(cls, path: Path, save_to: Path | None = None) -> MemorySums:
        """Sums saved by `save` (an export's frozen counts, or a server's state); InputError naming
        the file and field when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            header = json.loads(str(arrays["header"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read popularity counts ({exc})", path=path) from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise InputError(f"not popularity counts (format {FORMAT!r} expected)", path=path, field="format")
        try:
            spec = CountsSpec(**header["spec"])
            keys = [str(k) for k in arrays["keys"].tolist()]
            clicks = np.asarray(arrays["clicks"], np.float64)
            shows = np.asarray(arrays["shows"], np.float64)
            ref = np.asarray(arrays["ref"], np.int64)
            first = np.asarray(arrays["first"], np.int64)
            latest, impressions = int(header["latest"]), int(header["impressions"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed popularity counts ({exc})", path=path, field="spec") from None
        if not (len(keys) == len(clicks) == len(shows) == len(ref) == len(first)) or not (
            np.isfinite(clicks).all() and np.isfinite(shows).all()
        ):
            raise InputError("popularity counts of unequal lengths or not finite", path=path, field="clicks")
        sums = cls(spec, save_to)
        sums.index = {k: i for i, k in enumerate(keys)}
        sums.clicks, sums.shows, sums.ref, sums.first = clicks, shows, ref, first
        sums.latest, sums.impressions = latest, impressions
        return sums
