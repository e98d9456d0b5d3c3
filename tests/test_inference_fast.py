"""Scoring through per-news keys and per-user queries equals scoring each (user, news) pair.

Small synthetic data, hashing text vectors, freshly built models with their parameters moved off
their initial values; the reference scores every impression on its own with `model.score`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_helpers import graph, hashing_store, synth

from newsrec_cli.mind import load_dataset
from newsrec_cli.model.assembly import build_model
from newsrec_cli.model.inference import graph_cached, score_with_model
from newsrec_cli.model.inputs import recent_history
from newsrec_cli.runs.context import prepare_context
from newsrec_cli.settings import GraphSettings, TrainSettings

HISTORY = 12  # longer than most synthetic histories: batches are cut to different widths


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("inference_fast")
    data = synth(root, news=120, users=60)
    return data, hashing_store(data, root / "store"), graph(data, root / "graph")


def _model(synthetic: tuple[Path, Path, Path], with_graph: bool, **settings: Any) -> tuple[Any, Any]:
    data, store, graph_dir = synthetic
    torch.manual_seed(0)
    fixed = {
        "dim": 16,
        "heads": 2,
        "history": HISTORY,
        "device": "cpu",
        "threads": 1,
        "use_graph": with_graph,
    }
    train_settings = TrainSettings(**{**fixed, **settings})
    dataset = load_dataset(data)
    train_imps, valid_imps, _ = dataset.train_valid("auto", None, 0.1, 0)
    context, _ = prepare_context(
        train_settings, dataset, train_imps, valid_imps, store=store, graph=graph_dir if with_graph else None
    )
    model = build_model(train_settings, GraphSettings(), context)
    with torch.no_grad():  # off the initial values: scales, prior weight, attention all matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.eval()
    return model, valid_imps


def _reference(model: Any, imps: Any) -> np.ndarray:
    """Each impression alone: its user state from its history, then `score` of its candidates."""
    out = np.empty(len(imps.candidates), dtype=np.float32)
    with torch.no_grad(), graph_cached(model):
        for i in range(len(imps)):
            hist, mask = recent_history(imps, np.array([i]), HISTORY)
            state = model.encode_user_state(model.encode_news(torch.from_numpy(hist)), torch.from_numpy(mask))
            lo, hi = imps.candidate_offsets[i], imps.candidate_offsets[i + 1]
            cands = torch.from_numpy(np.asarray(imps.candidates[lo:hi], dtype=np.int64))
            out[lo:hi] = model.score(state, model.encode_news(cands)[None])[0].numpy()
    return out


@pytest.mark.parametrize(
    ("settings", "with_graph", "inner"),
    [
        ({"scoring": "dot", "content_prior": True}, False, True),
        ({"scoring": "cosine", "content_prior": False}, False, True),
        ({"scoring": "dot", "content_prior": True}, True, True),
        ({"user_encoder": "candidate", "scoring": "dot", "content_prior": True}, False, False),
    ],
    ids=["nrms-dot-prior", "nrms-cosine", "graph", "candidate-fallback"],
)
def test_fast_scores_equal_per_pair_scores(
    synthetic: tuple[Path, Path, Path], settings: dict[str, Any], with_graph: bool, inner: bool
) -> None:
    model, imps = _model(synthetic, with_graph, **settings)
    assert model.inner_product_score is inner
    reference = _reference(model, imps)
    tolerance = 1e-5 * max(1.0, float(np.abs(reference).max()))
    assert np.abs(reference).max() > 0.1  # real logits, not a degenerate all-zero model
    assert len(np.unique(reference)) > len(reference) // 2
    for path in (True, False):
        timings: dict[str, float] = {}
        # small batches: several batches of states, cut to different history lengths
        got = score_with_model(
            model, imps, history=HISTORY, batch_size=4, inner_product=path, timings=timings
        )
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=tolerance)
        assert set(timings) == {"news", "users", "scores"}


def test_queries_and_keys_give_pairwise_scores(synthetic: tuple[Path, Path, Path]) -> None:
    model, _ = _model(synthetic, False, scoring="dot", content_prior=True)
    torch.manual_seed(1)
    news = model.encode_news(torch.arange(1, 30))
    clicked = model.encode_news(torch.arange(1, 2 * HISTORY + 1)).view(2, HISTORY, -1)
    mask = torch.arange(HISTORY)[None, :] < torch.tensor([[HISTORY], [2]])
    with torch.no_grad():
        users = model.encode_user_state(clicked, mask)
        pairs = model.score(users, news.unsqueeze(0).expand(2, *news.shape))  # every user, every news
        inner = model.score_queries(users) @ model.score_keys(news).T
    torch.testing.assert_close(inner, pairs, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="candidate-aware"):
        _model(synthetic, False, user_encoder="candidate")[0].score_queries(users)
