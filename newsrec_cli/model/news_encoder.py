"""The news encoder: each modality gives a vector, a fusion module combines them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from newsrec_cli.model.category_embedding import CategoryEmbedding
from newsrec_cli.model.features import NewsFeatures
from newsrec_cli.model.fusion import _Fusion
from newsrec_cli.model.graph_modality import GraphModality
from newsrec_cli.model.id_embedding import NewsIdEmbedding
from newsrec_cli.model.text_projection import TextProjection


class NewsEncoder(nn.Module):
    r"""One vector per news item from its switchable modalities.

    .. math::
        v_{\mathrm{id}} = E[\mathrm{id}],\quad v_{\mathrm{text}} = P(x_{\mathrm{text}}),\quad
        v_{\mathrm{graph}} = \mathrm{GNN}[\mathrm{node}],\quad v_{\mathrm{cat}} = C(\mathrm{cat},
        \mathrm{sub}),\qquad n = \mathrm{Fusion}(v_{\mathrm{id}}, v_{\mathrm{text}}, \dots)

    The per-news inputs (ID row, text vector, categories, graph node) live in buffers attached
    with :meth:`attach` and indexed by news index; they are not part of the state dict. A news
    whose text vector is missing (the features' ``text_present`` mask; allowed only by
    ``--missing learned``, checked where the features are built) gets a learned vector instead of
    a silent zero. Each distinct news of a call is encoded once and gathered back.

    Shapes:
        - news: (...) int64 news indices of the attached vocabulary
        - output: (..., D)
    """

    def __init__(
        self,
        dim: int,
        fusion: _Fusion,
        *,
        id_embedding: NewsIdEmbedding | None = None,
        text: TextProjection | None = None,
        graph: GraphModality | None = None,
        category: CategoryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.id_embedding = id_embedding
        self.text = text
        self.graph = graph
        self.category = category
        self.fusion = fusion
        self.text_missing = nn.Parameter(torch.randn(dim) * 0.02) if text is not None else None
        expected = self.modalities
        if fusion.names != expected:
            raise ValueError(
                f"{self.__class__.__name__}: fusion over {fusion.names}, modalities are {expected}"
            )
        for name in (
            "id_index",
            "category_index",
            "subcategory_index",
            "text_vectors",
            "text_present",
            "graph_node",
        ):
            self.register_buffer(name, None, persistent=False)

    @property
    def modalities(self) -> list[str]:
        present = {"id": self.id_embedding, "text": self.text, "graph": self.graph, "category": self.category}
        return [name for name, module in present.items() if module is not None]

    def attach(self, features: NewsFeatures) -> None:
        """Use these per-news inputs (moved to the model's device) from now on."""
        device = next(self.parameters()).device
        f = features.to(device)
        if self.text is not None:
            if f.text is None:
                raise ValueError("the model has a text modality but the features have no text vectors")
            if f.text.shape[1] != self.text.in_dim:
                raise ValueError(
                    f"text vectors have dimension {f.text.shape[1]}, the model expects {self.text.in_dim}"
                )
        if self.graph is not None and f.graph_node is None:
            raise ValueError("the model has a graph modality but the features have no graph nodes")
        self.id_index = f.id_index
        self.category_index = f.category
        self.subcategory_index = f.subcategory
        self.text_vectors = f.text
        self.text_present = f.text_present
        self.graph_node = f.graph_node

    @property
    def num_news(self) -> int:
        return 0 if self.id_index is None else int(self.id_index.shape[0])

    def forward(self, news: Tensor) -> Tensor:
        if self.id_index is None:
            raise RuntimeError("NewsEncoder: no news features attached (call attach first)")
        unique, inverse = torch.unique(news.reshape(-1), return_inverse=True)
        vectors = self.encode_unique(unique)  # (U, D)
        return vectors[inverse].reshape(*news.shape, self.dim)

    def encode_unique(self, news: Tensor) -> Tensor:
        """Vectors of distinct news indices, (U,) -> (U, D)."""
        parts: list[Tensor] = []
        if self.id_embedding is not None:
            parts.append(self.id_embedding(self.id_index[news]))
        if self.text is not None:
            text = self.text(self.text_vectors[news])  # (U, D)
            if self.text_missing is not None and self.text_present is not None:
                present = self.text_present[news][:, None]
                text = torch.where(present, text, self.text_missing.to(text.dtype))
            parts.append(text)
        if self.graph is not None:
            parts.append(self.graph(self.graph_node[news]))
        if self.category is not None:
            parts.append(self.category(self.category_index[news], self.subcategory_index[news]))
        dtype = parts[0].dtype if all(p.dtype == parts[0].dtype for p in parts) else torch.float32
        stacked = torch.stack([p.to(dtype) for p in parts], dim=1)  # (U, M, D)
        return self.fusion(stacked)
