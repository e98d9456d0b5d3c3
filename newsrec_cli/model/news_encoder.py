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
from newsrec_cli.model.text_tower import TextTower


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

    With a :class:`TextTower` (``--finetune-text K``), training computes the text vector of each
    news of the batch through the tower's learned layers (with gradients); in eval mode the
    ``text_vectors`` buffer is used, which the training loop and ``LoadedRun`` fill from the tower
    (:meth:`refresh_text`), so inference costs no transformer forward per call.

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
        tower: TextTower | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.id_embedding = id_embedding
        self.text = text
        self.graph = graph
        self.category = category
        self.fusion = fusion
        if tower is not None and text is None:
            raise ValueError(f"{self.__class__.__name__}: a text tower needs the text modality")
        self.tower = tower
        self.text_missing = nn.Parameter(torch.empty(dim)) if text is not None else None
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
            "text_known",
            "graph_node",
        ):
            self.register_buffer(name, None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.text_missing is not None:
            nn.init.normal_(self.text_missing, std=0.02)

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
        # A tower writes its vectors into this buffer (refresh_text): never into the caller's features.
        self.text_vectors = f.text.clone() if self.tower is not None and f.text is not None else f.text
        if self.tower is not None and self.tower.slot is not None and len(self.tower.slot) != len(f):
            self.tower.clear()  # another news vocabulary: the cached indices mean other news
        self.text_present = f.text_present
        self.text_known = f.known
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

    def raw_text(self, news: Tensor) -> Tensor | None:
        """The text vectors (U, T) of distinct news: from the tower while training, else the buffer."""
        if self.text is None:
            return None
        if self.tower is None or not self.training or self.tower.slot is None:
            return self.text_vectors[news]
        cached = self.tower.slot[news] >= 0  # news without text (missing) keep their zero row
        if bool(cached.all()):
            return self.tower(news)
        out = self.text_vectors[news].float().clone()
        where = torch.nonzero(cached).flatten()
        return out.index_put((where,), self.tower(news[where]))

    @torch.no_grad()
    def refresh_text(self, news: Tensor | None = None) -> None:
        """Write the tower's current vectors of its cached news (or of `news`) into the buffer."""
        if self.tower is None or self.tower.slot is None or self.text_vectors is None:
            return
        news = self.tower.cached_news if news is None else news
        news = news.to(self.text_vectors.device)
        self.text_vectors[news] = self.tower.encode_cached(news).to(self.text_vectors.dtype)

    def encode_unique(self, news: Tensor, text: Tensor | None = None) -> Tensor:
        """Vectors of distinct news indices, (U,) -> (U, D); `text`: their raw text vectors if
        already computed (raw_text)."""
        parts: list[Tensor] = []
        if self.id_embedding is not None:
            parts.append(self.id_embedding(self.id_index[news]))
        if self.text is not None:
            raw = self.raw_text(news) if text is None else text
            text = self.text(raw)  # (U, D)
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
