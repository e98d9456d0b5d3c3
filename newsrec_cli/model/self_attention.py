"""Multi-head self-attention over a padded sequence (the first step of NRMS's user encoder)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadSelfAttention(nn.Module):
    r"""Scaled dot-product self-attention with ``heads`` heads; padded keys are ignored.

    .. math::
        \mathrm{head}_h = \mathrm{softmax}\!\Big(\frac{(X W^Q_h)(X W^K_h)^\top}{\sqrt{d_h}}
        + M\Big) X W^V_h, \qquad
        \mathrm{MHSA}(X) = [\mathrm{head}_1; \dots; \mathrm{head}_H] W^O

    where :math:`M` is :math:`-\infty` on padded keys. Every row must have at least one valid key
    (the user encoder guarantees it).

    Args:
        dim: model size, divisible by ``heads``.
        heads: number of attention heads.
        dropout: dropout on the attention weights in training.

    Shapes:
        - x: (B, L, D), mask: (B, L) bool, True = valid
        - output: (B, L, D)
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{self.__class__.__name__}: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape  # batch, sequence, dim
        q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x (B, L, D)
        q, k, v = (
            t.view(B, L, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v)
        )  # (B, h, L, hs)
        attn_mask = mask[:, None, None, :]  # (B, 1, 1, L): True = may attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, h, L, hs)
        return self.out(y.transpose(1, 2).reshape(B, L, D))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.out.in_features}, heads={self.heads})"
