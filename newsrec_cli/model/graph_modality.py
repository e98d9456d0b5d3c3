"""The graph modality: the GNN vector of a news node, or a learned vector for news off the graph."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from newsrec_cli.model.features import NO_GRAPH_NODE


class GraphModality(nn.Module):
    r"""Wraps a graph encoder (``newsrec_cli.graph.build_graph_encoder``) for the news encoder.

    .. math::
        g = \mathrm{LN}\big(\mathrm{GNN}(\mathcal{G})[\mathrm{node}]\big) \text{ if the news is a
        graph node, else } \mathrm{LN}(g_\varnothing)

    News absent from the graph (e.g. fresh news when the graph was built on training news) get a
    learned "no graph" vector :math:`g_\varnothing` rather than zeros.

    Args:
        encoder: module mapping news node indices (M,) to vectors (M, D).
        dim: vector size D.

    Shapes:
        - nodes: (N,) int64, -1 = not in the graph
        - output: (N, D)
    """

    def __init__(self, encoder: nn.Module, dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.missing = nn.Parameter(torch.empty(dim))
        self.norm = nn.LayerNorm(dim)
        self._cache: Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.missing, std=0.02)

    @torch.no_grad()
    def cache(self, vectors: Tensor | None = None) -> None:
        """For inference: run the GNN once over the whole graph (`encoder.all_news()`) and reuse it.

        `vectors` (num_nodes, D) replaces the GNN run with node vectors computed earlier (an
        export feeds them as a per-news input, the GNN having run once at export time).
        """
        self._cache = self.encoder.all_news() if vectors is None else vectors

    def clear_cache(self) -> None:
        self._cache = None

    def forward(self, nodes: Tensor) -> Tensor:
        (N,) = nodes.shape  # news
        present = nodes != NO_GRAPH_NODE
        out = self.missing.expand(N, -1).clone()  # (N, D)
        if bool(present.any()):
            wanted = nodes[present]
            vectors = self._cache[wanted] if self._cache is not None else self.encoder(wanted)
            out[present] = vectors.to(out.dtype)
        return self.norm(out)
