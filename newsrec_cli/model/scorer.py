"""The scoring head: one bounded logit per (user, candidate) pair."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_SCALE = 30.0  # |logit| of the head never exceeds this: a softmax over candidates still has a slope
LR_SCALE = 10.0  # the scale is one number that must move from ~2 to ~10: a 10x learning rate


def bounded_scale(raw: Tensor, limit: float = MAX_SCALE) -> Tensor:
    """A positive scale in (0, limit): ``limit * sigmoid(raw)``.

    A clamp would zero the gradient at the cap and let the scale stick there; the sigmoid keeps
    a gradient everywhere and can never pass the limit.
    """
    return limit * torch.sigmoid(raw)


def raw_for(scale: float, limit: float = MAX_SCALE) -> float:
    """The raw parameter value whose `bounded_scale` is `scale` (0 < scale < limit)."""
    p = scale / limit
    return math.log(p / (1.0 - p))


def _standardise(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean and unit variance over the last axis (LayerNorm without weights)."""
    x = x - x.mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


class ScoringHead(nn.Module):
    r"""Dot product of normalised vectors or cosine similarity, times a learned, bounded scale.

    .. math::
        \text{dot:}\ s = c\, \frac{\bar u^\top \bar n}{D}, \qquad
        \text{cosine:}\ s = c\, \frac{u^\top n}{\lVert u\rVert\, \lVert n\rVert}, \qquad
        c = c_{\max}\, \sigma(\rho)

    :math:`\bar x` is :math:`x` standardised over its features (a LayerNorm without weights), so
    :math:`\bar u^\top \bar n / D` is a correlation in [-1, 1] whatever the fusion puts out; the
    scale :math:`c` is bounded by :math:`c_{\max}` = ``MAX_SCALE``, so every logit lies in
    :math:`[-c_{\max}, c_{\max}]` during and after training, not only at initialisation. The
    outputs are logits (no sigmoid). The similarity and the product are computed in float32
    even under bf16 autocast: bf16 keeps 8 bits of mantissa, and ranking on it ties distinct
    scores.

    Args:
        kind: "dot" or "cosine".
        dim: vector size D.
        init_scale: initial value of :math:`c` (default 2 for dot, 3 for cosine).

    Shapes:
        - user: (B, D) or (B, K, D) (one user vector per candidate), news: (B, K, D)
        - output: (B, K) float32 logits
    """

    def __init__(self, kind: Literal["dot", "cosine"], dim: int, init_scale: float | None = None) -> None:
        super().__init__()
        if kind not in ("dot", "cosine"):
            raise ValueError(f"{self.__class__.__name__}: kind must be dot or cosine, not {kind!r}")
        self.kind = kind
        self.dim = dim
        self.init_scale = init_scale if init_scale is not None else (2.0 if kind == "dot" else 3.0)
        self.raw_scale = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.raw_scale, raw_for(self.init_scale))

    @property
    def scale(self) -> Tensor:
        return bounded_scale(self.raw_scale)

    @torch.no_grad()
    def set_scale(self, scale: float) -> None:
        """Set the scale (0 < scale < MAX_SCALE)."""
        if not 0 < scale < MAX_SCALE:
            raise ValueError(f"{self.__class__.__name__}: scale must be in (0, {MAX_SCALE:g}), not {scale!r}")
        self.raw_scale.fill_(raw_for(scale))

    def similarity(self, user: Tensor, news: Tensor) -> Tensor:
        """(B, D) or (B, K, D) users, (B, K, D) news -> (B, K) float32 similarity in [-1, 1]."""
        # Broadcasting rather than shapes read off the tensors: the ONNX export traces this.
        user = (user if user.dim() == 3 else user.unsqueeze(1)).float()  # (B, 1|K, D)
        news = news.float()  # (B, K, D)
        if self.kind == "cosine":
            return (F.normalize(user, dim=-1) * F.normalize(news, dim=-1)).sum(dim=-1)
        return (_standardise(user) * _standardise(news)).mean(dim=-1)  # u.n / D of standardised vectors

    def forward(self, user: Tensor, news: Tensor) -> Tensor:
        with torch.autocast(device_type=user.device.type, enabled=False):
            return self.similarity(user, news) * self.scale.float()

    def pairwise(self, user: Tensor, news: Tensor) -> Tensor:
        """Every user against every news: (B, D), (N, D) -> (B, N) float32 logits, one matrix product
        (what `forward` gives for each pair, without B copies of the news)."""
        with torch.autocast(device_type=user.device.type, enabled=False):
            user, news = user.float(), news.float()
            if self.kind == "cosine":
                sim = F.normalize(user, dim=-1) @ F.normalize(news, dim=-1).T
            else:
                sim = _standardise(user) @ _standardise(news).T / user.shape[-1]
            return sim * self.scale.float()

    def keys(self, news: Tensor) -> Tensor:
        """(N, D) news -> (N, D) float32 keys: `pairwise` is `queries(user) @ keys(news).T`."""
        news = news.float()
        return F.normalize(news, dim=-1) if self.kind == "cosine" else _standardise(news)

    def queries(self, user: Tensor) -> Tensor:
        """(B, D) users -> (B, D) float32 queries, the similarity's user side times the scale."""
        user = user.float()
        if self.kind == "cosine":
            return F.normalize(user, dim=-1) * self.scale.float()
        return _standardise(user) * (self.scale.float() / user.shape[-1])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(kind={self.kind!r}, scale={float(self.scale.detach()):.3g})"
