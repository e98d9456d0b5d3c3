"""The vectorised metrics against an independent loop over impressions with the official formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.evaluate.metrics import (
    MetricAccumulator,
    compute_metrics,
    impression_chunks,
    parse_metrics,
    ranks_from_scores,
)

# --- the reference: MIND's evaluate.py, one impression at a time -------------------------------
# The only change to the official code: argsort is stable (kind="stable"), the documented tie order.
# KIND = None gives numpy's default sort, i.e. the official code unchanged.
KIND: dict[str, str | None] = {"kind": "stable"}


def _dcg_score(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    order = np.argsort(y_score, kind=KIND["kind"])[::-1]
    y_true = np.take(y_true, order[:k])
    gains = 2**y_true - 1
    discounts = np.log2(np.arange(len(y_true)) + 2)
    return float(np.sum(gains / discounts))


def _ndcg_score(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    return _dcg_score(y_true, y_score, k) / _dcg_score(y_true, y_true, k)


def _mrr_score(y_true: np.ndarray, y_score: np.ndarray) -> float:
    order = np.argsort(y_score, kind=KIND["kind"])[::-1]
    y_true = np.take(y_true, order)
    rr_score = y_true / (np.arange(len(y_true)) + 1)
    return float(np.sum(rr_score) / np.sum(y_true))


def _hit_score(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    order = np.argsort(y_score, kind="stable")[::-1]
    return float(np.take(y_true, order[:k]).sum() > 0)


def _reference(
    scores: np.ndarray,
    labels: np.ndarray,
    offsets: np.ndarray,
    metrics: tuple[str, ...] = ("auc", "mrr", "ndcg@5", "ndcg@10", "hit@3"),
) -> dict[str, tuple[float, int]]:
    """The official formulas' means and counts of `metrics` (sklearn's AUC is the slow one: only
    when asked)."""
    score = {
        "mrr": _mrr_score,
        "ndcg@5": lambda y, s: _ndcg_score(y, s, 5),
        "ndcg@10": lambda y, s: _ndcg_score(y, s, 10),
        "hit@3": lambda y, s: _hit_score(y, s, 3),
    }
    out: dict[str, list[float]] = {name: [] for name in metrics}
    for i in range(len(offsets) - 1):
        y = labels[offsets[i] : offsets[i + 1]].astype(np.float64)
        s = scores[offsets[i] : offsets[i + 1]]
        if y.sum() == 0:
            continue
        for name in metrics:
            if name != "auc":
                out[name].append(score[name](y, s))
            elif y.sum() < len(y):
                out[name].append(roc_auc_score(y, s))
    return {k: (float(np.mean(v)), len(v)) for k, v in out.items()}


def _random_impressions(seed: int, n: int, max_len: int, levels: int | None):
    """Random impressions; `levels` small gives many tied scores, None gives continuous scores."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=n)
    lengths[:5] = 1  # impressions of one candidate, always present
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    total = int(offsets[-1])
    if levels is None:
        scores = rng.standard_normal(total)
    else:
        scores = rng.integers(0, levels, size=total).astype(np.float64)
    labels = (rng.random(total) < 0.25).astype(np.int64)
    labels[offsets[5] : offsets[6]] = 1  # an impression where everything was clicked
    return scores, labels, offsets


@pytest.mark.parametrize(
    ("seed", "levels"),
    [(0, None), (1, 2), (2, 4), (3, 50)],
    ids=["continuous", "two-levels", "four-levels", "fifty-levels"],
)
def test_equal_to_official_formulas(seed: int, levels: int | None) -> None:
    scores, labels, offsets = _random_impressions(seed, n=400, max_len=30, levels=levels)
    metrics = ["auc", "mrr", "ndcg@5", "ndcg@10", "hit@3"]
    result = compute_metrics(scores, labels, offsets, metrics)
    expected = _reference(scores, labels, offsets)
    for name in metrics:
        value, count = expected[name]
        assert result.values[name] == pytest.approx(value, abs=1e-9), name
        assert result.counts[name] == count, name
    n_single_class = sum(
        1
        for i in range(len(offsets) - 1)
        if labels[offsets[i] : offsets[i + 1]].sum() in (0, offsets[i + 1] - offsets[i])
    )
    assert result.skipped_auc == n_single_class
    assert result.counts["auc"] + result.skipped_auc == result.impressions == 400
    assert result.no_click == 400 - result.counts["mrr"]


def test_without_ties_equal_to_the_unchanged_official_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KIND, "kind", None)
    scores, labels, offsets = _random_impressions(9, n=300, max_len=60, levels=None)
    result = compute_metrics(scores, labels, offsets, ["auc", "mrr", "ndcg@5", "ndcg@10"])
    expected = _reference(scores, labels, offsets)
    for name in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        assert result.values[name] == pytest.approx(expected[name][0], abs=1e-9), name


