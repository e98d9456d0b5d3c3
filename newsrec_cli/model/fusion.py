"""Fusion of the modality vectors of a news item (ID, text, graph, category) into one vector.

Three small modules with one interface: ``forward(v: (N, M, D)) -> (N, D)`` and ``weights()``,
the mean weight per modality over the last forward (None where the fusion has no weights);
``item_weights()`` keeps the weight of each news item of that forward (N, M), which the web
page shows per recommended news.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class _Fusion(nn.Module):
    """Shared bookkeeping: modality names and the mean weights of the last forward."""

    def __init__(self, names: list[str], dim: int) -> None:
        super().__init__()
        if not names:
            raise ValueError(f"{self.__class__.__name__}: at least one modality is needed")
        self.names = list(names)
        self.dim = dim
        self._last: Tensor | None = None
        self._items: Tensor | None = None

    def _remember(self, weights: Tensor) -> None:
        self._items = weights.detach().float()  # (N, M)
        self._last = self._items.mean(dim=0)  # (M,)

    def item_weights(self) -> Tensor | None:
        """Weight of each modality for each news item of the last forward, (N, M); None without."""
        return self._items

    def weights(self) -> dict[str, float] | None:
        if self._last is None:
            return None
        return {name: float(w) for name, w in zip(self.names, self._last.cpu(), strict=True)}

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(modalities={self.names}, dim={self.dim})"


class ConcatFusion(_Fusion):
    r"""Concatenate the modality vectors and mix them with a two-layer MLP.

    .. math::
        z = \mathrm{LN}\big(W_2\, \mathrm{Dropout}(\mathrm{GELU}(W_1 [v_1; \dots; v_M] + b_1)) + b_2\big)

    Shapes:
        - v: (N, M, D)
        - output: (N, D); ``weights()`` is None (an MLP has no per-modality weight)
    """

    def __init__(self, names: list[str], dim: int, dropout: float = 0.0) -> None:
        super().__init__(names, dim)
        m = len(names)
        self.mlp = nn.Sequential(
            nn.Linear(m * dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.LayerNorm(dim)
        )

    def forward(self, v: Tensor) -> Tensor:
        N, M, D = v.shape  # news, modalities, dim
        return self.mlp(v.reshape(N, M * D))

    def weights(self) -> dict[str, float] | None:
        return None

    def item_weights(self) -> Tensor | None:
        return None


class AttentionFusion(_Fusion):
    r"""A learned query attends over the modality vectors (multi-view attention, as in NAML).

    .. math::
        a_m = q^\top \tanh(W v_m + b), \qquad \alpha = \mathrm{softmax}(a), \qquad
        z = \sum_m \alpha_m v_m

    Shapes:
        - v: (N, M, D)
        - output: (N, D); weights (N, M)
    """

    def __init__(self, names: list[str], dim: int) -> None:
        super().__init__(names, dim)
        self.proj = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.query, std=0.02)

    def forward(self, v: Tensor) -> Tensor:
        N, M, D = v.shape  # news, modalities, dim
        scores = torch.tanh(self.proj(v)) @ self.query  # (N, M)
        alpha = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # (N, M)
        self._remember(alpha)
        return torch.einsum("nm,nmd->nd", alpha, v)


class GateFusion(_Fusion):
    r"""Softmax gates computed from all modalities together weigh each modality.

    .. math::
        g = \mathrm{softmax}(W [v_1; \dots; v_M] + b), \qquad z = \sum_m g_m v_m

    Shapes:
        - v: (N, M, D)
        - output: (N, D); gates (N, M)
    """

    def __init__(self, names: list[str], dim: int) -> None:
        super().__init__(names, dim)
        self.gate = nn.Linear(len(names) * dim, len(names))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.gate.weight)  # start from equal gates
        nn.init.zeros_(self.gate.bias)

    def forward(self, v: Tensor) -> Tensor:
        N, M, D = v.shape  # news, modalities, dim
        gates = torch.softmax(self.gate(v.reshape(N, M * D)).float(), dim=-1).to(v.dtype)  # (N, M)
        self._remember(gates)
        return torch.einsum("nm,nmd->nd", gates, v)


FusionKind = Literal["concat", "attention", "gate"]


def build_fusion(kind: FusionKind, names: list[str], dim: int, dropout: float = 0.0) -> _Fusion:
    """The fusion module named by ``kind`` over the modalities ``names``."""
    if kind == "concat":
        return ConcatFusion(names, dim, dropout)
    if kind == "attention":
        return AttentionFusion(names, dim)
    if kind == "gate":
        return GateFusion(names, dim)
    raise ValueError(f"unknown fusion {kind!r}; allowed: concat, attention, gate")
