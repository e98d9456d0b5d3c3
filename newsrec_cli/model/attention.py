"""Additive attention pooling (Bahdanau-style), the last step of NRMS's user encoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdditiveAttention(nn.Module):
    r"""Pools a padded sequence of vectors into one with a learned query.

    .. math::
        a_i = q^\top \tanh(W h_i + b), \qquad
        \alpha = \mathrm{softmax}_{i:\,m_i}(a), \qquad
        u = \sum_i \alpha_i h_i

    Padded positions (:math:`m_i` false) get no weight. A row with no valid position would be
    0/0; callers replace such rows (the user encoder substitutes its "empty history" vector), and
    here they receive uniform weights so nothing becomes NaN.

    Args:
        dim: size of the input vectors.
        hidden: size of the attention projection (NRMS uses 200).

    Shapes:
        - x: (B, L, D), mask: (B, L) bool, True = valid
        - output: (B, D) and weights (B, L)
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.query = nn.Parameter(torch.empty(hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()
        nn.init.normal_(self.query, std=0.02)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        B, L, D = x.shape  # batch, sequence, dim
        scores = torch.tanh(self.proj(x)) @ self.query  # (B, L)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores.float(), dim=-1).to(x.dtype)  # (B, L)
        return torch.einsum("bl,bld->bd", weights, x), weights

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.proj.in_features}, hidden={self.proj.out_features})"
