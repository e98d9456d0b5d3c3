"""A candidate-aware user encoder: each candidate attends over the clicked news."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from newsrec_cli.model.self_attention import MultiHeadSelfAttention
from newsrec_cli.model.user_encoder import init_user_tables, safe_history_mask


@dataclass(frozen=True)
class CandidateState:
    """The candidate-free state of :class:`CandidateUserEncoder`, in its parts.

    It is packed into one float tensor (B, H*D + H + D), ``[history | mask | user]``, because a
    user state is one array everywhere it goes: the user-state cache, and the single
    ``user_state`` input of the exported scorer (ONNX). The mask travels as 0.0 / 1.0, exact in
    every float dtype, and :meth:`unpack` reads it back as ``> 0.5``.

    - ``history``: (B, H, D) the contextual clicked-news vectors;
    - ``mask``: (B, H) bool, which slots hold a click (an empty history: its first slot);
    - ``user``: (B, D) the user-ID vector (zeros without user IDs).
    """

    history: Tensor
    mask: Tensor
    user: Tensor

    def pack(self) -> Tensor:
        B, H, D = self.history.shape  # batch, history, dim
        dtype = self.history.dtype
        return torch.cat([self.history.reshape(B, H * D), self.mask.to(dtype), self.user.to(dtype)], dim=1)

    @classmethod
    def unpack(cls, state: Tensor, dim: int) -> CandidateState:
        """The parts of a packed (B, S) state of `dim`-d vectors."""
        B, S = state.shape
        H = (S - dim) // (dim + 1)  # S = H*D + H + D
        return cls(
            state[:, : H * dim].view(B, H, dim),
            state[:, H * dim : H * dim + H] > 0.5,
            state[:, H * dim + H :],
        )


class CandidateUserEncoder(nn.Module):
    r"""The user as seen by one candidate: attention of the candidate over the clicked news.

    .. math::
        H = \mathrm{LN}\big(X + \mathrm{Dropout}(\mathrm{MHSA}(X))\big), \qquad
        \alpha_{k} = \mathrm{softmax}_{i\,:\,m_i}\Big(\frac{(W_q c_k)^\top (W_k h_i)}{\sqrt{D}}\Big),
        \qquad u_k = \sum_i \alpha_{k,i}\, h_i \;[+\, E_{\mathrm{user}}[\mathrm{id}]]

    With a short history and fresh candidates, the clicks that resemble the candidate say more
    than a fixed summary of all clicks (as in DKN's candidate attention). :math:`W_q, W_k` start at
    zero, so attention starts uniform (the history mean) and learns what to look at. The user
    state of :meth:`forward` is candidate-free and can be cached: a packed :class:`CandidateState`
    (the contextual history, its mask and the user-ID vector); :meth:`for_candidates` reads it.

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
        safe_mask, empty = safe_history_mask(mask)  # an empty history's first slot holds `empty`
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
        return CandidateState(h, safe_mask, extra).pack()  # (B, S)

    def unpack(self, state: Tensor) -> CandidateState:
        return CandidateState.unpack(state, self.dim)

    def summary(self, state: Tensor) -> Tensor:
        """The candidate-free user vector: the mean of the contextual history, (B, D)."""
        parts = self.unpack(state)
        mask = parts.mask[..., None].to(parts.history.dtype)  # (B, H, 1)
        total = (parts.history * mask).sum(dim=1)  # (B, D)
        return total / mask.sum(dim=1).clamp(min=1) + parts.user

    def for_candidates(self, state: Tensor, news: Tensor) -> tuple[Tensor, Tensor]:
        parts = self.unpack(state)
        history, mask, extra = parts.history, parts.mask, parts.user
        B, K, D = news.shape  # batch, candidates, dim
        q = self.query(news.to(history.dtype))  # (B, K, D)
        k = self.key(history)  # (B, H, D)
        scores = torch.einsum("bkd,bhd->bkh", q, k) / math.sqrt(D)  # (B, K, H)
        scores = scores.float().masked_fill(~mask[:, None, :], torch.finfo(torch.float32).min)
        weights = torch.softmax(scores, dim=-1).to(history.dtype)  # (B, K, H)
        return torch.einsum("bkh,bhd->bkd", weights, history) + extra[:, None, :], weights
