"""The scoring head: one logit per (user, candidate) pair."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_LOG_SCALE = math.log(100.0)  # a temperature below 0.01 only saturates the softmax
LR_SCALE = 10.0  # the log-scale is one number that must move from ~1 to ~10: a 10x learning rate


class ScoringHead(nn.Module):
    r"""Dot product or cosine similarity times a learned scale (an inverse temperature).

    .. math::
        \text{dot:}\ s = e^{\tau}\, \frac{u^\top n}{D}, \qquad
        \text{cosine:}\ s = e^{\tau}\, \frac{u^\top n}{\lVert u\rVert\, \lVert n\rVert}

    The outputs are logits (no sigmoid): losses work on them and ``predict_proba`` applies the
    sigmoid. News and user vectors leave LayerNorms with norms near :math:`\sqrt{D}`, so
    :math:`u^\top n / D` is about their cosine: with :math:`e^\tau` starting at ``init_scale``
    initial logits stay well inside (-5, 5). The scale is learned (the training loop gives it a
    larger learning rate, ``LR_SCALE``) and clamped to at most 100.

    Args:
        kind: "dot" or "cosine".
        dim: vector size D.
        init_scale: initial value of :math:`e^\tau` (default 2 for dot, 3 for cosine).

    Shapes:
        - user: (B, D), news: (B, K, D)
        - output: (B, K) logits
    """

    def __init__(self, kind: Literal["dot", "cosine"], dim: int, init_scale: float | None = None) -> None:
        super().__init__()
        if kind not in ("dot", "cosine"):
            raise ValueError(f"{self.__class__.__name__}: kind must be dot or cosine, not {kind!r}")
        self.kind = kind
        self.dim = dim
        self.init_scale = init_scale if init_scale is not None else (2.0 if kind == "dot" else 3.0)
        self.log_scale = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.log_scale, math.log(self.init_scale))

    @property
    def scale(self) -> Tensor:
        return self.log_scale.clamp(max=MAX_LOG_SCALE).exp()

    def forward(self, user: Tensor, news: Tensor) -> Tensor:
        B, K, D = news.shape  # batch, candidates, dim
        if self.kind == "cosine":
            user, news = F.normalize(user, dim=-1), F.normalize(news, dim=-1)
            sim = torch.einsum("bd,bkd->bk", user, news)  # (B, K)
        else:
            sim = torch.einsum("bd,bkd->bk", user, news) / D  # (B, K)
        return sim * self.scale.to(sim.dtype)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(kind={self.kind!r}, scale={float(self.scale):.3g})"
