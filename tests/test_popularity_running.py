"""The incremental counter (mind/running_counts.py) against the batch counts of popularity.py:
frozen at the end of a stream, then fed the next events, it reads what replay reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_popularity_counts import HOUR, _impressions

from newsrec_cli.mind.popularity import PopularityCounts, impression_seconds
from newsrec_cli.mind.running_counts import MemorySums, RunningCounts, frozen_batch

IDS = ["", "N1", "N2", "N3", "N4"]  # news index i has ID IDS[i]; 0 is padding


def _slots(imps) -> tuple[list[str], np.ndarray, np.ndarray]:
    news = [IDS[i] for i in imps.candidates]
    return news, np.repeat(impression_seconds(imps), imps.candidate_counts), np.asarray(imps.labels)


@pytest.mark.parametrize("prior", [0.0, 5.0])
def test_frozen_then_fed_reads_as_the_batch_counts(prior: float, tmp_path: Path) -> None:
    known = _impressions([0, HOUR, 2 * HOUR], [[1, 2], [1, 3], [2, 3]], [[1, 0], [0, 1], [1, 0]])
    later = _impressions([5 * HOUR, 5 * HOUR, 9 * HOUR], [[1, 4], [4, 2], [4, 3]], [[0, 1], [1, 0], [0, 0]])
    counts = PopularityCounts.from_impressions(known, half_life_hours=2.0, prior=prior)
    spec, start = frozen_batch(counts, IDS, len(known))
    sums = MemorySums(spec, tmp_path / "counts.npz")
    sums.add(start)
    running = RunningCounts(spec, sums)
    news = np.arange(1, 5)
    # frozen: the offline protocol's features, one second after the stream's end
    assert running.now() == counts.end + 1
    np.testing.assert_array_equal(running.features(IDS[1:]), counts.features(news, counts.end + 1))
    # fed the later impressions one at a time: the batch counts of both streams, read after them
    for row in range(len(later)):
        running.apply(*_slots(later.subset(np.array([row]))), impressions=1)
    both = PopularityCounts.from_impressions(known, later, half_life_hours=2.0, prior=prior)
    at = both.end + 1
    assert running.now() == at and sums.clock() == (both.end, len(known) + len(later))
    np.testing.assert_allclose(running.features(IDS[1:]), both.features(news, at), rtol=1e-6)
    # N4 was first shown at 5 h: its age comes from the running counts' own first time
    assert running.features(["N4"])[0, 3] == pytest.approx(4.0 + 1 / 3600)
    # saved after every batch, and read back the same
    again = RunningCounts(spec, MemorySums.load(tmp_path / "counts.npz"))
    np.testing.assert_array_equal(again.features(IDS[1:]), running.features(IDS[1:]))


def test_an_unknown_news_reads_as_never_seen() -> None:
    counts = PopularityCounts.from_impressions(
        _impressions([0], [[1, 2]], [[1, 0]]), half_life_hours=1.0, prior=0.0
    )
    spec, start = frozen_batch(counts, IDS, 1)
    sums = MemorySums(spec)
    sums.add(start)
    np.testing.assert_array_equal(
        RunningCounts(spec, sums).features(["fresh"]), counts.features(np.array([9]), counts.end + 1)
    )


def test_events_years_later_and_out_of_order_stay_exact() -> None:
    """Each key's sums are kept as of its own latest event: no exponent grows with time, and an
    event older than the latest merges in as well."""
    year = 365 * 24 * HOUR
    known = _impressions([0, HOUR], [[1, 2], [1, 2]], [[1, 0], [0, 1]])
    counts = PopularityCounts.from_impressions(known, half_life_hours=1.0, prior=1.0)
    spec, start = frozen_batch(counts, IDS, 0)
    sums = MemorySums(spec)
    sums.add(start)
    running = RunningCounts(spec, sums)
    later = _impressions([10 * year, 10 * year - 5 * HOUR], [[1, 3], [2, 3]], [[0, 1], [1, 1]])
    running.apply(*_slots(later), impressions=2)
    both = PopularityCounts.from_impressions(known, later, half_life_hours=1.0, prior=1.0)
    news = np.arange(1, 4)
    np.testing.assert_allclose(running.features(IDS[1:4]), both.features(news, both.end + 1), rtol=1e-6)
    assert np.isfinite(running.features(IDS[1:4])).all()
