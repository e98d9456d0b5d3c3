"""The per-news inputs of the news encoder, as tensors aligned with one news vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

NO_GRAPH_NODE = -1


@dataclass
class NewsFeatures:
    """What the news encoder knows of each news item; row i is news index i (row 0: padding).

    Built by `newsrec_cli.runs.context` from a dataset, the text store and the graph, and
    attached to a model with `NewsRecommender.attach(features)`; never saved in `model.pt` (the
    text vectors are reloaded from the store the run names).
    """

    id_index: Tensor  # int64 [N]: row of the news-ID embedding, 0 = the "unseen" bucket
    category: Tensor  # int64 [N]: 0 = unknown category
    subcategory: Tensor  # int64 [N]
    text: Tensor | None = None  # float32 [N, T] frozen text vectors (zeros where missing)
    text_present: Tensor | None = None  # bool [N]: False where the store has no vector
    graph_node: Tensor | None = None  # int64 [N]: news node of the graph, -1 = not in the graph
    # bool [N]: news of the training impressions, whose text vectors give the centre (None: a
    # trained model's saved centre is kept, never re-taken from the news of a reported split)
    known: Tensor | None = None

    def __len__(self) -> int:
        return int(self.id_index.shape[0])

    def to(self, device: torch.device | str) -> NewsFeatures:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return NewsFeatures(**{k: v.to(device) if v is not None else None for k, v in moved.items()})
