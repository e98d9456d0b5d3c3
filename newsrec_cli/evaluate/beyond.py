"""Beyond-accuracy metrics of ranked lists: diversity, calibration, novelty, popularity, coverage.

Pure, vectorised numpy functions over **top-k lists**: `top` is an int64 array (B, k) of item
indices (news indices), best first, -1 where a list is shorter than k (padding only at the end).
Per-item facts come as arrays indexed by item: text vectors (N, D), category codes (N,), user
counts (N,), clicks (N,). So the same functions serve impressions re-ranked by `evaluate` and
lists retrieved from the whole catalogue.

Per list (each returns (B,) float64, NaN where the list does not qualify; the caller averages
over lists and counts the NaNs):

- `ild`: intra-list diversity, mean over pairs of 1 - cos (lists of at least 2 items).
- `category_count`: distinct categories in the list.
- `calibration`: Jensen-Shannon divergence (base 2) between the history's category distribution
  and the list's rank-weighted one (empty histories skipped). The same `category_distribution`,
  `rank_weights` and `js_divergence` as the calibration re-ranker (`newsrec_cli.rerank`).
- `novelty`: mean self-information -log2((c_n + 1) / (U + 1)) of the items.
- `popularity`: mean clicks of the items (average recommendation popularity, ARP).

Over all lists of a split (accumulate `exposure` chunk by chunk, then):

- `coverage`: share of the catalogue that appears in some list.
- `gini`: Gini index of how often each catalogue item appears.

`top_k` turns flat scores (evaluate's layout: candidates of all impressions, with offsets) into
top-k lists with the tie rule of `newsrec_cli.evaluate.metrics`. `history_distribution` and
`distinct_user_counts` build the per-list and per-item inputs from flat arrays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from newsrec_cli.evaluate.metrics import check_offsets, rank_order
from newsrec_cli.rerank import category_distribution, js_divergence, rank_weights

PAD = -1  # an empty slot of a top-k list
LIST_CHUNK = 128  # lists gathered at once in `ild`: (128, 10, 384) float32, 2 MB, stays in cache


def top_k(scores: np.ndarray, offsets: np.ndarray, k: int, items: np.ndarray | None = None) -> np.ndarray:
    """Each impression's k best candidates, (B, k) int64, -1 padding where it has fewer than k.

    Ordered by score descending; among equal scores the candidate listed later first (the tie
    rule of `newsrec_cli.evaluate.metrics`). The entries are `items[candidate]` (news indices),
    or the candidate's position within its impression when `items` is None.

    Args:
        scores: float (C,), flat over impressions.
        offsets: int64 (B + 1,); impression b is `offsets[b]:offsets[b+1]`.
        k: list length, at least 1.
        items: (C,) item index of each candidate, aligned with scores.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = np.asarray(scores, dtype=np.float64)
    offsets = check_offsets(offsets, len(scores))
    return top_k_from_order(rank_order(scores, offsets), offsets, k, items)


def top_k_from_order(
    order: np.ndarray, offsets: np.ndarray, k: int, items: np.ndarray | None = None
) -> np.ndarray:
    """`top_k` from a ranking already made: `order` holds flat candidate indices sorted by
    (impression, rank), as `metrics.rank_order` returns them."""
    B = len(offsets) - 1
    lengths = np.diff(offsets)
    segment = np.repeat(np.arange(B, dtype=np.int64), lengths)
    position = np.arange(len(order), dtype=np.int64) - offsets[segment]  # 0-based rank
    keep = position < k
    top = np.full((B, k), PAD, dtype=np.int64)
    chosen = order[keep]
    top[segment[keep], position[keep]] = (
        chosen - offsets[segment[keep]] if items is None else np.asarray(items)[chosen]
    )
    return top


def list_lengths(top: np.ndarray) -> np.ndarray:
    """Items in each list (padding is only at the end), (B,) int64."""
    return (np.asarray(top) >= 0).sum(axis=1)


