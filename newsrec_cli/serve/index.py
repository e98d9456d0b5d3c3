"""Top-k retrieval over every servable news: exact search, or a usearch HNSW index above a size.

The scoring head is probed once: when `score(u, V)` is a positive multiple of `V @ u` (dot) or of
`normalize(V) @ u` (cosine) the search can run on the vectors alone. newsrec's own model scores
`a·sim(u[:d], n[:d]) + b·u[d:]·n[d:]` (the learned head on standardised or unit vectors, plus the
content prior on unit text vectors): that is an inner product of per-news keys and a per-user
query (`SplitForm`), found by the probe with its split d and weights a, b. Otherwise (any other
head) every news is scored through the backend. Either way the k found are re-scored through the
backend, so the scores returned are the model's logits and their order is the model's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_ANN_THRESHOLD = 250_000  # measured: exact search stays under 25 ms p50 below it (README)


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-5)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class SplitForm:
    """score(u, n) = a·sim(u[:d], n[:d]) + b·(u[d:]·n[d:]), sim the dot of standardised vectors / d
    ("dot") or the cosine ("cosine"): keys(n)·query(u), an inner product."""

    split: int
    head: str
    a: float
    b: float

    def keys(self, vectors: np.ndarray) -> np.ndarray:
        learned = vectors[:, : self.split].astype(np.float64)
        learned = _standardise(learned) if self.head == "dot" else _unit(learned)
        return np.concatenate([learned, vectors[:, self.split :]], axis=1).astype(np.float32)

    def query(self, state: np.ndarray) -> np.ndarray:
        u = state[0].astype(np.float64)
        learned = u[: self.split]
        learned = _standardise(learned) / self.split if self.head == "dot" else _unit(learned)
        return np.concatenate([self.a * learned, self.b * u[self.split :]]).astype(np.float32)


def probe_split(backend: Any, state: np.ndarray, vectors: np.ndarray) -> SplitForm | None:
    """The SplitForm that reproduces the backend's scores on `vectors` (to 1e-4), or None."""
    dim = vectors.shape[1]
    if state.ndim != 2 or state.shape[0] != 1 or state.shape[1] != dim or len(vectors) < 8:
        return None
    scores = backend.score(state, vectors[None]).astype(np.float64)[0]
    v = vectors.astype(np.float64)
    u = state[0].astype(np.float64)
    splits = [dim]  # no prior: the learned part is all
    for d in range(1, dim):  # the prior's part is a unit vector (or zero): find where it starts
        tail = np.linalg.norm(v[:, d:], axis=1)
        if np.all((np.abs(tail - 1.0) < 1e-3) | (tail < 1e-6)) and np.any(tail > 0.5):
            splits.insert(0, d)
            break
    for d in splits:
        for head in ("dot", "cosine"):
            form = SplitForm(d, head, 1.0, 1.0)
            learned = form.keys(vectors)[:, :d].astype(np.float64) @ form.query(state)[:d].astype(np.float64)
            prior = v[:, d:] @ u[d:]
            basis = np.stack([learned, prior], axis=1)
            (a, b), *_ = np.linalg.lstsq(basis, scores, rcond=None)
            if a > 0 and np.abs(basis @ [a, b] - scores).max() <= 1e-4 * max(1.0, np.abs(scores).max()):
                return SplitForm(d, head, float(a), float(b))
    return None


def probe_kind(backend: Any, state: np.ndarray, vectors: np.ndarray) -> str:
    """'dot', 'cosine' or 'generic': how the head's logits relate to the vectors (see above)."""
    if state.ndim != 2 or state.shape[0] != 1 or state.shape[1] != vectors.shape[1] or len(vectors) < 4:
        return "generic"
    scores = backend.score(state, vectors[None]).astype(np.float64)[0]
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    for kind, keys in (("dot", vectors), ("cosine", unit)):
        linear = keys.astype(np.float64) @ state[0].astype(np.float64)
        denom = float(linear @ linear)
        if denom <= 0:
            continue
        scale = float(linear @ scores) / denom
        if scale > 0 and np.abs(scores - scale * linear).max() <= 1e-4 * max(1.0, np.abs(scores).max()):
            return kind
    return "generic"


