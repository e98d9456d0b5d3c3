"""Backends that run a trained model for serving: torch (the run itself) or ONNX Runtime.

Both speak numpy and are built only on the public methods of `NewsRecommender` (`encode_news`,
`encode_user_state`, `score`, `score_keys`, `score_queries`, `attach`), so a model change needs
no change here:

- `encode_news(inputs)`: per-news inputs (ID row, category, subcategory, text vector, graph
  vector) -> (N, D)
- `encode_users(clicked (B, H, D), mask (B, H), users (B,))` -> user state (B, ...), cacheable
- `score(state, candidates (B, K, D), popularity (B, K, F), history_length (B, 1))` -> (B, K)
  logits; the popularity features (`mind/popularity.py` FEATURES) and the users' history lengths
  are given for, and only for, a model trained with popularity (its head adds its term)
- `keys(vectors (N, D))` -> (N, D') and `queries(state)` -> (B, D'), where the model's score is
  their inner product (`inner_product` True): what retrieval indexes and searches with. A model
  whose score is no inner product (candidate attention) has neither; retrieval then scores
  every news through `score`.
- `popularity_keys(features (N, F))` -> (N,) and `popularity_queries(history_length (B, 1))` ->
  (B,), for a model with popularity (`popularity_product` True): the popularity term of `score`
  is their product (`PopularityHead.news_term` and `user_weight`), so retrieval searches it as
  one more column of the keys. An export made before these graphs has neither; retrieval then
  scores every news through `score`.

The ONNX graphs are exported from small wrapper modules around the same methods (export.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

NEWS_INPUTS = ("id_index", "category", "subcategory", "text", "text_present", "graph_vector", "graph_present")
USER_INPUTS = ("clicked", "mask", "users")
SCORE_INPUTS = ("user_state", "candidates")
POPULARITY_INPUTS = ("popularity", "history_length")  # the scorer's, with a popularity head
KEYS_INPUTS = ("vectors",)
QUERIES_INPUTS = ("user_state",)
POPULARITY_KEYS_INPUTS = ("popularity",)
POPULARITY_QUERIES_INPUTS = ("history_length",)


@dataclass
class NewsInputs:
    """Per-news inputs of the news encoder for N news, as numpy arrays (see model/features.py)."""

    id_index: np.ndarray  # int64 [N]: row of the news-ID table, 0 = unseen
    category: np.ndarray  # int64 [N]
    subcategory: np.ndarray  # int64 [N]
    text: np.ndarray | None = None  # float32 [N, T]
    text_present: np.ndarray | None = None  # bool [N]
    # The GNN output of each news' graph node, computed once at export (the graph is fixed after
    # training); graph_present False = off the graph, the model's learned "no graph" vector.
    graph_vector: np.ndarray | None = None  # float32 [N, D]
    graph_present: np.ndarray | None = None  # bool [N]

    def __len__(self) -> int:
        return int(self.id_index.shape[0])

    def rows(self, part: slice) -> NewsInputs:
        return NewsInputs(
            self.id_index[part],
            self.category[part],
            self.subcategory[part],
            None if self.text is None else self.text[part],
            None if self.text_present is None else self.text_present[part],
            None if self.graph_vector is None else self.graph_vector[part],
            None if self.graph_present is None else self.graph_present[part],
        )

    def as_dict(self) -> dict[str, np.ndarray]:
        out = {"id_index": self.id_index, "category": self.category, "subcategory": self.subcategory}
        if self.text is not None:
            out["text"] = self.text.astype(np.float32)
            present = self.text_present if self.text_present is not None else np.ones(len(self), bool)
            out["text_present"] = present.astype(bool)
        if self.graph_vector is not None:
            out["graph_vector"] = self.graph_vector.astype(np.float32)
            present = self.graph_present if self.graph_present is not None else np.ones(len(self), bool)
            out["graph_present"] = present.astype(bool)
        return out


def encode_news_with(model: Any, feed: dict[str, Any]) -> Any:
    """News vectors (N, D) of per-news input tensors named as in NEWS_INPUTS, through `attach` and
    `encode_news` only. Shared by the torch backend and the traced ONNX news encoder so both run
    the same code: graph vectors stand in for the GNN (`GraphModality.cache(vectors)`), news i
    being node i, or no node (-1) when off the graph."""
    import torch  # ONNX serving runs without torch

    from newsrec_cli.model.features import NO_GRAPH_NODE, NewsFeatures  # torch: ONNX serving runs without it

    n = feed["id_index"].shape[0]
    index = torch.arange(n, device=feed["id_index"].device)
    graph = model.news_encoder.graph
    nodes = None
    if graph is not None:
        if "graph_vector" not in feed:
            raise ValueError("the model has a graph modality but the inputs have no graph vectors")
        nodes = torch.where(feed["graph_present"], index, torch.full_like(index, NO_GRAPH_NODE))
        graph.cache(feed["graph_vector"])
    try:
        model.attach(
            NewsFeatures(
                feed["id_index"],
                feed["category"],
                feed["subcategory"],
                feed.get("text"),
                feed.get("text_present"),
                nodes,
            )
        )
        return model.encode_news(index)
    finally:
        if graph is not None:
            graph.clear_cache()


class Backend(Protocol):
    name: str
    inner_product: bool
    popularity_product: bool

    def encode_news(self, inputs: NewsInputs) -> np.ndarray: ...

    def encode_users(self, clicked: np.ndarray, mask: np.ndarray, users: np.ndarray) -> np.ndarray: ...

    def score(
        self,
        state: np.ndarray,
        candidates: np.ndarray,
        popularity: np.ndarray | None = None,
        history_length: np.ndarray | None = None,
    ) -> np.ndarray: ...

    def keys(self, vectors: np.ndarray) -> np.ndarray: ...

    def queries(self, state: np.ndarray) -> np.ndarray: ...

    def popularity_keys(self, features: np.ndarray) -> np.ndarray: ...

    def popularity_queries(self, history_length: np.ndarray) -> np.ndarray: ...


CHUNK = 4096  # news per news-encoder call


def cap_threads(threads: int) -> None:
    """At most `threads` compute threads in this process for numpy's BLAS and OpenMP (threadpoolctl;
    torch and onnxruntime are capped by their backends). Uncapped, every concurrent request's
    matrix product starts a thread per core and they fight over the cores: 16 clients then got
    0.4x the throughput of one (benchmarks/bench_serve.py, retrieval over 51k news)."""
    from threadpoolctl import threadpool_limits  # serve extra: export runs without it

    threadpool_limits(limits=threads)  # process-wide from here on, not a context


class TorchBackend:
    """The trained torch model. `encode_news` re-attaches per-news inputs, so it holds a lock."""

    name = "torch"

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import torch  # ONNX serving runs without torch

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.inner_product = bool(model.inner_product_score)
        self.popularity_product = self.inner_product and getattr(model, "popularity", None) is not None
        self.lock = threading.Lock()  # one call at a time; the explainer shares it (explain.py)

    def _t(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def encode_news(self, inputs: NewsInputs) -> np.ndarray:
        torch = self.torch
        out = []
        with self.lock, torch.no_grad():
            for start in range(0, len(inputs), CHUNK):
                part = inputs.rows(slice(start, start + CHUNK))
                feed = {k: self._t(v) for k, v in part.as_dict().items()}
                out.append(encode_news_with(self.model, feed).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def encode_users(self, clicked: np.ndarray, mask: np.ndarray, users: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            state = self.model.encode_user_state(self._t(clicked), self._t(mask), self._t(users))
        return state.float().cpu().numpy()

    def score(
        self,
        state: np.ndarray,
        candidates: np.ndarray,
        popularity: np.ndarray | None = None,
        history_length: np.ndarray | None = None,
    ) -> np.ndarray:
        from newsrec_cli.model.popularity import add_to_logits  # torch: ONNX serving runs without it

        with self.torch.no_grad():
            logits = self.model.score(self._t(state), self._t(candidates))
            if popularity is not None and history_length is not None:
                extra = {"popularity": self._t(popularity), "history_length": self._t(history_length)}
                logits = add_to_logits(self.model, logits, extra)
        return logits.float().cpu().numpy()

    def keys(self, vectors: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.score_keys(self._t(vectors)).float().cpu().numpy()

    def queries(self, state: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.score_queries(self._t(state)).float().cpu().numpy()

    def popularity_keys(self, features: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.popularity.news_term(self._t(features)).float().cpu().numpy()

    def popularity_queries(self, history_length: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.popularity.user_weight(self._t(history_length)).float().cpu().numpy()[:, 0]


class OnnxBackend:
    """ONNX Runtime sessions of an export (fp32 or int8 graphs). `files` maps each part (news,
    user, score, and keys and queries for a model whose score is an inner product) to its graph."""

    def __init__(self, files: dict[str, Path | None], name: str = "onnx", threads: int = 1) -> None:
        import onnxruntime as ort  # optional extra: torch serves without it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.name = name
        self.sessions = {
            part: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            if path is not None
            else None
            for part, path in files.items()
        }
        self.inputs = {
            part: {i.name for i in s.get_inputs()} if s is not None else set()
            for part, s in self.sessions.items()
        }
        self.inner_product = (
            self.sessions.get("keys") is not None and self.sessions.get("queries") is not None
        )
        self.popularity_product = (
            self.inner_product
            and self.sessions.get("popularity_keys") is not None
            and self.sessions.get("popularity_queries") is not None
        )

    def _run(self, part: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        session = self.sessions[part]
        if session is None:
            raise RuntimeError(f"this export has no {part} graph")
        wanted = self.inputs[part]
        return session.run(None, {k: v for k, v in feed.items() if k in wanted})[0]

    def encode_news(self, inputs: NewsInputs) -> np.ndarray:
        out = [
            self._run("news", inputs.rows(slice(s, s + CHUNK)).as_dict())
            for s in range(0, len(inputs), CHUNK)
        ]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def encode_users(self, clicked: np.ndarray, mask: np.ndarray, users: np.ndarray) -> np.ndarray:
        feed = {
            "clicked": np.ascontiguousarray(clicked, dtype=np.float32),
            "mask": mask.astype(bool),
            "users": users.astype(np.int64),
        }
        return self._run("user", feed)

    def score(
        self,
        state: np.ndarray,
        candidates: np.ndarray,
        popularity: np.ndarray | None = None,
        history_length: np.ndarray | None = None,
    ) -> np.ndarray:
        feed = {
            "user_state": np.ascontiguousarray(state, dtype=np.float32),
            "candidates": np.ascontiguousarray(candidates, dtype=np.float32),
        }
        if popularity is not None and history_length is not None:
            feed["popularity"] = np.ascontiguousarray(popularity, dtype=np.float32)
            feed["history_length"] = np.ascontiguousarray(history_length, dtype=np.float32)
        return self._run("score", feed)

    def keys(self, vectors: np.ndarray) -> np.ndarray:
        return self._run("keys", {"vectors": np.ascontiguousarray(vectors, dtype=np.float32)})

    def queries(self, state: np.ndarray) -> np.ndarray:
        return self._run("queries", {"user_state": np.ascontiguousarray(state, dtype=np.float32)})

    def popularity_keys(self, features: np.ndarray) -> np.ndarray:
        return self._run("popularity_keys", {"popularity": np.ascontiguousarray(features, dtype=np.float32)})

    def popularity_queries(self, history_length: np.ndarray) -> np.ndarray:
        feed = {"history_length": np.ascontiguousarray(history_length, dtype=np.float32)}
        return self._run("popularity_queries", feed)[:, 0]
