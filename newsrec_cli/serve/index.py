"""Top-k retrieval over every servable news: exact search, or a usearch HNSW index above a size.

The scoring head is probed once: when `score(u, V)` is a positive multiple of `V @ u` (dot) or of
`normalize(V) @ u` (cosine) the search can run on the vectors alone; otherwise (any other head)
every news is scored through the backend. Either way the k found are re-scored through the
backend, so the scores returned are the model's logits and their order is the model's.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

DEFAULT_ANN_THRESHOLD = 250_000  # measured: exact search stays under 25 ms p50 below it (README)


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

    def __init__(self, kind: str, dim: int, ann_threshold: int = DEFAULT_ANN_THRESHOLD) -> None:
        self.kind = kind
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.ann: Any = None
        self._lock = threading.Lock()
        self.norms = np.zeros(0, np.float32)

    @property
    def method(self) -> str:
        return (
            "usearch-hnsw" if self.ann is not None else ("exact" if self.kind != "generic" else "exact-model")
        )

    def rebuild(self, vectors: np.ndarray) -> None:
        """(Re)build after a bulk load: norms, and the HNSW index when the table is large enough."""
        self.norms = np.linalg.norm(vectors, axis=1).astype(np.float32)
        self.ann = None
        if self.kind != "generic" and len(vectors) >= self.ann_threshold:
            from usearch.index import Index

            self.ann = Index(
                ndim=self.dim, metric="ip" if self.kind == "dot" else "cos", dtype="f32", connectivity=16
            )
            self.ann.add(np.arange(len(vectors), dtype=np.uint64), np.ascontiguousarray(vectors, np.float32))

    def update(self, rows: np.ndarray, vectors: np.ndarray, count: int) -> None:
        """Rows `rows` now hold `vectors` (new rows or updated ones); `count` rows in all."""
        with self._lock:
            if len(self.norms) < count:
                self.norms = np.concatenate([self.norms, np.zeros(count - len(self.norms), np.float32)])
            self.norms[rows] = np.linalg.norm(vectors, axis=1)
            if self.ann is not None:
                for row in rows:
                    if int(row) in self.ann:
                        self.ann.remove(int(row))
                self.ann.add(rows.astype(np.uint64), np.ascontiguousarray(vectors, np.float32))
            elif self.kind != "generic" and count >= self.ann_threshold:
                pass  # the next rebuild (restart) builds the index; exact search stays correct

    def search(
        self, backend: Any, state: np.ndarray, vectors: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> np.ndarray:
        """Rows of the (about) best k among `vectors` where `allowed` (bool, None = all)."""
        n = len(vectors)
        if self.ann is not None and allowed is not None:
            blocked = n - int(allowed.sum())
            if blocked < 1000:  # a few exclusions: ask the index for that many more
                found = self.ann.search(state[0].astype(np.float32), min(n, k + blocked)).keys.astype(
                    np.int64
                )
                found = found[(found < n)]
                found = found[allowed[found]]
                if len(found) >= min(k, int(allowed.sum())):
                    return found[:k]
        elif self.ann is not None:
            found = self.ann.search(state[0].astype(np.float32), min(n, k)).keys.astype(np.int64)
            return found[found < n][:k]
        if self.kind == "generic":
            scores = np.concatenate(
                [backend.score(state, vectors[None, s : s + 65536])[0] for s in range(0, n, 65536)]
            )
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
