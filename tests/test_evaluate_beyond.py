"""The beyond-accuracy metrics on hand-computed lists (newsrec_cli/evaluate/beyond.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from newsrec_cli.evaluate import beyond
from newsrec_cli.rerank import category_distribution

# Four news: vectors (unit), categories, training users, clicks in the reported split.
VECTORS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
CATEGORIES = np.array([0, 1, 0, 2])
USERS = np.array([3, 0, 1, 7])  # distinct training users per news
U = 7  # distinct training users
CLICKS = np.array([10.0, 0.0, 2.0, 5.0])
# Three lists (k = 3) and an empty one.
TOP = np.array([[0, 1, 3], [0, 2, -1], [3, -1, -1], [-1, -1, -1]])


def test_top_k_orders_by_score_with_the_metrics_tie_rule() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.5, 2.0])
    offsets = np.array([0, 4, 5, 5])
    items = np.array([10, 11, 12, 13, 14])
    top = beyond.top_k(scores, offsets, 3, items)
    # 0.9 first; 12 and 13 tie at 0.5: the one listed later (13) first, as evaluate's metrics rank.
    assert top.tolist() == [[11, 13, 12], [14, -1, -1], [-1, -1, -1]]
    assert beyond.top_k(scores, offsets, 2).tolist() == [[1, 3], [0, -1], [-1, -1]]
    with pytest.raises(ValueError, match="k must be at least 1"):
        beyond.top_k(scores, offsets, 0)


def test_ild_by_hand() -> None:
    # [0, 1, 3]: 1 - cos = 1 (0,1), 0.4 (0,3), 0.2 (1,3): mean 1.6 / 3. [0, 2]: identical, 0.
    # [3]: one item, no pair: not counted (NaN). Empty: NaN.
    values = beyond.ild(TOP, VECTORS)
    assert values[:2] == pytest.approx([1.6 / 3, 0.0])
    assert np.isnan(values[2:]).all()
    # the prefixes: ILD@2 of [0, 1, 3] is the pair (0, 1) alone
    prefixes = beyond.ild_prefixes(TOP, VECTORS, (2, 3, 10))
    assert prefixes[2][0] == pytest.approx(1.0)
    assert prefixes[3][0] == pytest.approx(1.6 / 3)
    assert np.array_equal(prefixes[10], prefixes[3], equal_nan=True)  # k capped at the list size


def test_ild_in_chunks_equals_pairwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(beyond, "LIST_CHUNK", 3)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    top = rng.integers(0, 30, size=(10, 5))
    top[3, 2:] = -1
    expected = []
    for row in top:
        items = row[row >= 0]
        pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]
        expected.append(np.mean([1 - vectors[a] @ vectors[b] for a, b in pairs]))
    assert beyond.ild(top, vectors) == pytest.approx(expected, abs=1e-12)


def test_category_count_by_hand() -> None:
    # [0, 1, 3] -> categories 0, 1, 2; [0, 2] -> 0, 0; [3] -> 2; empty -> 0
    assert beyond.category_count(TOP, CATEGORIES).tolist() == [3.0, 1.0, 1.0, 0.0]


def js2(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon divergence in base 2, written out."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0)  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def test_calibration_by_hand() -> None:
    history = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # [0, 1, 3]: categories 0, 1, 2 at ranks 1, 2, 3, weighted 1, 1/log2(3), 1/log2(4) = 0.5
    w = [1.0, 1 / math.log2(3), 0.5]
    q = [x / sum(w) for x in w]
    values = beyond.calibration(TOP, CATEGORIES, history)
    assert values[0] == pytest.approx(js2([0.5, 0.5, 0.0], q))
    assert values[1] == pytest.approx(0.0)  # all category 0, as the history
    assert values[2] == pytest.approx(1.0)  # category 2 only, history all 0: disjoint
    assert np.isnan(values[3])  # empty history (and empty list): skipped
    # an empty history with a full list is skipped too
    assert np.isnan(beyond.calibration(TOP[:1], CATEGORIES, np.zeros((1, 3))))[0]


def test_novelty_by_hand() -> None:
    # -log2((c + 1) / (U + 1)), U = 7: news 0 -> -log2(4/8) = 1, 1 -> 3, 2 -> 2, 3 -> 0
    values = beyond.novelty(TOP, USERS, U)
    assert values[:3] == pytest.approx([(1 + 3 + 0) / 3, (1 + 2) / 2, 0.0])
    assert np.isnan(values[3])


def test_popularity_by_hand() -> None:
    values = beyond.popularity(TOP, CLICKS)
    assert values[:3] == pytest.approx([(10 + 0 + 5) / 3, (10 + 2) / 2, 5.0])
    assert np.isnan(values[3])


def test_coverage_and_gini_by_hand() -> None:
    catalogue = np.array([0, 1, 2, 3, 4])
    counts = beyond.exposure(TOP, 5)
    assert counts.tolist() == [2, 1, 1, 2, 0]
    assert beyond.coverage(counts, catalogue) == pytest.approx(4 / 5)
    # sorted x = 0, 1, 1, 2, 2; n = 5; sum (2i - n - 1) x = -2 + 0 + 4 + 8 = 10; G = 10 / (5 * 6)
    assert beyond.gini(counts, catalogue) == pytest.approx(1 / 3)
    # every item equally exposed: 0; one item takes all: (n - 1) / n
    assert beyond.gini(np.array([3, 3, 3]), np.arange(3)) == pytest.approx(0.0)
    assert beyond.gini(np.array([0, 0, 9]), np.arange(3)) == pytest.approx(2 / 3)
    assert math.isnan(beyond.gini(np.zeros(3), np.arange(3)))
    assert math.isnan(beyond.coverage(counts, np.zeros(0, np.int64)))


def test_history_distribution_equals_the_rerankers_distribution() -> None:
    codes = np.array([0, 0, 1, 2, 2, 2, 1])
    offsets = np.array([0, 3, 3, 7])
    dist = beyond.history_distribution(codes, offsets, 3)
    assert dist == pytest.approx(np.array([[2 / 3, 1 / 3, 0], [0, 0, 0], [0, 1 / 4, 3 / 4]]))
    padded = np.array([[0, 0, 1, -1], [-1, -1, -1, -1], [2, 2, 2, 1]])
    assert dist == pytest.approx(category_distribution(padded, 3))


def test_distinct_user_counts_by_hand() -> None:
    users = np.array([1, 3, 1, 2, 3, 1, 4])
    items = np.array([0, 2, 0, 0, 2, 1, 0])
    # item 0: users 1, 2, 4 (1 twice); item 1: user 1; item 2: user 3 (twice)
    assert beyond.distinct_user_counts(users, items, 4).tolist() == [3, 1, 1, 0]


@pytest.mark.parametrize("chunk", [1, 3, 1 << 23])
def test_training_users_by_hand_in_groups_of_whole_users(tmp_path, chunk: int) -> None:  # type: ignore[no-untyped-def]
    from evaluate_helpers import make_mind

    from newsrec_cli.evaluate.beyond_rows import training_users
    from newsrec_cli.mind.dataset import load_dataset

    dataset = load_dataset(make_mind(tmp_path / "mind"))
    counts, users = training_users(dataset.splits["train"], 7, chunk)
    # N1: U1's history; N2: U1 clicked, U2 (history and click); N3: U1's history, U6 clicked;
    # N4: U3; N5: U6's history; N6: nobody. Unclicked candidates do not count.
    assert counts.tolist() == [0, 1, 2, 2, 1, 1, 0] and users == 4