class Retriever:
    """Holds the search structure over the first `count` rows of a growing vector table."""

    def __init__(
        self, kind: str, dim: int, ann_threshold: int = DEFAULT_ANN_THRESHOLD, form: SplitForm | None = None
    ) -> None:
        self.kind = "split" if form is not None else kind
        self.form = form
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.ann: Any = None
        self._lock = threading.Lock()
        self.norms = np.zeros(0, np.float32)
        self.keys = np.zeros((0, dim), np.float32)  # SplitForm keys of each row

    @property
    def method(self) -> str:
        return (
            "usearch-hnsw" if self.ann is not None else ("exact" if self.kind != "generic" else "exact-model")
        )

    def rebuild(self, vectors: np.ndarray) -> None:
        """(Re)build after a bulk load: norms, and the HNSW index when the table is large enough."""
        self.norms = np.linalg.norm(vectors, axis=1).astype(np.float32)
        if self.form is not None:
            self.keys = self.form.keys(vectors)
        self.ann = None
        if self.kind != "generic" and len(vectors) >= self.ann_threshold:
            from usearch.index import Index

            self.ann = Index(
                ndim=self.dim, metric="cos" if self.kind == "cosine" else "ip", dtype="f32", connectivity=16
            )
            self.ann.add(np.arange(len(vectors), dtype=np.uint64), self._indexed(vectors))

    def _indexed(self, vectors: np.ndarray) -> np.ndarray:
        """What the index holds for these vectors: their keys (SplitForm) or the vectors."""
        return np.ascontiguousarray(self.form.keys(vectors) if self.form is not None else vectors, np.float32)

    def _query(self, state: np.ndarray) -> np.ndarray:
        return self.form.query(state) if self.form is not None else state[0].astype(np.float32)

    def update(self, rows: np.ndarray, vectors: np.ndarray, count: int) -> None:
        """Rows `rows` now hold `vectors` (new rows or updated ones); `count` rows in all."""
        with self._lock:
            if len(self.norms) < count:
                self.norms = np.concatenate([self.norms, np.zeros(count - len(self.norms), np.float32)])
            self.norms[rows] = np.linalg.norm(vectors, axis=1)
            if self.form is not None:
                if len(self.keys) < count:
                    grown = np.zeros((count, self.dim), np.float32)
                    grown[: len(self.keys)] = self.keys
                    self.keys = grown
                self.keys[rows] = self.form.keys(vectors)
            if self.ann is not None:
                for row in rows:
                    if int(row) in self.ann:
                        self.ann.remove(int(row))
                self.ann.add(rows.astype(np.uint64), self._indexed(vectors))
            # Without an index, exact search stays correct past ann_threshold; the next rebuild
            # (a restart) builds one.

    def search(
        self, backend: Any, state: np.ndarray, vectors: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> np.ndarray:
        """Rows of the (about) best k among `vectors` where `allowed` (bool, None = all)."""
        n = len(vectors)
        if self.ann is not None and allowed is not None:
            blocked = n - int(allowed.sum())
            if blocked < 1000:  # a few exclusions: ask the index for that many more
                found = self.ann.search(self._query(state), min(n, k + blocked)).keys.astype(np.int64)
                found = found[(found < n)]
                found = found[allowed[found]]
                if len(found) >= min(k, int(allowed.sum())):
                    return found[:k]
        elif self.ann is not None:
            found = self.ann.search(self._query(state), min(n, k)).keys.astype(np.int64)
            return found[found < n][:k]
        if self.kind == "generic":
            scores = np.concatenate(
                [backend.score(state, vectors[None, s : s + 65536])[0] for s in range(0, n, 65536)]
            )
        elif self.form is not None:
            scores = self.keys[:n] @ self._query(state)
        else:
            scores = vectors @ state[0].astype(np.float32)
            if self.kind == "cosine":
                scores = scores / np.maximum(self.norms[:n], 1e-12)
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
            k = min(k, int(allowed.sum()))
        if k <= 0:
            return np.zeros(0, np.int64)
        if k >= n:
            return np.argsort(-scores, kind="stable")[:k]
        return np.argpartition(-scores, k - 1)[:k]
