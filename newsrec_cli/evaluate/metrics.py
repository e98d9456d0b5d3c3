"""MIND's official ranking metrics, vectorised over chunks of impressions and combined.

The definitions are those of MIND's `evaluate.py`, computed per impression and averaged over
impressions:

- AUC: `sklearn.metrics.roc_auc_score(labels, scores)`. Tied scores count one half (sklearn's
  trapezoid), which is the Mann-Whitney U with mid-ranks computed here. Impressions with a single
  label class (no click, or all clicked) have no AUC: they are skipped and counted.
- MRR: `sum(clicked / rank) / n_clicked`, rank = 1-based position after sorting scores descending.
- nDCG@k: `dcg(labels, scores, k) / dcg(labels, labels, k)`, gains `2**label - 1`, discounts
  `log2(rank + 1)`, over the top k.
- hit@k: 1 when a clicked news is in the top k.

Ties on MRR, nDCG and hit@k. The official code orders candidates with `np.argsort(y_score)[::-1]`,
numpy's default (unstable) sort, whose order among equal scores depends on the numpy version and
the CPU (the AVX-512 sort differs from the insertion sort used on short arrays elsewhere). No
implementation can reproduce that everywhere, so this one uses the stable version of the same
expression, `np.argsort(y_score, kind="stable")[::-1]`: among equal scores, the candidate listed
LATER in the impression ranks first. Without ties the results equal the official code exactly.

Impressions without a click make MRR, nDCG and hit@k 0/0 (NaN in the official code; MIND's own
dev and test sets always have a click): they are skipped for those metrics and counted in
`MetricResult.no_click`. Empty impressions are skipped like impressions without a click.

`logloss` and `ece` (expected calibration error, 15 equal-width bins; `ece@B` for B bins) use
probabilities, `sigmoid(score)` for logits, pooled over all candidates rather than averaged per
impression.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.plural import agree, counted

DEFAULT_METRICS: tuple[str, ...] = ("auc", "mrr", "ndcg@5", "ndcg@10")
ECE_BINS = 15  # the usual choice in the calibration literature (Guo et al., 2017)

_ALIASES: dict[str, tuple[str, ...]] = {
    "ndcg": ("ndcg@5", "ndcg@10"),
    "hit": ("hit@5", "hit@10"),
    "ece": (f"ece@{ECE_BINS}",),
}
_PATTERN = re.compile(r"^(auc|mrr|logloss|(ndcg|hit|ece)@([1-9][0-9]*))$")
PROBABILITY_METRICS = ("logloss", "ece")


@dataclass
class MetricResult:
    """Metric means over impressions, and how many impressions each mean is over.

    `values[name]` is NaN when no impression qualifies (e.g. AUC when every impression has one
    label class). `per_impression[name]` holds each impression's value (NaN where skipped) for
    the per-impression metrics, so breakdowns by impression group need no recomputation.
    """

    values: dict[str, float]
    counts: dict[str, int]
    skipped_auc: int
    impressions: int
    no_click: int
    per_impression: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    empty_history: int | None = None  # impressions calibration@k skipped (None: not computed)

    def absorb(self, more: MetricResult, *, with_history: bool) -> None:
        """Take the metrics of `more` (the beyond-accuracy ones of the same lists) into this result;
        its count of impressions without history too when those metrics read the history."""
        self.values.update(more.values)
        self.counts.update(more.counts)
        self.per_impression.update(more.per_impression)
        if with_history:
            self.empty_history = more.empty_history

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: metric values, counts, impressions, and the skipped counts."""
        out: dict[str, Any] = {
            "values": {k: _json_float(v) for k, v in self.values.items()},
            "counts": dict(self.counts),
            "impressions": self.impressions,
            "skipped_auc": self.skipped_auc,
            "no_click": self.no_click,
        }
        if self.empty_history is not None:
            out["empty_history"] = self.empty_history
        return out


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def parse_metrics(spec: str | Sequence[str]) -> list[str]:
    """Normalise metric names: `"auc,ndcg"` -> `["auc", "ndcg@5", "ndcg@10"]`, order kept, no repeats.

    Raises SettingsError naming the unknown name and what is allowed.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        expanded = _ALIASES.get(name, (name,))
        for one in expanded:
            if not _PATTERN.match(one):
                raise SettingsError(
                    f"evaluate.metrics: unknown metric {raw.strip()!r}; allowed: auc, mrr, ndcg "
                    "(= ndcg@5,ndcg@10), ndcg@K, hit (= hit@5,hit@10), hit@K, logloss, ece, ece@BINS"
                )
            if one not in names:
                names.append(one)
    if not names:
        raise SettingsError("evaluate.metrics: no metric given")
    return names


def needs_probabilities(metrics: Sequence[str]) -> bool:
    """True when a metric reads probabilities (logloss, ece), not only the order of scores."""
    return any(m.split("@")[0] in PROBABILITY_METRICS for m in metrics)


def check_offsets(offsets: np.ndarray, n_candidates: int) -> np.ndarray:
    """Validate impression offsets (int64 [n_impressions + 1], 0 .. n_candidates, non-decreasing)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) < 1:
        raise ValueError("offsets must be a 1-d array of n_impressions + 1 positions")
    if offsets[0] != 0 or offsets[-1] != n_candidates:
        raise ValueError(
            f"offsets must start at 0 and end at {n_candidates}, got {offsets[0]}..{offsets[-1]}"
        )
    if np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing")
    return offsets


