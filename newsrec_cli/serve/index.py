"""Top-k retrieval over every servable news: exact search, or a usearch HNSW index above a size.

The model says how its score is an inner product: `score_keys(news vector)` . `score_queries(user
state)` is the logit (`NewsRecommender.score_keys` / `score_queries`, exported as keys.onnx and
queries.onnx). The retriever holds the key of every news and searches them with the user's query,
exactly (a matrix product) or through an HNSW index of the keys. A model whose score is no inner
product (candidate attention: `backend.inner_product` False) has no keys; every news is then
scored through the backend. Nothing is inferred from the scores: a new head brings its own keys
and queries.

A run trained with popularity adds a term w(u) p_t(n) to each logit: the user's weight (from
their history length) times each news' factor read from the live counts at second t
(`PopularityHead.user_weight`, `news_term`; backends' `popularity_queries`, `popularity_keys`).
The logit is then the inner product [query(u), w(u)] . [key(n), p_t(n)], searched exactly (the
news factors change with every event, so no HNSW index holds them): `popularity` = (the users'
weights, every news' p_t). Either way the k found are re-scored through the backend by the
caller, so the scores returned are the model's logits and their order is the model's.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from newsrec_cli.serve.exact_search import ExactSearch

DEFAULT_ANN_THRESHOLD = 250_000  # measured: exact search stays under 25 ms p50 below it (README)
SCORE_CHUNK = 65536  # news per backend.score call when every news is scored


class Retriever:
    """Holds the search structure over the first `count` rows of a growing vector table."""

    def __init__(
        self, backend: Any, ann_threshold: int = DEFAULT_ANN_THRESHOLD, batch_threads: int = 1
    ) -> None:
        self.backend = backend
        self.batch_threads = batch_threads  # threads of the batched search (one batch at a time)
        self._searchers: dict[bool, ExactSearch] = {}  # the batched search, with popularity or not
        self.inner_product = bool(backend.inner_product)
        self.ann_threshold = ann_threshold
        self.ann: Any = None
        self._lock = threading.Lock()
        self.keys = np.zeros((0, 0), np.float32)  # the model's key of each row (inner product)

    @property
    def method(self) -> str:
        if self.ann is not None:
            return "usearch-hnsw"
        return "exact" if self.inner_product else "exact-model"

    def _keys(self, vectors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.backend.keys(vectors), np.float32)

    def rebuild(self, vectors: np.ndarray) -> None:
        """(Re)build after a bulk load: the keys, and the HNSW index when the table is large enough."""
        self.ann = None
        if not self.inner_product:
            return
        self.keys = self._keys(vectors)
        if len(vectors) >= self.ann_threshold:
            from usearch.index import Index  # optional extra: only past the ANN threshold

            self.ann = Index(ndim=self.keys.shape[1], metric="ip", dtype="f32", connectivity=16)
            self.ann.add(np.arange(len(vectors), dtype=np.uint64), self.keys)

    def update(self, rows: np.ndarray, vectors: np.ndarray, count: int) -> None:
        """Rows `rows` now hold `vectors` (new rows or updated ones); `count` rows in all. Above the
        threshold, an index is built at the next rebuild (restart); exact search stays correct."""
        if not self.inner_product:
            return
        keys = self._keys(vectors)
        with self._lock:
            if len(self.keys) < count:
                grown = np.zeros((count, keys.shape[1]), np.float32)
                grown[: len(self.keys)] = self.keys
                self.keys = grown
            self.keys[rows] = keys
            if self.ann is not None:
                for row in rows:
                    if int(row) in self.ann:
                        self.ann.remove(int(row))
                self.ann.add(rows.astype(np.uint64), keys)

    def search(
        self,
        backend: Any,
        state: np.ndarray,
        vectors: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        popularity: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Rows of the (about, with HNSW) best k among `vectors` where `allowed` (bool, None = all);
        with `popularity` (the user's weight (1,), each news' term), exact over keys and terms."""
        n = len(vectors)
        query = backend.queries(state)[0] if self.inner_product else None
        if popularity is not None:
            assert query is not None, "the popularity column needs keys and queries"
            return self._exact(query[None], n, [k], [allowed], popularity)[0]
        if self.ann is not None and allowed is not None:
            blocked = n - int(allowed.sum())
            if blocked < 1000:  # a few exclusions: ask the index for that many more
                found = self.ann.search(query, min(n, k + blocked)).keys.astype(np.int64)
                found = found[(found < n)]
                found = found[allowed[found]]
                if len(found) >= min(k, int(allowed.sum())):
                    return found[:k]
        elif self.ann is not None:
            found = self.ann.search(query, min(n, k)).keys.astype(np.int64)
            return found[found < n][:k]
        if query is not None:
            return self._exact(query[None], n, [k], [allowed])[0]
        scores = np.concatenate(
            [backend.score(state, vectors[None, s : s + SCORE_CHUNK])[0] for s in range(0, n, SCORE_CHUNK)]
        )
        return top_rows(scores, k, allowed)

    def search_many(
        self,
        backend: Any,
        states: list[np.ndarray],
        vectors: np.ndarray,
        ks: list[int],
        allowed: list[np.ndarray | None],
        popularity: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """`search` for several users at once, called one batch at a time (batch.py): exact search
        over keys reads them once for all, in one onnxruntime call on `batch_threads` threads
        (exact_search.py); other methods go one by one. `popularity`: (the users' weights (B,),
        every news' term), shared by the batch (one reading of the counts)."""
        if popularity is None and (self.ann is not None or not self.inner_product):
            return [
                self.search(backend, s, vectors, k, a) for s, k, a in zip(states, ks, allowed, strict=True)
            ]
        queries = np.concatenate([backend.queries(s) for s in states])  # (B, D)
        n = len(vectors)
        keys = self.keys[:n]
        if popularity is not None:
            popularity = (popularity[0], popularity[1][:n])
        searcher = self._searchers.get(popularity is not None)
        if searcher is None or searcher.dim != keys.shape[1]:
            searcher = ExactSearch(keys.shape[1], self.batch_threads, popularity is not None)
            self._searchers[popularity is not None] = searcher
        out: list[np.ndarray | None] = [None] * len(states)
        shared: list[int] = []
        blocked: list[np.ndarray] = []
        for j, mask in enumerate(allowed):
            rows = np.zeros(0, np.int64) if mask is None else np.flatnonzero(~mask)
            if len(rows) > max(256, n // 16):  # `since` blocks most news: on its own
                own = None if popularity is None else (popularity[0][j : j + 1], popularity[1])
                out[j] = self._exact(queries[j : j + 1], n, [ks[j]], [mask], own)[0]
            else:
                shared.append(j)
                blocked.append(rows)
        if shared:
            wanted = [min(ks[j], n - len(b)) for j, b in zip(shared, blocked, strict=True)]
            picked = None if popularity is None else (popularity[0][shared], popularity[1])
            found = searcher.top(keys, queries[shared], wanted, blocked, picked)
            for j, rows in zip(shared, found, strict=True):
                out[j] = rows
        return out  # type: ignore[return-value]

    def _exact(
        self,
        queries: np.ndarray,
        n: int,
        ks: list[int],
        allowed: list[np.ndarray | None],
        popularity: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Exact top-k of each query over the first n keys (plus weight x term with `popularity`)."""
        keys = self.keys[:n]
        if popularity is not None:
            weights, terms = popularity
            scores = np.ascontiguousarray((keys @ queries.T).T) + np.outer(weights, terms[:n])
            return [
                top_rows(scores[j], k, mask, in_place=True)
                for j, (k, mask) in enumerate(zip(ks, allowed, strict=True))
            ]
        if len(queries) == 1:
            return [top_rows(keys @ queries[0], ks[0], allowed[0])]
        # (N, D) x (D, B) reads the keys row by row for every query at once (measured faster than
        # (B, D) x (D, N)); the (B, N) copy then makes each query's partition run along a row,
        # ~2.5x faster than down a column.
        scores = np.ascontiguousarray((keys @ queries.T).T)
        return [
            top_rows(scores[j], k, mask, in_place=True)
            for j, (k, mask) in enumerate(zip(ks, allowed, strict=True))
        ]


def top_rows(scores: np.ndarray, k: int, allowed: np.ndarray | None, in_place: bool = False) -> np.ndarray:
    """Rows of the best k scores where `allowed` (bool, None = all), in no particular order.
    `in_place`: the caller's `scores` may be overwritten (saves a copy per query)."""
    n = len(scores)
    if allowed is not None:
        if in_place:
            scores[~allowed] = -np.inf
        else:
            scores = np.where(allowed, scores, -np.inf)
        k = min(k, int(allowed.sum()))
    if k <= 0:
        return np.zeros(0, np.int64)
    if k >= n:
        return np.argsort(-scores, kind="stable")[:k]
    return np.argpartition(scores, n - k)[n - k :]