def test_ties_follow_the_stable_official_order() -> None:
    # All scores equal: the stable argsort()[::-1] puts the LAST candidate first.
    labels = np.array([1, 0, 0, 0])
    result = compute_metrics(np.zeros(4), labels, np.array([0, 4]), ["auc", "mrr", "hit@1"])
    assert result.values["mrr"] == pytest.approx(1 / 4)
    assert result.values["hit@1"] == 0.0
    assert result.values["auc"] == pytest.approx(0.5)  # sklearn: ties count one half
    result = compute_metrics(np.zeros(4), labels[::-1].copy(), np.array([0, 4]), ["mrr"])
    assert result.values["mrr"] == pytest.approx(1.0)


def test_perfect_and_reversed_rankings() -> None:
    labels = np.array([1, 1, 0, 0, 0, 0, 1, 0])
    offsets = np.array([0, 5, 8])
    perfect = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.1, 0.9, 0.5])
    result = compute_metrics(perfect, labels, offsets, ["auc", "mrr", "ndcg", "hit@1"])
    assert result.values == pytest.approx(
        # The official MRR averages 1/rank over the clicks: two clicks at ranks 1 and 2 give 0.75.
        {"auc": 1.0, "mrr": (0.75 + 1.0) / 2, "ndcg@5": 1.0, "ndcg@10": 1.0, "hit@1": 1.0}
    )
    reversed_ = compute_metrics(-perfect, labels, offsets, ["auc", "mrr", "ndcg@5"])
    assert reversed_.values["auc"] == 0.0
    # Impression 1: clicks at ranks 4 and 5 -> MRR (1/4 + 1/5) / 2; impression 2: click at rank 3.
    assert reversed_.values["mrr"] == pytest.approx(((1 / 4 + 1 / 5) / 2 + 1 / 3) / 2)
    ndcg1 = (1 / math.log2(5) + 1 / math.log2(6)) / (1 + 1 / math.log2(3))
    ndcg2 = 1 / math.log2(4)
    assert reversed_.values["ndcg@5"] == pytest.approx((ndcg1 + ndcg2) / 2)


def test_hand_computed_ndcg_cutoff() -> None:
    # One click at rank 3: nDCG@2 = 0, nDCG@3 = 1/log2(4) = 0.5, MRR = 1/3, hit@2 = 0, hit@3 = 1.
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    labels = np.array([0, 0, 1, 0])
    result = compute_metrics(scores, labels, np.array([0, 4]), ["ndcg@2", "ndcg@3", "mrr", "hit@2", "hit@3"])
    assert result.values == pytest.approx(
        {"ndcg@2": 0.0, "ndcg@3": 0.5, "mrr": 1 / 3, "hit@2": 0.0, "hit@3": 1.0}
    )


def test_no_click_and_single_candidate_impressions_are_skipped_and_counted() -> None:
    scores = np.array([0.3, 0.1, 0.2, 0.5, 0.4])
    labels = np.array([0, 0, 1, 1, 0])
    offsets = np.array([0, 2, 3, 3, 5])  # no click | one candidate, clicked | empty | normal
    result = compute_metrics(scores, labels, offsets, ["auc", "mrr"])
    assert result.impressions == 4
    assert result.no_click == 2
    assert result.skipped_auc == 3
    assert result.counts == {"auc": 1, "mrr": 2}
    assert result.values == pytest.approx({"auc": 1.0, "mrr": 1.0})
    assert np.isnan(result.per_impression["mrr"][0])


def test_all_single_class_gives_nan_auc_not_an_error() -> None:
    result = compute_metrics(np.array([0.1, 0.2]), np.array([0, 0]), np.array([0, 2]), ["auc", "mrr"])
    assert math.isnan(result.values["auc"]) and math.isnan(result.values["mrr"])
    assert result.to_dict()["values"] == {"auc": None, "mrr": None}


