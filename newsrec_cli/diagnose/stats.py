"""Small numeric summaries shared by the checks: percentiles, norms, sigmoid saturation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)
# sigmoid(x) > 0.99 exactly when x > log(99) ~ 4.595; the same bound, negated, for < 0.01.
SATURATION_LOGIT = float(np.log(99.0))
NORM_CHUNK = 65_536  # rows per chunk, so a memory-mapped store of millions of rows is not read at once


def summary(values: np.ndarray, percentiles: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """min, max, mean, std and the given percentiles of the finite values (count of all, too)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    out: dict[str, float] = {"count": int(values.size), "non_finite": int(values.size - finite.size)}
    if finite.size == 0:
        nan = float("nan")
        out.update({"min": nan, "max": nan, "mean": nan, "std": nan})
        out.update({f"p{q}": nan for q in percentiles})
        return out
    out.update(
        {
            "min": float(finite.min()),
            "max": float(finite.max()),
            "mean": float(finite.mean()),
            "std": float(finite.std()),
        }
    )
    for q, v in zip(percentiles, np.percentile(finite, percentiles), strict=True):
        out[f"p{q}"] = float(v)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function in float64 (no overflow warning for |x| in the hundreds)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def saturation(logits: np.ndarray) -> dict[str, float]:
    """How much of the sigmoid is flat at these logits.

    `high`/`low`: shares of sigmoid(logit) above 0.99 / below 0.01; `saturated`: their sum;
    `grad_factor`: mean of sigmoid'(x) = p(1-p), at most 0.25 (at x = 0). It multiplies the gradient
    of every loss taken on probabilities, so near 0 nothing learns.
    """
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {
            "high": float("nan"),
            "low": float("nan"),
            "saturated": float("nan"),
            "grad_factor": float("nan"),
        }
    p = sigmoid(x)
    high = float((p > 0.99).mean())
    low = float((p < 0.01).mean())
    return {"high": high, "low": low, "saturated": high + low, "grad_factor": float((p * (1.0 - p)).mean())}


def row_norms(matrix: np.ndarray) -> np.ndarray:
    """L2 norm of each row (float64), chunked so memory-mapped matrices stream from disk."""
    out = np.empty(matrix.shape[0], dtype=np.float64)
    for start in range(0, matrix.shape[0], NORM_CHUNK):
        block = np.asarray(matrix[start : start + NORM_CHUNK], dtype=np.float64)
        out[start : start + block.shape[0]] = np.sqrt((block * block).sum(axis=1))
    return out


def non_finite_rows(matrix: np.ndarray) -> np.ndarray:
    """Boolean [rows]: rows holding a NaN or an Inf (chunked like `row_norms`)."""
    out = np.zeros(matrix.shape[0], dtype=bool)
    for start in range(0, matrix.shape[0], NORM_CHUNK):
        block = np.asarray(matrix[start : start + NORM_CHUNK])
        out[start : start + block.shape[0]] = ~np.isfinite(block).all(axis=1)
    return out


def share(part: int | float, whole: int | float) -> float:
    """part / whole, NaN for an empty whole (a 0 % coverage of nothing is not a finding)."""
    return float(part) / float(whole) if whole else float("nan")