def rank_order(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Flat indices sorted by (impression, score descending, listed position descending).

    Equal to `np.argsort(s, kind="stable")[::-1]` inside every impression (see the module doc).
    """
    n = len(offsets) - 1
    segment = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    position = np.arange(len(scores), dtype=np.int64)
    # lexsort: last key is primary. -position puts later-listed candidates first among ties.
    return np.lexsort((-position, -scores, segment))


def ranks_from_scores(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """1-based rank of every candidate within its impression, in listed order (rank 1 = best)."""
    scores = np.asarray(scores, dtype=np.float64)
    offsets = check_offsets(offsets, len(scores))
    order = rank_order(scores, offsets)
    segment = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    ranks = np.empty(len(scores), dtype=np.int64)
    # The sorted array keeps each impression's block where it was, so the position inside the
    # block is the flat position minus the block start.
    ranks[order] = np.arange(len(scores), dtype=np.int64) - offsets[segment] + 1
    return ranks


CHUNK_CANDIDATES = 1 << 20  # candidates per chunk: ~10 temporaries of this size (~100 MB) at once


def compute_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    offsets: np.ndarray,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    scores_are: Literal["logits", "probabilities"] = "logits",
    chunk_candidates: int = CHUNK_CANDIDATES,
) -> MetricResult:
    """Official MIND metrics over all impressions (see the module docstring for ties).

    Computed per chunk of whole impressions (about `chunk_candidates` candidates each) and
    combined, so memory beyond the inputs is a few chunk-sized arrays, not ten candidate-sized
    ones: MIND-large's 2.4M test impressions (~90M candidates) fit in well under a GB. The
    per-impression values do not depend on the chunking; only the pooled sums of logloss and
    ECE may differ in the last bits.

    Args:
        scores: float [n_candidates], flat over impressions; higher ranks first.
        labels: 0/1 [n_candidates], aligned with scores.
        offsets: int64 [n_impressions + 1]; impression i is `offsets[i]:offsets[i+1]`.
        metrics: names as accepted by `parse_metrics` ("ndcg" expands to ndcg@5 and ndcg@10).
        scores_are: for logloss/ece only: logits (sigmoid applied) or probabilities already.
        chunk_candidates: candidates per chunk (impressions are never cut).
    """
    names = parse_metrics(metrics)
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be 1-d and aligned")
    offsets = check_offsets(offsets, len(scores))
    check_inputs(scores, labels)
    accumulator = MetricAccumulator(names, scores_are=scores_are)
    for lo, hi in impression_chunks(offsets, chunk_candidates):
        a, b = int(offsets[lo]), int(offsets[hi])
        accumulator.add(scores[a:b], labels[a:b], offsets[lo : hi + 1] - a, checked=True)
    return accumulator.result()


def impression_chunks(offsets: np.ndarray, chunk_candidates: int) -> list[tuple[int, int]]:
    """(first, end) impression ranges of about `chunk_candidates` candidates each, in order.

    An impression longer than a chunk is a chunk of its own; no impression is ever cut.
    """
    n = len(offsets) - 1
    bounds = [0]
    while bounds[-1] < n:
        lo = bounds[-1]
        hi = int(np.searchsorted(offsets, offsets[lo] + chunk_candidates, side="right")) - 1
        bounds.append(min(n, max(hi, lo + 1)))
    return list(zip(bounds[:-1], bounds[1:], strict=True)) if n else [(0, 0)]


def check_inputs(scores: np.ndarray, labels: np.ndarray) -> None:
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad:
        raise InputError(
            f"{bad:,} of {counted(len(scores), 'score')} {agree(bad, 'is', 'are')} NaN or infinite"
        )
    if labels.size and not ((labels == 0) | (labels == 1)).all():
        raise InputError("labels must be 0 or 1 (an unlabeled test set has no metrics)")


class MetricAccumulator:
    """The metrics of a stream of impression chunks: `add` each chunk, then `result()`.

    Per-impression metrics keep each impression's value (8 bytes per impression and metric) and
    average them at the end, exactly as over all impressions at once; logloss and ECE keep sums.
    Chunks may come from anywhere (a loop over a memory-mapped split, the ranks of a DDP job)
    as long as each holds whole impressions, in the order their values should be listed.
    """

    def __init__(
        self,
        metrics: Sequence[str] = DEFAULT_METRICS,
        *,
        scores_are: Literal["logits", "probabilities"] = "logits",
    ) -> None:
        self.names = parse_metrics(metrics)
        self.scores_are = scores_are
        self._per: dict[str, list[np.ndarray]] = {}
        self._used: dict[str, list[np.ndarray]] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._skipped_auc = 0
        self._impressions = 0
        self._no_click = 0
        self._candidates = 0
        self._non_empty = 0

    def add(
        self,
        scores: np.ndarray,
        labels: np.ndarray,
        offsets: np.ndarray,
        *,
        checked: bool = False,
        order: np.ndarray | None = None,
    ) -> None:
        """One chunk: scores and labels of its candidates, offsets from 0 over its impressions.

        `order`: `rank_order(scores, offsets)` when the caller has it already (evaluate sorts each
        chunk once for these metrics and the beyond-accuracy ones).
        """
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels)
        if not checked:
            if scores.shape != labels.shape or scores.ndim != 1:
                raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be 1-d and aligned")
            offsets = check_offsets(offsets, len(scores))
            check_inputs(scores, labels)
        y = labels.astype(np.float64)
        n = len(offsets) - 1
        lengths = np.diff(offsets)
        segment = np.repeat(np.arange(n, dtype=np.int64), lengths)
        clicks = np.bincount(segment, weights=y, minlength=n)
        has_click = clicks > 0
        self._impressions += n
        self._no_click += int((~has_click).sum())
        self._candidates += len(y)
        self._non_empty += int((lengths > 0).sum())

        order = rank_order(scores, offsets) if order is None else order
        y_sorted = y[order]
        rank = np.arange(len(scores), dtype=np.int64) - offsets[segment] + 1  # 1-based, within impression
        safe_clicks = np.where(has_click, clicks, 1.0)
        for name in self.names:
            kind, _, k_text = name.partition("@")
            if name == "auc":
                auc, usable = _auc(scores[order], y_sorted, segment, offsets, clicks, lengths)
                self._skipped_auc += int(n - usable.sum())
                self._keep(name, auc, usable)
            elif name == "mrr":
                rr = np.bincount(segment, weights=y_sorted / rank, minlength=n)
                self._keep(name, rr / safe_clicks, has_click)
            elif kind == "ndcg":
                k = int(k_text)
                top = rank <= k
                gains = (2.0**y_sorted - 1.0) / np.log2(rank + 1.0)
                dcg = np.bincount(segment, weights=np.where(top, gains, 0.0), minlength=n)
                # Ideal DCG for 0/1 labels: the clicks fill the first min(clicks, k) ranks.
                discounts = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))))
                ideal = discounts[np.minimum(clicks, k).astype(np.int64)]
                self._keep(name, dcg / np.where(has_click, ideal, 1.0), has_click)
            elif kind == "hit":
                k = int(k_text)
                found = np.bincount(segment, weights=np.where(rank <= k, y_sorted, 0.0), minlength=n)
                self._keep(name, (found > 0).astype(np.float64), has_click)
            elif name == "logloss":
                self._add_sum(name, np.array([_logloss_sum(scores, y, self.scores_are)]))
            elif kind == "ece":
                probs = _sigmoid(scores) if self.scores_are == "logits" else scores
                self._add_sum(name, _ece_sums(probs, y, int(k_text)))

    def _keep(self, name: str, per: np.ndarray, used: np.ndarray) -> None:
        self._per.setdefault(name, []).append(np.where(used, per, np.nan))
        self._used.setdefault(name, []).append(used)

    def _add_sum(self, name: str, sums: np.ndarray) -> None:
        self._sums[name] = self._sums[name] + sums if name in self._sums else sums

    def result(self) -> MetricResult:
        values: dict[str, float] = {}
        counts: dict[str, int] = {}
        per_impression: dict[str, np.ndarray] = {}
        for name in self.names:
            kind = name.partition("@")[0]
            if kind in PROBABILITY_METRICS:
                # Pooled over candidates, so every non-empty impression takes part.
                counts[name] = self._non_empty
                if not self._candidates:
                    values[name] = float("nan")
                elif name == "logloss":
                    values[name] = float(self._sums[name][0] / self._candidates)
                else:
                    prob_sum, click_sum = self._sums[name]
                    values[name] = float(np.abs(click_sum - prob_sum).sum() / self._candidates)
                continue
            per = _joined(self._per.get(name, []), np.float64)
            used = _joined(self._used.get(name, []), bool)
            per_impression[name] = per
            counts[name] = int(used.sum())
            values[name] = float(per[used].mean()) if used.any() else float("nan")
        return MetricResult(
            values=values,
            counts=counts,
            skipped_auc=self._skipped_auc,
            impressions=self._impressions,
            no_click=self._no_click,
            per_impression=per_impression,
        )


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _auc(
    sorted_scores: np.ndarray,
    y_sorted: np.ndarray,
    segment: np.ndarray,
    offsets: np.ndarray,
    clicks: np.ndarray,
    lengths: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-impression AUC as Mann-Whitney U with mid-ranks; also the mask of impressions with both classes.

    Arrays arrive sorted by (impression, score descending). A run of equal scores inside one
    impression shares the mean of its positions, which is sklearn's half credit for ties.
    """
    n = len(lengths)
    m = len(sorted_scores)
    position = np.arange(m, dtype=np.float64)
    # A new tie group starts where the impression or the score changes.
    starts = np.ones(m, dtype=bool)
    if m > 1:
        starts[1:] = (segment[1:] != segment[:-1]) | (sorted_scores[1:] != sorted_scores[:-1])
    group = np.cumsum(starts) - 1
    group_start = position[starts]
    group_end = np.append(group_start[1:], m) - 1
    mid = (group_start + group_end) / 2.0  # mean flat position of the tie group
    desc_rank = mid[group] - offsets[segment] + 1.0  # 1-based descending mid-rank
    asc_rank = lengths[segment] + 1.0 - desc_rank  # 1-based ascending mid-rank
    pos = clicks
    neg = lengths - clicks
    usable = (pos > 0) & (neg > 0)
    rank_sum = np.bincount(segment, weights=asc_rank * y_sorted, minlength=n)
    denom = np.where(usable, pos * neg, 1.0)
    return (rank_sum - pos * (pos + 1) / 2.0) / denom, usable


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so large logits do not overflow.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _logloss_sum(scores: np.ndarray, y: np.ndarray, scores_are: str) -> float:
    """Summed binary cross-entropy over candidates; from logits without forming probabilities."""
    if scores_are == "logits":
        # log(1 + exp(s)) - y*s, written so it never overflows
        loss = np.maximum(scores, 0.0) - y * scores + np.log1p(np.exp(-np.abs(scores)))
    else:
        p = np.clip(scores, 1e-15, 1 - 1e-15)  # sklearn's log_loss clipping
        loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(loss.sum())


def _ece_sums(probs: np.ndarray, y: np.ndarray, bins: int) -> np.ndarray:
    """Per equal-width bin: summed probability and summed clicks, float64 [2, bins].

    ECE = sum over bins of (share) * |click rate - mean prob| = sum |clicks - probs| / candidates.
    """
    if np.any((probs < 0) | (probs > 1)):
        raise InputError("ece needs probabilities in [0, 1]; pass logits with scores_are='logits'")
    which = np.minimum((probs * bins).astype(np.int64), bins - 1)
    return np.stack(
        [np.bincount(which, weights=probs, minlength=bins), np.bincount(which, weights=y, minlength=bins)]
    )
