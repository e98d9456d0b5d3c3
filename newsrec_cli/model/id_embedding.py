"""The news-ID modality: a vector per training news, one shared "unseen" vector for the rest."""

from __future__ import annotations

import torch
from torch import Tensor, nn

UNSEEN = 0


class NewsIdEmbedding(nn.Module):
    r"""A learnable vector per news ID seen in training; fresh news share the "unseen" bucket.

    .. math::
        e = E[\,j\,], \qquad j = \begin{cases} 0 & \text{news not in training, or dropped} \\
        \mathrm{row}(\text{news}) & \text{otherwise} \end{cases}

    Most test news are fresh, so a random, never-trained vector must not reach the score. Row 0
    is trained as the vector of "a news I do not know": in training each news of a batch is
    sent to it with probability ``id_dropout``, so the model learns to score unknown IDs from
    the other modalities.

    Args:
        num_ids: table size, including the unseen bucket at row 0.
        dim: vector size.
        id_dropout: probability, in training, of replacing a known ID by the bucket.

    Shapes:
        - ids: (N,) int64 rows (0 = unseen)
        - output: (N, D)
    """

    def __init__(self, num_ids: int, dim: int, id_dropout: float = 0.0) -> None:
        super().__init__()
        self.id_dropout = id_dropout
        self.embedding = nn.Embedding(num_ids, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Small: at the start the content modalities dominate and IDs earn their weight.
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        if self.training and self.id_dropout > 0:
            drop = torch.rand(ids.shape, device=ids.device) < self.id_dropout
            ids = ids.masked_fill(drop, UNSEEN)
        return self.embedding(ids)

    def __repr__(self) -> str:
        n, d = self.embedding.weight.shape
        return f"{self.__class__.__name__}(num_ids={n}, dim={d}, id_dropout={self.id_dropout})"