def ild(top: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Intra-list diversity of each list, (B,); NaN for lists of fewer than 2 items.

    .. math:: ILD = \\frac{2}{n(n-1)} \\sum_{i<j} (1 - \\cos(v_i, v_j))

    over the n items of the list (Ziegler et al. 2005, "Improving recommendation lists through
    topic diversification"; Microsoft recommenders' `intra_list_diversity`). `vectors` (N, D) must
    be L2-normalised; then the sum of the pairwise cosines is (‖Σ v_i‖² − n) / 2, computed
    per rank in O(n D) without the (n, n) matrix, in float64.
    """
    return ild_prefixes(top, vectors, (np.shape(top)[1],))[np.shape(top)[1]]


def ild_prefixes(top: np.ndarray, vectors: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    """`ild` of the first k items of each list for every k in `ks`, in one pass over the lists.

    Lists go `LIST_CHUNK` at a time: their (chunk, k, D) vectors are gathered into one buffer
    that stays in cache, summed per prefix (float32, as stored) and squared in float64.
    """
    top = np.asarray(top)
    B, K = top.shape  # lists, list length
    wanted = sorted({min(k, K) for k in ks if k >= 1})
    out = {k: np.full(B, np.nan) for k in wanted}
    if not wanted or not B:
        return {k: out.get(min(k, K), np.full(B, np.nan)) for k in ks}
    kmax, D = wanted[-1], vectors.shape[1]
    buffer = np.empty((LIST_CHUNK * kmax, D), dtype=vectors.dtype)
    for lo in range(0, B, LIST_CHUNK):
        part = top[lo : lo + LIST_CHUNK, :kmax]
        b = len(part)
        present = part >= 0
        gathered = buffer[: b * kmax]
        np.take(vectors, np.maximum(part, 0).ravel(), axis=0, out=gathered)
        gathered = gathered.reshape(b, kmax, D)  # (b, k, D)
        if not present.all():
            gathered[~present] = 0.0  # padding adds nothing
        n = np.cumsum(present, axis=1)  # items among the first r + 1
        total = np.zeros((b, D), dtype=vectors.dtype)  # Σ v_i over the first k
        done = 0
        for k in wanted:
            total += gathered[:, done:k].sum(axis=1)
            done = k
            count = n[:, k - 1].astype(np.float64)
            wide = total.astype(np.float64)
            cos_sum = (np.einsum("bd,bd->b", wide, wide) - count) / 2  # Σ_{i<j} cos(v_i, v_j)
            ok = count >= 2
            pairs = np.where(ok, count * (count - 1) / 2, 1.0)
            out[k][lo : lo + b] = np.where(ok, 1.0 - cos_sum / pairs, np.nan)
    return {k: out[min(k, K)] for k in ks}


def category_count(top: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Distinct categories of each list, (B,) float64 (0 for an empty list).

    `categories` (N,) holds each item's category code (>= 0). The breadth measure of
    diversity in news recommendation (e.g. NewsRecLib's category coverage per list).
    """
    codes = _codes(top, categories)
    codes = np.sort(codes, axis=1)  # padding (-1) first
    first = np.ones_like(codes, dtype=bool)
    first[:, 1:] = codes[:, 1:] != codes[:, :-1]
    return (first & (codes >= 0)).sum(axis=1).astype(np.float64)


def calibration(top: np.ndarray, categories: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Rank-aware miscalibration of each list, (B,); NaN for an empty history or an empty list.

    .. math::

        JS_2(p, q) = \\tfrac12 KL(p \\| m) + \\tfrac12 KL(q \\| m), \\quad m = \\tfrac12 (p + q),

    p: the history's category distribution (`history`, (B, C), counts ÷ history length, rows
    of zeros for no history); q: the list's, the item at rank r weighted 1/log2(r + 1),
    normalised. Lower is better; 0 for equal distributions, 1 for disjoint ones. Steck 2018,
    "Calibrated recommendations"; rank-aware as RADio's calibration (Vrijenhoek et al. 2022).
    The same functions as the calibration re-ranker (`newsrec_cli.rerank.calibration`).
    """
    history = np.atleast_2d(np.asarray(history, dtype=np.float64))
    C = history.shape[1]
    codes = _codes(top, categories)
    if len(codes) and codes.max(initial=-1) >= C:
        raise ValueError(f"category codes must be below the history's {C} categories")
    q = category_distribution(codes, C, rank_weights(codes.shape[1]))
    js = js_divergence(history, q)
    usable = (history.sum(axis=1) > 0) & (codes >= 0).any(axis=1)
    return np.where(usable, js, np.nan)


def novelty(top: np.ndarray, user_counts: np.ndarray, users: int) -> np.ndarray:
    """Mean self-information of each list's items, (B,) in bits; NaN for an empty list.

    .. math:: Novelty = \\frac{1}{n} \\sum_{i} -\\log_2 \\frac{c_i + 1}{U + 1}

    c_i: distinct users of the training split whose history or clicked candidates hold item i
    (`distinct_user_counts`); U: distinct users of the training split. Zhou et al. 2010 ("Solving
    the apparent diversity-accuracy dilemma"), Microsoft recommenders' `novelty`; the +1 keeps
    fresh news (c = 0) finite.
    """
    info = -np.log2((np.asarray(user_counts, dtype=np.float64) + 1.0) / (users + 1.0))
    return _mean_of(top, info)


def popularity(top: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """Average recommendation popularity (ARP) of each list, (B,); NaN for an empty list.

    .. math:: ARP = \\frac{1}{n} \\sum_{i} clicks_i

    clicks_i: the clicks item i received over the whole reported split (Abdollahpouri et al.
    2019, "Managing popularity bias in recommender systems with personalized re-ranking"). An
    evaluation measure only, never a feature: it reads the split's own labels.
    """
    return _mean_of(top, np.asarray(clicks, dtype=np.float64))


def exposure(top: np.ndarray, size: int) -> np.ndarray:
    """How many lists each item appears in, (size,) int64. Sum it over chunks of lists."""
    top = np.asarray(top)
    return np.bincount(top[top >= 0], minlength=size)[:size].astype(np.int64)


def coverage(counts: np.ndarray, catalogue: np.ndarray) -> float:
    """Share of the catalogue that appears in at least one list (`exposure` summed over lists).

    .. math:: Coverage = |\\{i \\in I : count_i > 0\\}| / |I|

    I: the catalogue (`catalogue`, distinct item indices: the split's distinct candidates).
    Catalogue coverage (Ge et al. 2010, "Beyond accuracy"; Microsoft recommenders'
    `catalog_coverage`). Items outside the catalogue are not counted. NaN for an empty catalogue.
    """
    catalogue = np.asarray(catalogue, dtype=np.int64)
    if not len(catalogue):
        return float("nan")
    return float(np.count_nonzero(np.asarray(counts)[catalogue]) / len(catalogue))


def gini(counts: np.ndarray, catalogue: np.ndarray) -> float:
    """Gini index of the exposure of the catalogue's items: 0 equal, towards 1 concentrated.

    .. math:: G = \\frac{\\sum_{i=1}^{n} (2i - n - 1)\\, x_{(i)}}{n \\sum_i x_i}

    x_(i): the exposure counts of the n catalogue items in ascending order, unexposed items
    included as 0 (Gini 1912; as RecBole's `GiniIndex` and Fleder and Hosanagar 2009). NaN when
    nothing is exposed.
    """
    x = np.sort(np.asarray(counts, dtype=np.float64)[np.asarray(catalogue, dtype=np.int64)])
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return float("nan")
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def history_distribution(codes: np.ndarray, offsets: np.ndarray, n_categories: int) -> np.ndarray:
    """Category distribution of each history (counts ÷ history length), (B, C); zeros for none.

    `codes` is flat over histories (history b is `codes[offsets[b]:offsets[b+1]]`), every entry a
    category code in [0, C). Equal to `rerank.category_distribution` of the padded histories,
    without padding them (histories run to hundreds of news).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)[offsets[0] : offsets[-1]]
    B = len(offsets) - 1
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(B, dtype=np.int64), lengths)
    counts = np.bincount(owner * n_categories + codes, minlength=B * n_categories)
    dist = counts.reshape(B, n_categories).astype(np.float64)
    return dist / np.maximum(lengths, 1)[:, None]


def distinct_user_counts(users: np.ndarray, items: np.ndarray, size: int) -> np.ndarray:
    """For each item, the number of distinct users among the (user, item) pairs, (size,) int64.

    The pairs are deduplicated by hashing (pandas' `unique`, no sort). Memory is a few copies of
    the pairs: a caller with more pairs than that gives them in groups of whole users and sums
    the counts (`newsrec_cli.evaluate.beyond_rows.training_users` does).
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if not len(users):
        return np.zeros(size, dtype=np.int64)
    keys = pd.unique(users * size + items)  # one key per distinct (user, item)
    return np.bincount(keys % size, minlength=size)[:size].astype(np.int64)


def _codes(top: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """The category code of each list entry, -1 for padding."""
    top = np.asarray(top)
    return np.where(top >= 0, np.asarray(categories)[np.maximum(top, 0)], PAD)


def _mean_of(top: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Mean of `value[item]` over each list's items; NaN for an empty list."""
    top = np.asarray(top)
    present = top >= 0
    n = present.sum(axis=1)
    total = np.where(present, value[np.maximum(top, 0)], 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)
