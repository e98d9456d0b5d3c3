"""Causal popularity counts (newsrec_cli/mind/popularity.py): values by hand, and causality."""

from __future__ import annotations

import numpy as np
import pytest

from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.popularity import (
    DEFAULT_CTR,
    FEATURES,
    PopularityCounts,
    protocol_view,
    slot_features,
)
from newsrec_cli.mind.vocab import Vocab

HOUR = 3600
CLICKS, SHOWS, CTR, AGE, SEEN = (FEATURES.index(name) for name in FEATURES)


def _impressions(times: list[int], candidates: list[list[int]], labels: list[list[int]]) -> Impressions:
    counts = [len(c) for c in candidates]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Impressions(
        impression_ids=np.arange(1, len(times) + 1, dtype=np.int64),
        users=np.ones(len(times), dtype=np.int32),
        times=(np.datetime64("2019-11-09T00:00:00") + np.asarray(times, dtype="timedelta64[s]")).astype(
            "datetime64[s]"
        ),
        history_offsets=np.zeros(len(times) + 1, dtype=np.int64),
        history=np.zeros(0, dtype=np.int32),
        candidate_offsets=offsets,
        candidates=np.concatenate([np.asarray(c, dtype=np.int32) for c in candidates]),
        labels=np.concatenate([np.asarray(y, dtype=np.int8) for y in labels]),
        news_vocab=Vocab(),
        user_vocab=Vocab(),
    )


def test_decayed_counts_by_hand() -> None:
    # news 1: clicked at 0 h, shown unclicked at 1 h; news 2: shown at 1 h. Half-life 1 h.
    counts = PopularityCounts.from_events(
        np.array([1, 1, 2]), np.array([0, HOUR, HOUR]), np.array([1, 0, 0]), half_life_hours=1.0, prior=0.0
    )
    at_2h = counts.features(np.array([1, 2, 3]), 2 * HOUR)
    # news 1 at 2 h: the click is 2 half-lives old, the shows 2 and 1 half-lives old
    assert at_2h[0, CLICKS] == pytest.approx(0.25)
    assert at_2h[0, SHOWS] == pytest.approx(0.25 + 0.5)
    assert at_2h[0, CTR] == pytest.approx(0.25 / 0.75)
    assert at_2h[0, AGE] == pytest.approx(2.0)
    assert at_2h[0, SEEN] == 1.0
    assert (
        at_2h[1, CLICKS] == 0
        and at_2h[1, SHOWS] == pytest.approx(0.5)
        and at_2h[1, AGE] == pytest.approx(1.0)
    )
    # a news never shown: no counts, age 0, unseen, and the stream's own decayed CTR
    stream_ctr = 0.25 / (0.25 + 0.5 + 0.5)
    assert at_2h[2, SHOWS] == 0 and at_2h[2, SEEN] == 0 and at_2h[2, CTR] == pytest.approx(stream_ctr)


def test_only_events_strictly_before_count() -> None:
    counts = PopularityCounts.from_events(
        np.array([1, 1]), np.array([100, 200]), np.array([1, 1]), half_life_hours=1e6, prior=0.0
    )
    shows = counts.features(np.array([1, 1, 1, 1]), np.array([100, 101, 200, 201]))[:, SHOWS]
    np.testing.assert_allclose(shows, [0.0, 1.0, 1.0, 2.0], rtol=1e-6)


def test_smoothing_pulls_towards_the_stream() -> None:
    # news 1: 1 click in 1 show; the stream: 1 click in 11 shows; prior of 10 pseudo-impressions
    news = np.array([1] + [2] * 10)
    counts = PopularityCounts.from_events(
        news, np.zeros(11, dtype=np.int64), (news == 1).astype(int), half_life_hours=1e9, prior=10.0
    )
    ctr = counts.features(np.array([1]), 10)[0, CTR]
    assert ctr == pytest.approx((1 + 10 * (1 / 11)) / (1 + 10), rel=1e-5)


def test_no_events_at_all() -> None:
    counts = PopularityCounts.from_events(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), half_life_hours=6, prior=20
    )
    row = counts.features(np.array([5]), 0)[0]
    assert row[SHOWS] == 0 and row[SEEN] == 0 and row[CTR] == pytest.approx(DEFAULT_CTR)


def test_matches_a_brute_force_sum() -> None:
    rng = np.random.default_rng(0)
    news, times = rng.integers(1, 8, 500), rng.integers(0, 5 * 86_400, 500)
    clicks = rng.random(500) < 0.1
    # a half-life far below the span: 2^(t/h) would overflow float64, the scan must not
    counts = PopularityCounts.from_events(news, times, clicks, half_life_hours=0.05, prior=0.0)
    q_news, q_times = rng.integers(1, 8, 200), rng.integers(0, 5 * 86_400, 200)
    got = counts.features(q_news, q_times)
    for row, n, t in zip(got, q_news, q_times, strict=True):
        before = (news == n) & (times < t)
        decay = np.exp2(-(t - times[before]) / (0.05 * HOUR))
        np.testing.assert_allclose(
            row[[CLICKS, SHOWS]], [(decay * clicks[before]).sum(), decay.sum()], atol=1e-6
        )


