"""The news-entity graph in memory: node ID maps, edges per type, entity features and their source.

The graph is kept in a *stored form* (`GraphArrays`: plain numpy arrays, what `graph.npz` holds)
and assembled into a `torch_geometric.data.HeteroData` by one function, `assemble`, used both
after building and after loading, so a save/load round trip gives the same graph bit for bit.

Node types: ``news`` (row i = ``news_ids[i]``) and ``entity`` (row j = ``entity_ids[j]``, a
WikidataId). Edge types (messages flow source -> destination):

- ``(news, title, entity)`` and ``(news, abstract, entity)``: an entity linked in the title /
  abstract of a news item; ``edge_weight`` = confidence x occurrences. The reverse types
  ``(entity, rev_title, news)`` and ``(entity, rev_abstract, news)`` carry the same weights so
  that news nodes receive messages from their entities.
- ``(entity, cooccurs, entity)`` (only when built with ``cooccurrence_min > 0``): entities named
  together in at least N news, both directions, ``edge_weight`` = number of such news.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch_geometric.data import HeteroData

FORMAT = "newsrec-graph"
FORMAT_VERSION = 1
NEWS = "news"
ENTITY = "entity"
MENTION_RELATIONS = ("title", "abstract")
COOCCURS = (ENTITY, "cooccurs", ENTITY)

EdgeType = tuple[str, str, str]

# Where an entity's input features come from; the code is stored per entity row.
LEARNED, VEC, LABEL_TEXT = 0, 1, 2
SOURCE_NAMES = {LEARNED: "learned", VEC: "vec", LABEL_TEXT: "label_text"}
SOURCE_CODES = {name: code for code, name in SOURCE_NAMES.items()}
FEATURE_SOURCES = ("vec", "label_text")  # the sources that come with a frozen matrix


def mention_type(relation: str) -> EdgeType:
    return (NEWS, relation, ENTITY)


def reverse_type(relation: str) -> EdgeType:
    return (ENTITY, f"rev_{relation}", NEWS)


@dataclass
class Mentions:
    """The news->entity links of one column (title or abstract), one entry per (news, entity)."""

    news: np.ndarray  # int64 [E] news row
    entity: np.ndarray  # int64 [E] entity row
    confidence: np.ndarray  # float32 [E] highest confidence of the links of this pair
    occurrences: np.ndarray  # int32 [E] times the entity occurs in the column (>= 1)

    @property
    def weight(self) -> np.ndarray:
        """Edge weight: confidence x occurrences (an entity named twice weighs twice)."""
        return (self.confidence * self.occurrences.astype(np.float32)).astype(np.float32)

    def __len__(self) -> int:
        return int(self.news.shape[0])


@dataclass
class Cooccurrence:
    """Undirected entity pairs (a < b) named together in `count` news."""

    a: np.ndarray  # int64 [P]
    b: np.ndarray  # int64 [P]
    count: np.ndarray  # int32 [P]

    def __len__(self) -> int:
        return int(self.a.shape[0])


@dataclass
class EntityFeatures:
    """Frozen input vectors of the entities of one source: row k belongs to entity `rows[k]`."""

    rows: np.ndarray  # int64 [n] entity rows, ascending
    matrix: np.ndarray  # float32 [n, dim]

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


@dataclass
class GraphArrays:
    """The stored form of a graph: exactly what `graph.npz` and the ID files hold."""

    news_ids: list[str]
    entity_ids: list[str]
    mentions: dict[str, Mentions]  # "title" / "abstract"
    cooccurrence: Cooccurrence | None
    entity_source: np.ndarray  # int8 [num_entities], codes of SOURCE_NAMES
    features: dict[str, EntityFeatures]  # "vec" / "label_text", only the sources present


@dataclass
class NewsGraph:
    """A built or loaded graph (see the module docstring for node and edge types).

    `data` is the HeteroData the encoders consume; `features[source]` holds the frozen entity
    vectors of each source and `entity_source[j]` says which source entity j takes its input from.
    """

    arrays: GraphArrays
    data: HeteroData
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def news_ids(self) -> list[str]:
        return self.arrays.news_ids

    @property
    def entity_ids(self) -> list[str]:
        return self.arrays.entity_ids

    @cached_property
    def news_index(self) -> dict[str, int]:
        """News ID -> node row."""
        return {id_: row for row, id_ in enumerate(self.arrays.news_ids)}

    @cached_property
    def entity_index(self) -> dict[str, int]:
        """WikidataId -> node row."""
        return {id_: row for row, id_ in enumerate(self.arrays.entity_ids)}

    @property
    def num_news(self) -> int:
        return len(self.arrays.news_ids)

    @property
    def num_entities(self) -> int:
        return len(self.arrays.entity_ids)

    @property
    def entity_source(self) -> torch.Tensor:
        """int8 [num_entities]: 0 learned, 1 vec, 2 label_text."""
        return self.data[ENTITY].source

    @property
    def features(self) -> dict[str, EntityFeatures]:
        return self.arrays.features

    @property
    def edge_types(self) -> list[EdgeType]:
        return list(self.data.edge_types)

    def __repr__(self) -> str:
        edges = ", ".join(
            f"{r}={self.data[t].edge_index.shape[1]}" for t in self.data.edge_types for r in [t[1]]
        )
        return f"NewsGraph(news={self.num_news}, entities={self.num_entities}, {edges})"


def assemble(arrays: GraphArrays, meta: dict[str, Any] | None = None) -> NewsGraph:
    """Build the HeteroData of a stored graph: mention edges, their reverses, co-occurrence both ways."""
    data = HeteroData()
    data[NEWS].num_nodes = len(arrays.news_ids)
    data[ENTITY].num_nodes = len(arrays.entity_ids)
    data[ENTITY].source = torch.from_numpy(np.ascontiguousarray(arrays.entity_source, dtype=np.int8))
    for relation in MENTION_RELATIONS:
        mentions = arrays.mentions[relation]
        edge_index = torch.from_numpy(np.stack([mentions.news, mentions.entity]).astype(np.int64))
        weight = torch.from_numpy(mentions.weight)
        data[mention_type(relation)].edge_index = edge_index
        data[mention_type(relation)].edge_weight = weight
        data[reverse_type(relation)].edge_index = edge_index.flip(0).contiguous()
        data[reverse_type(relation)].edge_weight = weight.clone()
    if arrays.cooccurrence is not None:
        pairs = arrays.cooccurrence
        src = np.concatenate([pairs.a, pairs.b]).astype(np.int64)
        dst = np.concatenate([pairs.b, pairs.a]).astype(np.int64)
        data[COOCCURS].edge_index = torch.from_numpy(np.stack([src, dst]))
        data[COOCCURS].edge_weight = torch.from_numpy(
            np.concatenate([pairs.count, pairs.count]).astype(np.float32)
        )
    return NewsGraph(arrays=arrays, data=data, meta=dict(meta or {}))
