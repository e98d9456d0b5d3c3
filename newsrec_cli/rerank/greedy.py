"""Greedy re-ranking of a batch of candidate lists: MMR and topic calibration.

Both choose the top k one item at a time. Each candidate's relevance is its score min–max
scaled to [0, 1] within its list, so that λ means the same for every model and head; the step
adds the candidate with the best objective, and ties go to the better-scored candidate:

- **MMR** (Carbonell and Goldstein 1998), with the text vectors' cosine similarity:

  .. math:: \\arg\\max_{i \\notin S} (1 - λ)\\, rel_i - λ \\max_{j \\in S} \\cos(v_i, v_j)

  (the similarity term is 0 while S is empty).
- **Calibration** (Steck 2018), greedy on F(S) = (1 − λ) Σ rel − λ JS(p, q(S)), where p is the
  history's category distribution and q(S) the rank-weighted one of the list so far
  (`newsrec_cli.rerank.calibration`); each step adds the i maximising
  (1 − λ) rel_i − λ JS(p, q(S ∪ {i})). A user with no history keeps the model's order.

Below the top k, the list keeps the model's order. With λ = 0 (or `none`) the order is the
model's: scores descending, and among equal scores the candidate listed later first, the tie rule
of `newsrec_cli.evaluate.metrics`.

Shapes: B lists of N candidates (padding marked by `valid`), D-dimensional vectors, C categories.
"""

from __future__ import annotations

import numpy as np

from newsrec_cli.rerank.calibration import js_divergence, rank_weights
from newsrec_cli.rerank.spec import RerankSpec

_PADDING = -1e300  # below any objective, above "already chosen": padding is picked only when nothing is left


def pool_size(k: int) -> int:
    """How many of the best-scored news a re-ranker chooses from when retrieving from the
    whole catalogue (serve, `evaluate --retrieve`): 10 k, at least 100."""
    return max(10 * k, 100)


def model_order(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Each row's candidates by score, descending; among ties the later one first; padding last."""
    s = np.where(valid, scores, -np.inf) if valid is not None else scores
    return np.argsort(s, axis=-1, kind="stable")[..., ::-1]


def rerank(
    scores: np.ndarray,
    k: int,
    spec: RerankSpec,
    *,
    valid: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
    categories: np.ndarray | None = None,
    history: np.ndarray | None = None,
) -> np.ndarray:
    """The order of each list, best first: (B, N) candidate indices ((N,) for a single list).

    Args:
        scores: (B, N) model scores (logits or any monotone score).
        k: how many to choose greedily; the rest keep the model's order.
        spec: the method and λ.
        valid: (B, N) False for padding; default all True.
        vectors: (B, N, D) L2-normalised text vectors (MMR).
        categories: (B, N) category codes in [0, C), -1 for unknown (calibration).
        history: (B, C) the history's category distribution, rows of zeros for no history
            (calibration).
    """
    single = np.ndim(scores) == 1
    if single:
        scores = scores[None]
        valid = None if valid is None else valid[None]
        vectors = None if vectors is None else vectors[None]
        categories = None if categories is None else categories[None]
        history = None if history is None else history[None]
    scores = np.asarray(scores, dtype=np.float64)
    B, N = scores.shape  # lists, candidates
    valid = np.ones((B, N), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    base = model_order(scores, valid)
    if not spec.active or N == 0:
        return base[0] if single else base
    # Work in the model's order, so that argmax's first-maximum rule breaks ties by score.
    s = np.take_along_axis(scores, base, axis=1)
    ok = np.take_along_axis(valid, base, axis=1)
    rel = _relevance(s, ok)
    lam = spec.weight
    if spec.method == "mmr":
        if vectors is None:
            raise ValueError("mmr needs the news' text vectors")
        v = np.take_along_axis(np.asarray(vectors, dtype=np.float64), base[..., None], axis=1)  # (B, N, D)
        picked = _greedy_mmr(rel, ok, v, lam, min(k, N))
    else:
        if categories is None or history is None:
            raise ValueError("calibration needs the news' categories and the history's category distribution")
        c = np.take_along_axis(np.asarray(categories), base, axis=1)
        picked = _greedy_calibration(rel, ok, c, np.asarray(history, dtype=np.float64), lam, min(k, N))
    order = _complete(base, picked)
    return order[0] if single else order


def _relevance(s: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Scores min–max scaled to [0, 1] within each list's valid candidates (0 when all equal)."""
    lo = np.where(ok, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(ok, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    safe = np.where(np.isfinite(span) & (span > 0), span, 1.0)
    return np.where(ok & (span > 0), (s - np.where(np.isfinite(lo), lo, 0.0)) / safe, 0.0)


def _greedy_mmr(rel: np.ndarray, ok: np.ndarray, v: np.ndarray, lam: float, k: int) -> np.ndarray:
    B, N = rel.shape
    rows = np.arange(B)
    taken = np.zeros((B, N), dtype=bool)
    max_sim = np.zeros((B, N))
    picked = np.empty((B, k), dtype=np.int64)
    for step in range(k):
        j = _best((1.0 - lam) * rel - lam * max_sim, ok, taken)
        picked[:, step] = j
        taken[rows, j] = True
        sim = np.einsum("bnd,bd->bn", v, v[rows, j])  # (B, N) cosine to the news just chosen
        max_sim = sim if step == 0 else np.maximum(max_sim, sim)
    return picked


def _greedy_calibration(
    rel: np.ndarray, ok: np.ndarray, cats: np.ndarray, history: np.ndarray, lam: float, k: int
) -> np.ndarray:
    B, N = rel.shape
    C = history.shape[1]
    # Unknown categories form one more category, which no history holds.
    cats = np.where((cats >= 0) & (cats < C), cats, C)
    p = np.concatenate([history, np.zeros((B, 1))], axis=1)  # (B, C+1)
    has_history = p.sum(axis=1) > 0
    weight = np.where(has_history, lam, 0.0)[:, None]  # no history: the model's order
    rows = np.arange(B)
    taken = np.zeros((B, N), dtype=bool)
    mass = np.zeros((B, C + 1))
    w = rank_weights(k)
    eye = np.eye(C + 1)
    picked = np.empty((B, k), dtype=np.int64)
    for step in range(k):
        total = w[: step + 1].sum()
        q = (mass[:, None, :] + w[step] * eye[None]) / total  # (B, C+1 added category, C+1)
        js = js_divergence(p[:, None, :], q)  # (B, C+1): the divergence if a news of category c is added
        cost = np.take_along_axis(js, cats, axis=1)  # (B, N)
        j = _best((1.0 - weight) * rel - weight * cost, ok, taken)
        picked[:, step] = j
        taken[rows, j] = True
        mass[rows, cats[rows, j]] += w[step]
    return picked


def _best(objective: np.ndarray, ok: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Each list's candidate with the best objective among those not taken; padding only when
    nothing else is left; ties to the first, the better scored (positions are in model order)."""
    objective = np.where(ok, objective, _PADDING)
    objective[taken] = -np.inf
    return objective.argmax(axis=1)


def _complete(base: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """Positions (in the model's order) of the greedy top k, then the others in the model's order,
    mapped back to candidate indices."""
    B, N = base.shape
    rest = np.ones((B, N), dtype=bool)
    rest[np.arange(B)[:, None], picked] = False
    # Stable: the positions not picked keep their (model) order.
    others = np.argsort(~rest, axis=1, kind="stable")[:, : N - picked.shape[1]]
    positions = np.concatenate([picked, others], axis=1)
    return np.take_along_axis(base, positions, axis=1)
