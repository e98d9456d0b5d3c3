"""The text modality: a frozen sentence vector projected into the model's space."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class TextProjection(nn.Module):
    r"""Projects frozen text vectors (e.g. all-MiniLM-L6-v2, 384-d) to the model size.

    .. math::
        \text{linear:}\ t = \mathrm{LN}(W\, \mathrm{Dropout}(x - \mu) + b), \qquad
        \text{mlp:}\ t = \mathrm{LN}\big(W_2\, \mathrm{Dropout}(\mathrm{GELU}(W_1 (x - \mu) + b_1)) + b_2\big)

    The text encoder itself is not trained (vectors come precomputed from the store); the
    projection is what adapts them to clicks. :math:`\mu` is the mean text vector of all
    news the run knows (set once with :meth:`set_center`, saved with the weights): sentence vectors
    share a large common direction, which would otherwise make every news look alike at the
    start and push initial scores towards saturation.

    Args:
        in_dim: size T of the stored vectors.
        dim: output size D.
        kind: "linear" or "mlp" (hidden size 2D).
        dropout: dropout inside the MLP.
        input_dropout: dropout on the (centred) text vector before the projection.

    Shapes:
        - x: (N, T)
        - output: (N, D)
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        kind: Literal["linear", "mlp"] = "linear",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.in_dim = in_dim
        # Dropout on the frozen vector's features: with a few thousand clicks, a 384 x D projection
        # otherwise learns the training days' topics by heart.
        self.input_dropout = nn.Dropout(input_dropout)
        if kind == "linear":
            self.net = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        elif kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(in_dim, 2 * dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(2 * dim, dim),
                nn.LayerNorm(dim),
            )
        else:
            raise ValueError(f"{self.__class__.__name__}: kind must be linear or mlp, not {kind!r}")
        self.register_buffer("center", torch.zeros(in_dim))

    @torch.no_grad()
    def set_center(self, vectors: Tensor) -> None:
        """Subtract the mean of these (training) vectors from every input from now on."""
        self.center.copy_(vectors.float().mean(dim=0))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.input_dropout(x - self.center))

    def __repr__(self) -> str:
        first = self.net[0]
        return f"{self.__class__.__name__}({first.in_features} -> {self.net[-1].normalized_shape[0]}, {self.kind})"
