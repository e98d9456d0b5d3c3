"""Paired bootstrap of list metrics between ways of ranking one split (re-rankers' λ, models).

Each way is a `Variant`: per-impression values of its metrics and its top-10 lists (one per
seed). `compare` gives each variant's values and its difference to the first with a 95%
interval: impressions are resampled with replacement, the same resamples for every variant and
metric (paired), a chunk of resamples at a time (bounded memory) from one seeded generator (the
same call gives the same intervals, whatever the chunk size). A metric's mean in a resample is
over the drawn impressions where it is defined (NaN: skipped). Coverage@10 is recomputed in each
resample over the drawn impressions' distinct candidates; as a set statistic it shrinks in
resamples (about 63% of the distinct impressions), so its interval is moved by that bias.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from newsrec_cli.evaluate import beyond
from newsrec_cli.evaluate.beyond_rows import SplitFacts
from newsrec_cli.mind.behaviors import Impressions

RESAMPLES = 1000
BOOTSTRAP_BUDGET = 1 << 22  # resample weights held at once (32 MB of float64)


@dataclass
class Variant:
    """One way of ranking the split: per-impression values (averaged over seeds where there are
    several) and the top-10 lists of each seed (Coverage@10 is averaged over them)."""

    values: dict[str, np.ndarray]
    tops: list[np.ndarray]


def compare(
    variants: Sequence[Variant],
    target: Impressions,
    facts: SplitFacts,
    names: Sequence[str],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[tuple[dict[str, float], dict[str, tuple[float, float, float]]]]:
    """Each variant's metric values and its paired difference to the first one with a 95%
    bootstrap interval: (values, {metric: (difference, low, high)}) per variant."""
    catalogue = facts.catalogue
    column = np.full(len(facts.categories), -1, dtype=np.int64)
    column[catalogue] = np.arange(len(catalogue))
    shown = _incidence_flat(target, column, len(catalogue))
    per_impression = [m for m in names if m != "coverage@10"]
    points = []
    for v in variants:
        point = {m: _mean(v.values[m]) for m in per_impression}
        if "coverage@10" in names:
            point["coverage@10"] = float(
                np.mean(
                    [beyond.coverage(beyond.exposure(t, len(facts.categories)), catalogue) for t in v.tops]
                )
            )
        points.append(point)
    incidence = [[_incidence(t, column, len(catalogue)) for t in v.tops] for v in variants]
    draws = _bootstrap(
        [v.values for v in variants], incidence, shown, per_impression, resamples, seed, len(target)
    )
    out = []
    for j in range(len(variants)):
        deltas = {}
        for m in names:
            diff = draws[m][j] - draws[m][0]
            ok = np.isfinite(diff)
            mid = points[j][m] - points[0][m]
            low, high = np.percentile(diff[ok], [2.5, 97.5]) if ok.any() else (np.nan, np.nan)
            if m == "coverage@10" and ok.any():
                # A set statistic: a resample holds ~63% of the distinct impressions, so its
                # coverages (and their difference) shrink; the interval is moved by that bias.
                low, high = low + mid - diff[ok].mean(), high + mid - diff[ok].mean()
            deltas[m] = (mid, float(low), float(high))
        out.append((points[j], deltas))
    return out


def _mean(x: np.ndarray) -> float:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def resample_weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each of n impressions is drawn in each resample, float64 (r, n), a chunk of
    resamples at a time (one generator: the chunks concatenate to the same draws whatever n)."""
    rng = np.random.default_rng(seed)
    step = max(1, BOOTSTRAP_BUDGET // max(1, n))
    for lo in range(0, resamples, step):
        r = min(step, resamples - lo)
        drawn = rng.integers(0, n, size=(r, n))
        flat = (np.arange(r)[:, None] * n + drawn).ravel()
        yield np.bincount(flat, minlength=r * n).reshape(r, n).astype(np.float64)


def _bootstrap(
    per: list[dict[str, np.ndarray]],
    incidence: list[list[sparse.csr_matrix]],
    shown: sparse.csr_matrix,
    names: list[str],
    resamples: int,
    seed: int,
    n: int,
) -> dict[str, np.ndarray]:
    """Each metric's mean in every resample, (λ, resamples): per-impression metrics as weighted
    means over the impressions where they are defined, Coverage@10 as its share recomputed."""
    out = {m: np.empty((len(per), resamples)) for m in [*names, "coverage@10"]}
    done = 0
    for w in resample_weights(n, resamples, seed):
        r = len(w)
        for j, values in enumerate(per):
            for m in names:
                x = values[m]
                ok = np.isfinite(x)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[m][j, done : done + r] = (w @ np.where(ok, x, 0.0)) / (w @ ok.astype(np.float64))
        candidates = np.asarray((shown.T @ w.T) > 0).sum(axis=0)  # distinct candidates per resample
        for j, seeds in enumerate(incidence):
            exposed = np.mean([np.asarray((inc.T @ w.T) > 0).sum(axis=0) for inc in seeds], axis=0)
            out["coverage@10"][j, done : done + r] = exposed / np.maximum(candidates, 1)
        done += r
    return out


def _incidence(top: np.ndarray, column: np.ndarray, size: int) -> sparse.csr_matrix:
    """(I, size) 0/1: impression i's list holds catalogue news j."""
    rows, slots = np.nonzero(top >= 0)
    cols = column[top[rows, slots]]
    keep = cols >= 0
    data = np.ones(int(keep.sum()))
    return sparse.csr_matrix((data, (rows[keep], cols[keep])), shape=(len(top), size))


def _incidence_flat(target: Impressions, column: np.ndarray, size: int) -> sparse.csr_matrix:
    """(I, size) 0/1: impression i shows catalogue news j among its candidates."""
    cols = column[np.asarray(target.candidates, dtype=np.int64)]
    data = np.ones(len(cols))
    m = sparse.csr_matrix((data, (target.candidate_impression, cols)), shape=(len(target), size))
    m.data[:] = 1.0  # a news listed twice in one impression counts once
    return m
