"""The category modality: MIND's category and subcategory of a news item."""

from __future__ import annotations

from torch import Tensor, nn


class CategoryEmbedding(nn.Module):
    r"""Sum of a category and a subcategory embedding, normalised.

    .. math::
        c = \mathrm{LN}(E_{\mathrm{cat}}[\mathrm{cat}] + E_{\mathrm{sub}}[\mathrm{sub}])

    Categories are a small closed set, so fresh news have known ones; row 0 is "unknown".

    Args:
        num_categories, num_subcategories: table sizes including row 0.
        dim: vector size.

    Shapes:
        - category, subcategory: (N,) int64
        - output: (N, D)
    """

    def __init__(self, num_categories: int, num_subcategories: int, dim: int) -> None:
        super().__init__()
        self.category = nn.Embedding(num_categories, dim)
        self.subcategory = nn.Embedding(num_subcategories, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, category: Tensor, subcategory: Tensor) -> Tensor:
        return self.norm(self.category(category) + self.subcategory(subcategory))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(categories={self.category.num_embeddings}, "
            f"subcategories={self.subcategory.num_embeddings}, dim={self.norm.normalized_shape[0]})"
        )
