"""The text modality's projection: centred on the mean vector of the run's news, projected, then
LayerNorm; the centre is saved with the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import hashing_store, synth

from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.mind import load_dataset
from newsrec_cli.model.text_projection import TextProjection
from newsrec_cli.runs.loading import load_run
from newsrec_cli.settings import TrainSettings
from newsrec_cli.train import train


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_the_centre_is_subtracted_and_rows_are_layer_normed(kind: str) -> None:
    torch.manual_seed(0)
    vectors = torch.randn(50, 12) + 5.0  # a large common direction, as sentence vectors have
    projection = TextProjection(12, 8, kind).eval()
    projection.set_center(vectors)
    torch.testing.assert_close(projection.center, vectors.mean(dim=0))
    out = projection(vectors)
    assert out.shape == (50, 8)
    # LayerNorm at its initialisation: every row has mean 0 and (biased) variance 1.
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(50), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.var(dim=1, unbiased=False), torch.ones(50), atol=1e-2, rtol=0
    )  # less LN eps
    # Only x - centre reaches the layers: shifting inputs and centre together changes nothing.
    shifted = TextProjection(12, 8, kind).eval()
    shifted.load_state_dict(projection.state_dict())
    shifted.set_center(vectors + 3.0)
    torch.testing.assert_close(shifted(vectors + 3.0), out, atol=1e-5, rtol=1e-5)
    # The centre itself maps to what a zero input maps to without centring.
    net_of_zero = projection.net(torch.zeros(1, 12))
    torch.testing.assert_close(
        projection(vectors.mean(dim=0, keepdim=True)), net_of_zero, atol=1e-5, rtol=1e-5
    )


def test_the_centre_is_a_saved_buffer_and_a_bad_kind_is_refused() -> None:
    projection = TextProjection(4, 2)
    projection.set_center(torch.ones(3, 4) * 2)
    state = projection.state_dict()
    assert torch.equal(state["center"], torch.full((4,), 2.0))
    assert not any(p is projection.center for p in projection.parameters())  # never trained
    with pytest.raises(ValueError, match="TextProjection: kind must be linear or mlp"):
        TextProjection(4, 2, "deep")  # type: ignore[arg-type]


def test_a_trained_runs_centre_is_the_mean_of_all_its_news(tmp_path: Path) -> None:
    data = synth(tmp_path, news=120, users=60)
    store = hashing_store(data, tmp_path / "store")
    settings = TrainSettings(dim=8, heads=2, max_steps=1, threads=1, device="cpu")
    train(data, tmp_path / "run", store=store, settings=settings)
    center = load_run(tmp_path / "run", device="cpu").model.news_encoder.text.center.numpy()
    opened = EmbeddingStore.open(store)
    news = load_dataset(data, behaviors=False).news.ids  # every news of every split, not only training's
    all_news = np.stack([opened.vectors[opened.row_of(i)] for i in news]).mean(axis=0)
    np.testing.assert_allclose(center, all_news, rtol=1e-5, atol=1e-6)
