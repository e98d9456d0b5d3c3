"""A candidate-aware user encoder: each candidate attends over the clicked news."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from newsrec_cli.model.self_attention import MultiHeadSelfAttention
from newsrec_cli.model.user_encoder import init_user_tables


class CandidateUserEncoder(nn.Module):
    r"""The user as seen by one candidate: attention of the candidate over the clicked news.

    .. math::
        H = \mathrm{LN}\big(X + \mathrm{Dropout}(\mathrm{MHSA}(X))\big), \qquad
        \alpha_{k} = \mathrm{softmax}_{i\,:\,m_i}\Big(\frac{(W_q c_k)^\top (W_k h_i)}{\sqrt{D}}\Big),
        \qquad u_k = \sum_i \alpha_{k,i}\, h_i \;[+\, E_{\mathrm{user}}[\mathrm{id}]]

    With a short history and fresh candidates, the clicks that resemble the candidate say more
    than a fixed summary of all clicks (as in DKN's candidate attention). :math:`W_q, W_k` start at
    zero, so attention starts uniform (the history mean) and learns what to look at. The user
    state of :meth:`forward` is candidate-free and can be cached: the contextual history, its mask
    and the user-ID vector packed in one (B, S) tensor; :meth:`for_candidates` reads it.

    Args:
        dim: size of news and user vectors.
        heads: self-attention heads (``dim`` must be divisible by it).
        dropout: dropout on the clicked-news vectors and the attention output.
        num_users: size of the user-ID table including index 0, or None for no user IDs.

    Shapes:
        - forward: clicked (B, H, D), mask (B, H) bool, users (B,) or None -> state (B, H*D + H + D)
        - for_candidates: state (B, S), news (B, K, D) -> (B, K, D); weights (B, K, H)
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.2, num_users: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.drop = nn.Dropout(dropout)
        self.attention = MultiHeadSelfAttention(dim, heads, dropout=0.0)
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.empty = nn.Parameter(torch.zeros(dim))
        self.user_embedding = nn.Embedding(num_users, dim, padding_idx=0) if num_users else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.query.weight)
        nn.init.normal_(self.key.weight, std=0.02)
        init_user_tables(self.empty, self.user_embedding)

    def forward(self, clicked: Tensor, mask: Tensor, users: Tensor | None = None) -> Tensor:
        B, H, D = clicked.shape  # batch, history, dim
        empty = ~mask.any(dim=1)  # (B,)
        safe_mask = mask.clone()
        safe_mask[:, 0] |= empty  # an empty history attends to its first slot, which holds `empty`
        x = self.drop(clicked)
        h = self.norm(x + self.drop(self.attention(x, safe_mask)))  # (B, H, D)
        h = torch.where(
            empty[:, None, None] & (torch.arange(H, device=h.device) == 0)[None, :, None],
            self.empty.to(h.dtype),
            h,
        )
        extra = torch.zeros(B, D, dtype=h.dtype, device=h.device)
        if self.user_embedding is not None and users is not None:
            extra = self.user_embedding(users).to(h.dtype)
        return torch.cat([h.reshape(B, H * D), safe_mask.to(h.dtype), extra], dim=1)  # (B, S)

    def unpack(self, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, S) -> history (B, H, D), mask (B, H) bool, user-ID vector (B, D)."""
        B, S = state.shape
        D = self.dim
        H = (S - D) // (D + 1)
        return state[:, : H * D].view(B, H, D), state[:, H * D : H * D + H] > 0.5, state[:, H * D + H :]

    def summary(self, state: Tensor) -> Tensor:
        """The candidate-free user vector: the mean of the contextual history, (B, D)."""
        history, mask, extra = self.unpack(state)
        total = (history * mask[..., None].to(history.dtype)).sum(dim=1)
        return total / mask.sum(dim=1, keepdim=True).clamp(min=1).to(history.dtype) + extra

    def for_candidates(self, state: Tensor, news: Tensor) -> tuple[Tensor, Tensor]:
        history, mask, extra = self.unpack(state)
        B, K, D = news.shape  # batch, candidates, dim
        q = self.query(news.to(history.dtype))  # (B, K, D)
        k = self.key(history)  # (B, H, D)
        scores = torch.einsum("bkd,bhd->bkh", q, k) / math.sqrt(D)  # (B, K, H)
        scores = scores.float().masked_fill(~mask[:, None, :], torch.finfo(torch.float32).min)
        weights = torch.softmax(scores, dim=-1).to(history.dtype)  # (B, K, H)
        return torch.einsum("bkh,bhd->bkd", weights, history) + extra[:, None, :], weights
