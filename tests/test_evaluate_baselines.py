"""Baselines and breakdowns on the hand-made dataset, with values computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from evaluate_helpers import CONTENT, POPULARITY, make_impressions, make_mind, make_store

from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import MissingVectorsError
from newsrec_cli.evaluate import baselines
from newsrec_cli.evaluate.breakdown import category_groups, history_groups, metrics_by_group
from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.mind.dataset import load_dataset


@pytest.fixture
def dataset(tmp_path: Path):
    return load_dataset(make_mind(tmp_path / "mind"))


def _score(scores: np.ndarray, imps) -> dict[str, float]:
    return compute_metrics(scores, imps.labels, imps.candidate_offsets, ["auc", "mrr"]).values


def test_popularity_counts_training_clicks(dataset) -> None:
    train, valid = dataset.splits["train"], dataset.splits["valid"]
    counts = baselines.click_counts(train, len(dataset.news_vocab))
    assert {n: counts[dataset.news_vocab[n]] for n in ("N1", "N2", "N3", "N4", "N5", "N6")} == {
        "N1": 0, "N2": 2, "N3": 1, "N4": 1, "N5": 0, "N6": 0,
    }  # fmt: skip
    scores = baselines.popularity_scores(train, valid, seed=0)
    assert _score(scores, valid) == pytest.approx(POPULARITY)
    # The tie-break stays under one click: integer counts are kept.
    assert np.array_equal(np.floor(scores), counts[valid.candidates])


def test_popularity_tie_break_is_seeded(dataset) -> None:
    train, valid = dataset.splits["train"], dataset.splits["valid"]
    a = baselines.popularity_scores(train, valid, seed=1)
    assert np.array_equal(a, baselines.popularity_scores(train, valid, seed=1))
    assert not np.array_equal(a, baselines.popularity_scores(train, valid, seed=2))


def test_random_is_seeded_and_near_half_on_many_impressions() -> None:
    imps = make_impressions([20] * 2000, seed=1)
    a = baselines.random_scores(imps, seed=7)
    assert np.array_equal(a, baselines.random_scores(imps, seed=7))
    assert _score(a, imps)["auc"] == pytest.approx(0.5, abs=0.01)


def test_content_is_cosine_to_the_mean_history(dataset, tmp_path: Path) -> None:
    store = EmbeddingStore.open(make_store(tmp_path / "store"))
    valid = dataset.splits["valid"]
    scores = baselines.content_scores(store, valid, dataset.news_vocab)
    # Impression 10: history mean of N1 (1,0,0) and N3 (0,1,0); candidate N2 = (1, 0.1, 0).
    expected = (1.0 * 0.5 + 0.1 * 0.5) / (np.linalg.norm([1, 0.1, 0]) * np.linalg.norm([0.5, 0.5, 0]))
    assert scores[0] == pytest.approx(expected, rel=1e-6)
    assert scores[6:].tolist() == [0.0, 0.0]  # impression 12 has no history
    assert _score(scores, valid) == pytest.approx(CONTENT)


def test_content_refuses_missing_vectors(dataset, tmp_path: Path) -> None:
    store = EmbeddingStore.open(make_store(tmp_path / "store", skip=("N6",)))
    with pytest.raises(MissingVectorsError, match="1 of 6 IDs has no vector .first: N6"):
        baselines.content_scores(store, dataset.splits["valid"], dataset.news_vocab)


def test_history_groups_equal_per_impression_means(dataset) -> None:
    rng = np.random.default_rng(0)
    valid = dataset.splits["valid"]
    scores = rng.random(len(valid.candidates))
    whole = compute_metrics(scores, valid.labels, valid.candidate_offsets, ["auc", "mrr"])
    groups = history_groups(valid)
    parts = dict(metrics_by_group(scores, valid.labels, valid.candidate_offsets, groups, ["auc", "mrr"]))
    assert set(parts) == {"history 0", "history 1-4"}
    assert parts["history 0"].values["mrr"] == pytest.approx(whole.per_impression["mrr"][2])
    assert parts["history 1-4"].values["mrr"] == pytest.approx(np.mean(whole.per_impression["mrr"][:2]))


def test_category_groups_rank_within_the_category(dataset) -> None:
    valid = dataset.splits["valid"]
    # Candidates: 10: N2 N5 N6 | 11: N4 N6 N2 | 12: N1 N3. Scores put the clicks last overall.
    scores = np.array([0.1, 0.9, 0.8, 0.9, 0.1, 0.8, 0.9, 0.1])
    parts = dict(
        metrics_by_group(
            scores, valid.labels, valid.candidate_offsets, category_groups(valid, dataset.news), ["mrr"]
        )
    )
    assert list(parts) == ["news", "sports", "tv"]
    # tv: impression 10 (N5, N6 no click) skipped, impression 11 has N6 alone -> MRR 1.
    assert (parts["tv"].values["mrr"], parts["tv"].counts["mrr"], parts["tv"].no_click) == (1.0, 1, 1)
    # sports: 10 has N2 alone (clicked) -> 1; 11: N2 no click; 12: N1 no click -> skipped.
    assert parts["sports"].values["mrr"] == 1.0 and parts["sports"].counts["mrr"] == 1
    # news: 12 holds N3 (clicked) alone -> 1; 11: N4 no click.
    assert parts["news"].values["mrr"] == 1.0 and parts["news"].no_click == 1
