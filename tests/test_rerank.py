"""The re-rankers on hand-made lists: MMR, topic calibration, the spec parser, and the controls."""

from __future__ import annotations

import numpy as np
import pytest

from newsrec_cli.rerank import RerankSpec, category_distribution, js_divergence, rank_weights, rerank

# Three near-duplicates of one story (a), then one other story (b) scored a little lower.
SCORES = np.array([3.0, 2.9, 2.8, 2.0])
VECTORS = np.array([[1.0, 0.0], [1.0, 0.0], [0.995, 0.0998], [0.0, 1.0]])
VECTORS /= np.linalg.norm(VECTORS, axis=1, keepdims=True)


def ild(order: np.ndarray, k: int) -> float:
    top = VECTORS[order[:k]]
    sims = top @ top.T
    i, j = np.triu_indices(k, 1)
    return float(np.mean(1 - sims[i, j]))


def test_no_reranking_is_the_model_order_with_the_evaluate_tie_rule() -> None:
    assert rerank(SCORES, 2, RerankSpec()).tolist() == [0, 1, 2, 3]
    # equal scores: the candidate listed later first, as evaluate's metrics order them
    assert rerank(np.array([1.0, 1.0, 2.0]), 3, RerankSpec()).tolist() == [2, 1, 0]
    assert rerank(SCORES, 2, RerankSpec("mmr", 0.0), vectors=VECTORS).tolist() == [0, 1, 2, 3]


def test_mmr_by_hand() -> None:
    # rel = (s - 2) / 1 = [1, .9, .8, 0]. Step 1 takes 0. Step 2, λ = .5: 0.5·rel - 0.5·cos to 0:
    # 1: .45 - .5 = -.05; 2: .40 - .4975 = -.0975; 3: 0 - 0 = 0 -> 3. Step 3: 1: -.05, 2: -.0975 -> 1.
    assert rerank(SCORES, 3, RerankSpec("mmr", 0.5), vectors=VECTORS).tolist() == [0, 3, 1, 2]
    # λ = .1: 1: .81 - .1 = .71 beats 3: 0, so the near-duplicate stays second.
    assert rerank(SCORES, 2, RerankSpec("mmr", 0.1), vectors=VECTORS).tolist() == [0, 1, 2, 3]


def test_control_mmr_at_full_weight_raises_intra_list_diversity() -> None:
    plain = rerank(SCORES, 2, RerankSpec())
    diverse = rerank(SCORES, 2, RerankSpec("mmr", 1.0), vectors=VECTORS)
    assert ild(diverse, 2) > ild(plain, 2)
    assert ild(diverse, 2) == pytest.approx(1.0)
    assert ild(plain, 2) == pytest.approx(0.0)


def test_calibration_by_hand() -> None:
    categories = np.array([0, 0, 0, 1])
    # history half category 0, half category 1. Step 1: every candidate's q is one category, JS
    # equal, so 0 (best rel) first. Step 2, q = (w1 e_0 + w2 e_c) / (w1 + w2), w = 1, 1/log2(3):
    history = np.array([0.5, 0.5])
    w = rank_weights(2)
    js_same = js_divergence(history, np.array([1.0, 0.0]))
    js_other = js_divergence(history, np.array([w[0], w[1]]) / w.sum())
    lam = 0.9
    # candidate 1 (cat 0, rel .9) against candidate 3 (cat 1, rel 0)
    assert (1 - lam) * 0.9 - lam * js_same < (1 - lam) * 0.0 - lam * js_other
    order = rerank(SCORES, 2, RerankSpec("calibration", lam), categories=categories, history=history)
    assert order.tolist() == [0, 3, 1, 2]
    # at λ = .5 relevance still wins
    assert (1 - 0.5) * 0.9 - 0.5 * js_same > -0.5 * js_other
    order = rerank(SCORES, 2, RerankSpec("calibration", 0.5), categories=categories, history=history)
    assert order.tolist() == [0, 1, 2, 3]


def test_calibration_keeps_the_model_order_without_history() -> None:
    order = rerank(
        SCORES, 2, RerankSpec("calibration", 1.0), categories=np.array([0, 0, 0, 1]), history=np.zeros(2)
    )
    assert order.tolist() == [0, 1, 2, 3]


def test_a_batch_with_padding_equals_each_list_alone() -> None:
    rng = np.random.default_rng(0)
    B, N, D = 5, 7, 4
    scores = rng.normal(size=(B, N))
    vectors = rng.normal(size=(B, N, D))
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    lengths = np.array([7, 3, 5, 1, 6])
    valid = np.arange(N)[None] < lengths[:, None]
    batch = rerank(scores, 4, RerankSpec("mmr", 0.7), valid=valid, vectors=vectors)
    for b, n in enumerate(lengths):
        alone = rerank(scores[b, :n], 4, RerankSpec("mmr", 0.7), vectors=vectors[b, :n])
        assert batch[b, :n].tolist() == alone.tolist()


def test_js_divergence_and_distributions_by_hand() -> None:
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert js_divergence(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == pytest.approx(0.0)
    # p = (1, 0), q = (.5, .5): m = (.75, .25); ½ log2(1/.75) + ½ (.5 log2(.5/.75) + .5 log2(.5/.25))
    expected = 0.5 * np.log2(4 / 3) + 0.5 * (0.5 * np.log2(2 / 3) + 0.5 * np.log2(2))
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(expected)
    dist = category_distribution(np.array([[0, 1, 1, -1]]), 3, rank_weights(4))
    w = 1 / np.log2([2, 3, 4])
    assert dist[0].tolist() == pytest.approx([w[0] / w.sum(), (w[1] + w[2]) / w.sum(), 0.0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mmr:0.3", RerankSpec("mmr", 0.3)),
        ("calibration:1", RerankSpec("calibration", 1.0)),
        ("none", RerankSpec()),
    ],
)
def test_spec_parses(text: str, expected: RerankSpec) -> None:
    assert RerankSpec.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("pop:0.3", "unknown re-ranker"),
        ("mmr:1.5", r"outside \[0, 1\]"),
        ("mmr:-0.1", "outside"),
        ("mmr:nan", "finite"),
    ],
)
def test_spec_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        RerankSpec.parse(text)
