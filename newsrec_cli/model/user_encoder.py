"""The user encoder: a user is the news they clicked (NRMS), optionally plus a user-ID vector."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from newsrec_cli.model.attention import AdditiveAttention
from newsrec_cli.model.self_attention import MultiHeadSelfAttention


def init_user_tables(empty: nn.Parameter, user_embedding: nn.Embedding | None) -> None:
    """The "empty history" vector and the user-ID table start small; row 0 (unknown user) adds nothing."""
    nn.init.normal_(empty, std=0.02)
    if user_embedding is not None:
        nn.init.normal_(user_embedding.weight, std=0.02)
        with torch.no_grad():
            user_embedding.weight[0].zero_()


def safe_history_mask(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(B, H) mask -> (B, H) mask where a history without a click keeps its first slot, and the
    (B,) rows without a click. Those rows attend to their first (padding) slot so that no softmax
    is 0/0; each encoder then puts its learned "empty history" vector in their place."""
    empty = ~mask.any(dim=1)  # (B,)
    first = torch.arange(mask.shape[1], device=mask.device) == 0  # (H,)
    return mask | (empty[:, None] & first[None, :]), empty


class UserEncoder(nn.Module):
    r"""NRMS user encoder: self-attention over the clicked news, then additive attention pooling.

    .. math::
        H = \mathrm{LN}\big(X + \mathrm{Dropout}(\mathrm{MHSA}(X))\big), \qquad
        u = \mathrm{AdditiveAttention}(H) \;[+\, E_{\mathrm{user}}[\mathrm{id}]]

    :math:`X` holds the vectors of the last clicked news, padding masked. A user with no click
    at all gets a learned "empty history" vector :math:`u_\varnothing` instead of 0/0. With
    ``num_users`` set, a user-ID embedding over the training users is added; index 0 (a user
    not seen in training) adds nothing, so new users are their history alone. The user state is
    the user vector itself; :meth:`for_candidates` gives it to every candidate.

    Args:
        dim: size of news and user vectors.
        heads: self-attention heads (``dim`` must be divisible by it).
        dropout: dropout on the clicked-news vectors and the attention output.
        num_users: size of the user-ID table including index 0, or None for no user IDs.

    Shapes:
        - clicked: (B, H, D), mask: (B, H) bool, users: (B,) or None
        - output: (B, D); for_candidates: (B, D), news (B, K, D) -> (B, K, D)
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.2, num_users: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.drop = nn.Dropout(dropout)
        self.attention = MultiHeadSelfAttention(dim, heads, dropout=0.0)
        self.norm = nn.LayerNorm(dim)
        self.pool = AdditiveAttention(dim, hidden=dim)
        self.empty = nn.Parameter(torch.zeros(dim))
        self.user_embedding = nn.Embedding(num_users, dim, padding_idx=0) if num_users else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_user_tables(self.empty, self.user_embedding)

    def forward(self, clicked: Tensor, mask: Tensor, users: Tensor | None = None) -> Tensor:
        B, H, D = clicked.shape  # batch, history, dim
        safe_mask, empty = safe_history_mask(mask)  # empty rows: replaced by `self.empty` below
        x = self.drop(clicked)
        h = self.norm(x + self.drop(self.attention(x, safe_mask)))  # (B, H, D)
        user, _ = self.pool(h, safe_mask)  # (B, D)
        user = torch.where(empty[:, None], self.empty.to(user.dtype).expand(B, D), user)
        if self.user_embedding is not None and users is not None:
            user = user + self.user_embedding(users)
        return user

    def history_weights(self, clicked: Tensor, mask: Tensor) -> Tensor:
        """The additive-attention weight of each clicked news in the user vector, (B, H); rows
        without a click get zeros (their user is the "empty history" vector)."""
        safe_mask, empty = safe_history_mask(mask)
        h = self.norm(clicked + self.attention(clicked, safe_mask))  # as forward, in eval mode
        _, weights = self.pool(h, safe_mask)  # (B, H)
        return torch.where(empty[:, None], torch.zeros_like(weights), weights)

    def summary(self, state: Tensor) -> Tensor:
        """The candidate-free user vector, (B, D)."""
        return state

    def for_candidates(self, state: Tensor, news: Tensor) -> tuple[Tensor, None]:
        B, K, D = news.shape  # batch, candidates, dim
        return state[:, None, :].expand(B, K, D), None