def test_logloss_and_ece_from_logits_and_probabilities() -> None:
    rng = np.random.default_rng(5)
    logits = rng.standard_normal(300) * 3
    labels = (rng.random(300) < 0.3).astype(int)
    offsets = np.arange(0, 301, 30)
    probs = 1 / (1 + np.exp(-logits))
    from_logits = compute_metrics(logits, labels, offsets, ["logloss", "ece@10"])
    from_probs = compute_metrics(probs, labels, offsets, ["logloss", "ece@10"], scores_are="probabilities")
    assert from_logits.values["logloss"] == pytest.approx(log_loss(labels, probs), abs=1e-9)
    assert from_probs.values["logloss"] == pytest.approx(log_loss(labels, probs), abs=1e-9)
    bins = np.minimum((probs * 10).astype(int), 9)
    ece = sum(
        (bins == b).mean() * abs(labels[bins == b].mean() - probs[bins == b].mean())
        for b in range(10)
        if (bins == b).any()
    )
    assert from_logits.values["ece@10"] == pytest.approx(ece, abs=1e-9)
    assert from_probs.values["ece@10"] == pytest.approx(ece, abs=1e-9)
    # Huge logits must not overflow.
    big = compute_metrics(np.array([800.0, -800.0]), np.array([1, 0]), np.array([0, 2]), ["logloss"])
    assert big.values["logloss"] == pytest.approx(0.0, abs=1e-12)


def test_ranks_from_scores_use_the_same_tie_order() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1, 2.0, 2.0])
    ranks = ranks_from_scores(scores, np.array([0, 4, 6]))
    assert ranks.tolist() == [3, 1, 2, 4, 2, 1]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("auc,ndcg", ["auc", "ndcg@5", "ndcg@10"]),
        (" AUC , nDCG@20,hit@1,ndcg@5,ndcg ", ["auc", "ndcg@20", "hit@1", "ndcg@5", "ndcg@10"]),
        ("mrr,ece,logloss,hit", ["mrr", "ece@15", "logloss", "hit@5", "hit@10"]),
    ],
)
def test_parse_metrics(spec: str, expected: list[str]) -> None:
    assert parse_metrics(spec) == expected


@pytest.mark.parametrize("spec", ["auc,precision", "ndcg@0", "ndcg@", "", "hit@x"])
def test_parse_metrics_rejects_unknown(spec: str) -> None:
    with pytest.raises(SettingsError, match="evaluate.metrics"):
        parse_metrics(spec)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(InputError, match="NaN"):
        compute_metrics(np.array([np.nan, 1.0]), np.array([0, 1]), np.array([0, 2]))
    with pytest.raises(InputError, match="0 or 1"):
        compute_metrics(np.array([0.0, 1.0]), np.array([0, 2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="offsets"):
        compute_metrics(np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 3]))


ALL_METRICS = ["auc", "mrr", "ndcg@5", "ndcg@10", "hit@1", "hit@5", "logloss", "ece@15"]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000], ids=lambda c: f"chunk-{c}")
@pytest.mark.parametrize("levels", [None, 3], ids=["continuous", "ties"])
def test_chunked_equals_one_shot(chunk: int, levels: int | None) -> None:
    """Streaming over chunks of impressions gives the one-shot values (to 1e-12) and counts."""
    scores, labels, offsets = _random_impressions(11, n=300, max_len=40, levels=levels)
    labels[offsets[20] : offsets[21]] = 0  # an impression without a click
    one_shot = compute_metrics(scores, labels, offsets, ALL_METRICS, chunk_candidates=len(scores))
    chunked = compute_metrics(scores, labels, offsets, ALL_METRICS, chunk_candidates=chunk)
    assert len(impression_chunks(offsets, chunk)) > (1 if chunk < len(scores) else 0)
    for name in ALL_METRICS:
        assert chunked.values[name] == pytest.approx(one_shot.values[name], abs=1e-12, rel=1e-12), name
        assert chunked.counts[name] == one_shot.counts[name]
    for name, per in one_shot.per_impression.items():
        np.testing.assert_array_equal(chunked.per_impression[name], per)
    assert (chunked.skipped_auc, chunked.no_click, chunked.impressions) == (
        one_shot.skipped_auc,
        one_shot.no_click,
        300,
    )
    # and the same values as the official formulas, one impression at a time
    expected = _reference(scores, labels, offsets, ("mrr",))
    assert chunked.values["mrr"] == pytest.approx(expected["mrr"][0], abs=1e-9)


def test_accumulator_over_separate_chunks() -> None:
    """The accumulator fed by hand (as a loop over a memory-mapped split does) equals one call."""
    scores, labels, offsets = _random_impressions(5, n=120, max_len=25, levels=None)
    whole = compute_metrics(scores, labels, offsets, ALL_METRICS)
    acc = MetricAccumulator(ALL_METRICS)
    for lo, hi in [(0, 50), (50, 51), (51, 120)]:
        a, b = offsets[lo], offsets[hi]
        acc.add(scores[a:b], labels[a:b], offsets[lo : hi + 1] - a)
    result = acc.result()
    for name in ALL_METRICS:
        assert result.values[name] == pytest.approx(whole.values[name], abs=1e-12)
    with pytest.raises(InputError, match="NaN or infinite"):
        acc.add(np.array([np.nan, 1.0]), np.array([0, 1]), np.array([0, 2]))
