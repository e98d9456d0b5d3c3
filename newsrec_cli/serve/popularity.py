"""Popularity while serving: the counts a run starts from, where the live counts are kept, and
the features and freshness a recommendation reads.

A run trained with --use-popularity adds a per-news term to each logit from that news' counts
(model/popularity.py). Until events arrive, the server reads the counts frozen one second after
the training period (the offline protocol), which `newsrec export` writes to `popularity.npz`.
POST /v1/events adds impressions to them (`mind/running_counts.py`: the same decayed sums,
smoothed CTR and age as training and `evaluate --protocol replay`). The live counts are held in
Redis with --redis-url (replicas share them), or in this process and saved in the state folder.

Retrieval reads the counts of every news once per snapshot (`NewsTerms`): the features, and the
news factor of each news' popularity term, which the requests share until an event or a fresh
news changes them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli.errors import InputError
from newsrec_cli.evaluate.runner import select_split
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.popularity import PopularityCounts
from newsrec_cli.mind.running_counts import NO_EVENT, MemorySums, Reading, RunningCounts, frozen_batch
from newsrec_cli.serve.redis_sums import RedisSums

POPULARITY_FILE = "popularity.npz"  # in an export: the frozen counts; in a state folder: the live ones


def frozen_counts(run: Any) -> MemorySums:
    """The counts of the run's training impressions, frozen one second after their end: what
    evaluate's offline protocol scores the validation split with."""
    data = run.config.get("data", {}).get("path")
    if not data or not Path(data).exists():
        raise InputError(
            "the run's data folder is gone: its popularity counts come from the training impressions",
            path=data or "",
        )
    dataset = load_dataset(data, on_bad_lines=run.data_settings.on_bad_lines)
    known = select_split(dataset, "valid", run.data_settings).train
    if known is None or not known.labeled:
        raise InputError(
            "the run scores with popularity, which needs labelled training impressions to count",
            path=data,
        )
    counts = PopularityCounts.from_impressions(
        known, half_life_hours=run.settings.popularity_half_life, prior=run.settings.popularity_prior
    )
    spec, batch = frozen_batch(counts, list(dataset.news_vocab.ids), impressions=0)  # none since
    sums = MemorySums(spec)
    sums.add(batch)
    return sums


def open_counts(
    start: MemorySums, *, state_dir: Path, redis_url: str | None, model_version: str
) -> RunningCounts:
    """The live counts: in Redis (seeded once from the frozen ones `start`), or in this process
    from the state folder's saved counts when there are, else from `start`, saved after each batch."""
    if redis_url:
        return RunningCounts(start.spec, RedisSums.open(redis_url, model_version, start))
    saved = state_dir / POPULARITY_FILE
    if saved.is_file():
        sums = MemorySums.load(saved, save_to=saved)
        if sums.spec != start.spec:
            raise InputError(
                "saved popularity counts of another model or training period; move the state folder "
                "away to start from this export's counts",
                path=saved,
                field="spec",
            )
    else:
        sums = start
        sums.path = saved  # written at the first batch of events
    return RunningCounts(start.spec, sums)


def freshness(counts: RunningCounts, reading: Reading | None = None) -> dict[str, Any]:
    """How fresh the counts a response used are (`reading`; default: the counts now): the latest
    event applied (the training period's last impression until events arrive), the impressions
    applied since, and the second the counts were read at."""
    latest, impressions = counts.store.clock() if reading is None else (reading.latest, reading.impressions)
    return {
        "latest_event": _iso(latest),
        "events": impressions,
        "training_end": _iso(counts.spec.origin - 1),
        "counted_at": _iso(counts.second_after(latest)),
    }


@dataclass(frozen=True)
class Snapshot:
    """One reading of the counts for the first `count` news of the served table."""

    reading: Reading
    count: int
    terms: np.ndarray | None  # float32 [count]: each news' factor of the term (popularity_keys)


class NewsTerms:
    """The counts of every served news, read once per snapshot of the counts and shared by the
    retrievals until it changes: a new snapshot when an event was applied (the clock moved) or
    the table grew. With `terms`, also each news' factor of the popularity term through the
    backend (`popularity_keys`), retrieval's extra key column."""

    def __init__(self, counts: RunningCounts, backend: Any, terms: bool) -> None:
        self.counts = counts
        self.backend = backend
        self.terms = terms
        self._last: Snapshot | None = None
        self._lock = threading.Lock()  # one reading at a time: concurrent requests wait and share it

    def current(self, ids: list[str], count: int) -> Snapshot:
        """A snapshot of the counts now for news `ids[:count]` (it may cover more rows)."""
        latest, impressions = self.counts.store.clock()
        with self._lock:
            last = self._last
            # every batch of events adds impressions: a snapshot with at least the ones this request
            # saw is as fresh as the counts when it came (one taken while it waited is fresher)
            if (
                last is not None
                and last.reading.impressions >= impressions
                and last.reading.latest >= latest
                and last.count >= count
            ):
                return last
            reading = self.counts.read(ids[:count])
            terms = self.backend.popularity_keys(reading.features) if self.terms else None
            self._last = Snapshot(reading, count, terms)
            return self._last


def _iso(second: int) -> str | None:
    if second == NO_EVENT:
        return None
    return str(np.datetime64(int(second), "s")) + "Z"
