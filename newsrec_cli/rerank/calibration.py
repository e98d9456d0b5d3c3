"""Topic calibration (Steck 2018), rank-aware as in RADio (Vrijenhoek et al. 2022).

A user's history has a category distribution p (counts ÷ history length). A ranked list has a
category distribution q in which the item at rank r weighs 1/log2(r + 1), normalised. A list is
calibrated when q is close to p, measured by the Jensen–Shannon divergence in base 2:

.. math::

    JS(p, q) = \\tfrac12 KL(p \\| m) + \\tfrac12 KL(q \\| m), \\quad m = \\tfrac12 (p + q),

with 0 · log 0 = 0, so JS lies in [0, 1]: 0 for equal distributions, 1 for disjoint ones.
"""

from __future__ import annotations

import numpy as np


def rank_weights(k: int) -> np.ndarray:
    """1/log2(r + 1) for ranks r = 1..k, as nDCG discounts them. Shape (k,)."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def category_distribution(
    categories: np.ndarray, n_categories: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Rows of category codes (B, L), -1 for padding, to distributions (B, C) summing to 1.

    `weights` (L,) weighs each position (rank weights for a ranked list; None: counts). A row
    without any category gives a row of zeros.
    """
    codes = np.atleast_2d(np.asarray(categories))
    B, L = codes.shape  # batch, list length
    w = np.ones(L) if weights is None else np.asarray(weights, dtype=np.float64)[:L]
    valid = codes >= 0
    out = np.zeros((B, n_categories), dtype=np.float64)
    rows = np.broadcast_to(np.arange(B)[:, None], (B, L))
    np.add.at(out, (rows[valid], codes[valid]), np.broadcast_to(w, (B, L))[valid])
    total = out.sum(axis=1, keepdims=True)
    np.divide(out, total, out=out, where=total > 0)
    return out


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence in base 2 between the rows of p and q (…, C) → (…)."""
    p, q = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))
    m = 0.5 * (p + q)
    return 0.5 * (_kl(p, m) + _kl(q, m))


def _kl(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    # a > 0 implies m > 0; the terms where a == 0 are 0 by convention.
    ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
    return np.sum(a * np.log2(ratio), axis=-1)