@pytest.mark.parametrize("protocol", ["offline", "replay"])
def test_later_labels_never_reach_earlier_features(protocol: str) -> None:
    """Permute (and flip) the labels of every impression from time T on: the features of every
    impression before T are unchanged, and each impression's own labels never count."""
    rng = np.random.default_rng(1)
    times = sorted(rng.integers(0, 3 * 86_400, 60).tolist())
    candidates = [rng.choice(np.arange(1, 15), size=6, replace=False).tolist() for _ in times]
    labels = [(rng.random(6) < 0.3).astype(int).tolist() for _ in times]
    known = _impressions(times[:20], candidates[:20], labels[:20])
    scored = _impressions(times[20:], candidates[20:], labels[20:])
    base = protocol_view(protocol, known, scored, half_life_hours=4, prior=5)
    before = slot_features(base.counts, scored, base.at)

    cut = 20  # scored impression `cut` and every later one get other labels
    changed = [list(y) for y in labels[20:]]
    for i in range(cut, len(changed)):
        changed[i] = rng.permutation(changed[i]).tolist() if i % 2 else [1 - y for y in changed[i]]
    other = _impressions(times[20:], candidates[20:], changed)
    view = protocol_view(protocol, known, other, half_life_hours=4, prior=5)
    after = slot_features(view.counts, other, view.at)
    # the impressions before the cut, and the cut one itself (its own labels changed), see the same
    through_cut = int(scored.candidate_offsets[cut + 1])
    np.testing.assert_array_equal(before[:through_cut], after[:through_cut])
    if protocol == "offline":  # frozen at the end of training: nothing of the scored split counts
        np.testing.assert_array_equal(before, after)
    else:  # replay: later impressions do see the changed labels (the test can tell)
        assert not np.array_equal(before, after)


def test_offline_is_frozen_at_the_end_of_training() -> None:
    known = _impressions([0, HOUR], [[1, 2], [1, 2]], [[1, 0], [1, 0]])
    scored = _impressions([5 * HOUR, 9 * HOUR], [[1, 2], [1, 2]], [[0, 1], [0, 1]])
    offline = protocol_view("offline", known, scored, half_life_hours=1, prior=0)
    features = slot_features(offline.counts, scored, offline.at)
    np.testing.assert_array_equal(features[:2], features[2:])  # both impressions: the same counts
    assert features[0, CTR] == pytest.approx(1.0) and features[1, CTR] == pytest.approx(0.0)
    replay = protocol_view("replay", known, scored, half_life_hours=1, prior=0)
    later = slot_features(replay.counts, scored, replay.at)
    assert later[2, SHOWS] > 0 and later[2, CTR] < features[0, CTR]  # the 5 h clicks-free show counts


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="half_life_hours"):
        PopularityCounts.from_events(np.array([1]), np.array([0]), np.array([1]), half_life_hours=0, prior=1)
    with pytest.raises(ValueError, match="protocol"):
        protocol_view(
            "live",
            _impressions([0], [[1]], [[1]]),
            _impressions([1], [[1]], [[0]]),
            half_life_hours=1,
            prior=1,
        )


def test_many_passes_match_a_brute_force_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts grouped a few news at a time (as on MIND-large) and features read a few impressions
    at a time equal the definition, slot by slot, stream CTR and age included."""
    import newsrec_cli.mind.popularity as popularity

    monkeypatch.setattr(popularity, "BUCKET_EVENTS", 7)
    monkeypatch.setattr(popularity, "QUERY_CHUNK", 5)
    rng = np.random.default_rng(2)
    times = sorted(rng.integers(0, 2 * 86_400, 40).tolist())
    candidates = [
        rng.choice(np.arange(1, 12), size=int(rng.integers(0, 5)), replace=False).tolist() for _ in times
    ]
    labels = [(rng.random(len(c)) < 0.3).astype(int).tolist() for c in candidates]
    known = _impressions(times[:25], candidates[:25], labels[:25])
    scored = _impressions(times[25:], candidates[25:], labels[25:])
    half_life, prior = 3.0, 4.0
    counts = PopularityCounts.from_impressions(known, scored, half_life_hours=half_life, prior=prior)
    got = np.concatenate(
        [slot_features(counts, scored)[slots] for _, slots in popularity.slot_chunks(scored, 3)]
    )
    news = np.concatenate([known.candidates, scored.candidates]).astype(np.int64)
    origin = int(np.datetime64("2019-11-09T00:00:00", "s").astype(np.int64))  # _impressions' day
    at = origin + np.repeat(np.asarray(times, np.int64), [len(c) for c in candidates])
    clicked = np.concatenate([known.labels, scored.labels]) == 1
    slot_times = np.repeat(scored.times.astype(np.int64), scored.candidate_counts)
    for row, n, t in zip(got, scored.candidates, slot_times, strict=True):
        decay = np.exp2(-(t - at) / (half_life * HOUR))
        stream = at < t
        mine = stream & (news == n)
        clicks, shows = (decay * clicked)[mine].sum(), decay[mine].sum()
        base = (decay * clicked)[stream].sum() / decay[stream].sum() if stream.any() else DEFAULT_CTR
        age = (t - at[mine].min()) / HOUR if mine.any() else 0.0
        expected = [clicks, shows, (clicks + prior * base) / (shows + prior), age, float(mine.any())]
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
