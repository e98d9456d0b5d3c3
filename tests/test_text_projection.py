"""The text modality's projection: centred on the mean vector of the run's news, projected, then
LayerNorm; the centre is saved with the weights."""

from __future__ import annotations

import pytest
import torch

from newsrec_cli.model.text_projection import TextProjection


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
