"""Retrieval asks the model: the keys and queries come from the model (torch) or its exported
keys.onnx / queries.onnx graphs (ONNX Runtime), never from a fit of the scores, and top k over
them is the model's own top k, for every head.

Hand-built tiny models (no training), exported for real with `export_graphs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("onnxruntime", reason="the serve extra is not installed")

from newsrec_cli.mind import Vocab  # noqa: E402
from newsrec_cli.model.assembly import build_model  # noqa: E402
from newsrec_cli.model.features import NewsFeatures  # noqa: E402
from newsrec_cli.model.scorer import ScoringHead  # noqa: E402
from newsrec_cli.runs.context import (
    DataContext,  # noqa: E402
    Vocabularies,  # noqa: E402
)
from newsrec_cli.serve.backends import OnnxBackend, TorchBackend  # noqa: E402
from newsrec_cli.serve.export import RETRIEVAL_GRAPHS, export_graphs, graph_files, inputs_from_features  # noqa: E402
from newsrec_cli.serve.index import Retriever  # noqa: E402
from newsrec_cli.settings import GraphSettings, TrainSettings  # noqa: E402

N = 400  # news


class WeightedDotHead(ScoringHead):
    """A head of another form, as a later model may bring: a learned weight per feature inside the
    product, s = c * sum_d w_d u_d n_d / D on standardised vectors. Still an inner product, so it
    says so through its own keys and queries."""

    def __init__(self, dim: int) -> None:
        super().__init__("dot", dim)
        self.feature = nn.Parameter(torch.linspace(0.2, 3.0, dim))

    def similarity(self, user: Tensor, news: Tensor) -> Tensor:
        return super().similarity(user * self.feature, news)

    def pairwise(self, user: Tensor, news: Tensor) -> Tensor:
        return super().pairwise(user * self.feature, news)

    def queries(self, user: Tensor) -> Tensor:
        from newsrec_cli.model.scorer import _standardise

        return _standardise((user * self.feature).float()) * (self.scale.float() / user.shape[-1])


def tiny_model(settings: TrainSettings, head: str = "builtin") -> tuple[nn.Module, NewsFeatures]:
    rng = np.random.default_rng(0)
    ids = [f"N{i}" for i in range(N)]
    text = np.concatenate([np.zeros((1, 24), np.float32), rng.normal(size=(N, 24)).astype(np.float32)])
    features = NewsFeatures(
        id_index=torch.tensor([0] + [i + 1 if i < N // 2 else 0 for i in range(N)]),
        category=torch.tensor([0] + [1 + i % 2 for i in range(N)]),
        subcategory=torch.tensor([0] + [1 + i % 3 for i in range(N)]),
        text=torch.from_numpy(text),
        text_present=torch.ones(N + 1, dtype=torch.bool),
    )
    vocabs = Vocabularies(
        news=Vocab(ids),
        ids=Vocab(ids[: N // 2]),
        categories=Vocab(["a", "b"]),
        subcategories=Vocab(["x", "y", "z"]),
    )
    torch.manual_seed(0)
    model = build_model(settings, GraphSettings(), DataContext(vocabs=vocabs, features=features, text_dim=24))
    if head == "weighted":
        model.scorer = WeightedDotHead(settings.dim)
    with torch.no_grad():  # move every weight off its initial value, so each part of the score counts
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval(), features


CASES = {
    "dot + prior": (TrainSettings(dim=16, heads=2, scoring="dot"), "builtin"),
    "cosine + prior": (TrainSettings(dim=16, heads=2, scoring="cosine"), "builtin"),
    "dot, no prior": (TrainSettings(dim=16, heads=2, scoring="dot", content_prior=False), "builtin"),
    "weighted head": (TrainSettings(dim=16, heads=2, scoring="dot"), "weighted"),
    "candidate attention": (TrainSettings(dim=16, heads=2, user_encoder="candidate"), "builtin"),
}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("case", list(CASES))
def test_top_k_of_the_model_keys_equals_scoring_every_news(case: str, backend: str, tmp_path: Path) -> None:
    settings, head = CASES[case]
    model, features = tiny_model(settings, head)
    inputs = inputs_from_features(features).rows(slice(1, None))
    torch_backend = TorchBackend(model)
    if backend == "onnx":
        export_graphs(model, inputs, tmp_path, 17)
        names = {"news": "news_encoder.onnx", "user": "user_encoder.onnx", "score": "scorer.onnx"}
        if model.inner_product_score:
            names |= RETRIEVAL_GRAPHS
        engine_backend = OnnxBackend(graph_files(tmp_path, names))
    else:
        engine_backend = torch_backend
    vectors = engine_backend.encode_news(inputs)
    retriever = Retriever(engine_backend)
    retriever.rebuild(vectors)
    inner = case != "candidate attention"
    assert retriever.inner_product is inner and engine_backend.inner_product is inner
    assert retriever.method == ("exact" if inner else "exact-model")
    rng = np.random.default_rng(1)
    for _ in range(3):
        clicked = vectors[rng.choice(N, 6, replace=False)][None]
        state = engine_backend.encode_users(clicked, np.ones((1, 6), bool), np.zeros(1, np.int64))
        every = torch_backend.score(state, vectors[None])[0]  # the torch model scores every news
        assert every.std() > 0.05  # a constant model would pass trivially
        found = retriever.search(engine_backend, state, vectors, 10, None)
        assert set(found.tolist()) == set(np.argsort(-every, kind="stable")[:10].tolist())
        if inner:  # the keys and query are the model's: their product is its logit
            np.testing.assert_allclose(retriever.keys @ engine_backend.queries(state)[0], every, atol=1e-4)
            allowed = np.ones(N, bool)
            allowed[found[:3]] = False  # excluded (the user's history): the next best instead
            again = retriever.search(engine_backend, state, vectors, 10, allowed)
            best = np.argsort(-np.where(allowed, every, -np.inf), kind="stable")[:10]
            assert set(again.tolist()) == set(best.tolist())


def test_hnsw_index_over_the_model_keys_finds_the_model_top_k() -> None:
    model, features = tiny_model(CASES["weighted head"][0], "weighted")
    backend = TorchBackend(model)
    vectors = backend.encode_news(inputs_from_features(features).rows(slice(1, None)))
    retriever = Retriever(backend, ann_threshold=1)
    retriever.rebuild(vectors)
    assert retriever.method == "usearch-hnsw"
    state = backend.encode_users(vectors[:5][None], np.ones((1, 5), bool), np.zeros(1, np.int64))
    every = backend.score(state, vectors[None])[0]
    found = retriever.search(backend, state, vectors, 10, None)
    assert len(set(found.tolist()) & set(np.argsort(-every)[:10].tolist())) >= 9
    # an update changes what is found: the news made the best match of the query is found first
    best = np.argsort(-every)[0]
    worst = int(np.argsort(every)[0])
    retriever.update(np.asarray([worst]), vectors[best][None], len(vectors))
    assert worst in retriever.search(backend, state, vectors, 2, None).tolist()


class _IdentityBackend:
    """Keys and queries are the vectors themselves: the search alone is under test."""

    inner_product = True

    def keys(self, vectors: np.ndarray) -> np.ndarray:
        return vectors

    def queries(self, state: np.ndarray) -> np.ndarray:
        return state


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_search_is_the_exact_top_k_with_exclusions(threads: int) -> None:
    """The batched search (one onnxruntime product + TopK per batch) returns, for every query,
    exactly the best k of the news it may return: none of its history, none filtered by `since`,
    all of them when fewer than k are left, at every batch size."""
    from newsrec_cli.serve.index import top_rows

    rng = np.random.default_rng(3)
    backend = _IdentityBackend()
    for trial in range(60):
        n, dim, batch = int(rng.integers(1, 2500)), 8, int(rng.integers(1, 18))
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        retriever = Retriever(backend, batch_threads=threads)
        retriever.rebuild(vectors)
        states = [rng.standard_normal((1, dim)).astype(np.float32) for _ in range(batch)]
        ks = [int(rng.integers(1, 40)) for _ in range(batch)]
        masks: list[np.ndarray | None] = []
        for _ in range(batch):
            kind = rng.random()
            if kind < 0.3:
                masks.append(None)
            elif kind < 0.7:  # a history
                mask = np.ones(n, bool)
                mask[rng.choice(n, min(n, int(rng.integers(0, 60))), replace=False)] = False
                masks.append(mask)
            else:  # `since`: most news filtered out
                masks.append(rng.random(n) < rng.random())
        found = retriever.search_many(backend, states, vectors, ks, masks)
        for j in range(batch):
            scores = vectors @ states[j][0]
            expected = top_rows(scores.copy(), ks[j], masks[j])
            assert len(found[j]) == len(expected), (trial, j)
            np.testing.assert_allclose(np.sort(scores[found[j]]), np.sort(scores[expected]), atol=1e-5)
            if masks[j] is not None:
                assert masks[j][found[j]].all(), (trial, j)


def test_serve_backend_auto_picks_onnx_for_an_export_and_torch_for_a_run(tmp_path: Path) -> None:
    from newsrec_cli.serve.engine import default_backend
    from newsrec_cli.serve.export import MANIFEST

    run, export, int8_only = tmp_path / "run", tmp_path / "export", tmp_path / "int8"
    for folder in (run, export, int8_only):
        folder.mkdir()
    (run / "config.json").write_text("{}")
    for folder in (export, int8_only):
        (folder / MANIFEST).write_text("{}")
        (folder / "news_encoder.int8.onnx").write_bytes(b"")
    (export / "news_encoder.onnx").write_bytes(b"")
    assert [default_backend(f) for f in (run, export, int8_only)] == ["torch", "onnx", "int8"]
