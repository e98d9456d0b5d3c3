"""What a model needs from the data: vocabularies and the per-news inputs (text, graph, categories).

Training builds the vocabularies from the training impressions; inference reloads them from the
run directory and maps any dataset's news onto them, so fresh news get the "unseen" ID bucket,
their categories, their text vector from the store and (if the graph has them) their graph node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.embed.text import check_store_texts
from newsrec_cli.errors import InputError, MissingVectorsError, SettingsError
from newsrec_cli.mind import Impressions, MindDataset, NewsTable, Vocab
from newsrec_cli.model.features import NO_GRAPH_NODE, NewsFeatures
from newsrec_cli.model.inputs import needed_news
from newsrec_cli.plural import counted
from newsrec_cli.settings import TrainSettings

__all__ = [
    "TextVectors",
    "Vocabularies",
    "build_vocabularies",
    "check_coverage",
    "DataContext",
    "check_store_texts",  # re-exported: loading.py checks the store it opens here
    "needed_news",  # re-exported: callers of this module use it beside news_features
    "news_features",
    "open_store",
    "prepare_context",
    "text_vectors",
]

VOCAB_FILES = {
    "ids": "vocab_news_ids.txt",
    "categories": "vocab_categories.txt",
    "subcategories": "vocab_subcategories.txt",
    "users": "vocab_users.txt",
}


@dataclass
class Vocabularies:
    """The run's vocabularies, saved as text files (one ID per line) in the run directory.

    - news: the news indices the model was trained with (the training dataset's news vocab;
      saved with categories as vocab_news.tsv by the run, not here)
    - ids: news with their own ID vector: the news of the training impressions; row 0 of the
      ID table is the "unseen" bucket every other news shares
    - categories, subcategories: of all news of the dataset (a closed set); 0 = unknown
    - users: users of the training impressions (user-ID embedding only); 0 = unknown
    """

    news: Vocab
    ids: Vocab
    categories: Vocab
    subcategories: Vocab
    users: Vocab | None = None

    def save(self, run_dir: Path) -> None:
        for name, file in VOCAB_FILES.items():
            vocab = getattr(self, name)
            if vocab is not None:
                vocab.save(run_dir / file)

    @classmethod
    def load(cls, run_dir: Path, *, users: bool, news: Vocab) -> Vocabularies:
        found: dict[str, Vocab | None] = {"news": news}
        for name, file in VOCAB_FILES.items():
            path = run_dir / file
            if name == "users" and not users:
                found[name] = None
                continue
            if not path.is_file():
                raise InputError("missing vocabulary file of the run", path=path)
            found[name] = Vocab.load(path)
        return cls(**found)  # type: ignore[arg-type]


def build_vocabularies(
    news_vocab: Vocab, news: NewsTable, train: Impressions, *, users: bool
) -> Vocabularies:
    """Vocabularies of a training run (see Vocabularies)."""
    seen = np.unique(np.concatenate([train.candidates, train.history]).astype(np.int64))
    seen = seen[seen > 0]
    train_users = np.unique(train.users.astype(np.int64))
    return Vocabularies(
        news=Vocab(news_vocab.ids[1:]),
        ids=Vocab(news_vocab.ids[i] for i in seen),
        categories=Vocab(sorted({c for c in news.category if c})),
        subcategories=Vocab(sorted({c for c in news.subcategory if c})),
        users=Vocab(train.user_vocab.ids[i] for i in train_users if i > 0) if users else None,
    )


@dataclass
class TextVectors:
    """Text vectors of one news vocabulary, looked up by ID in a store."""

    matrix: np.ndarray  # float32 [N, T], row 0 = padding
    present: np.ndarray  # bool [N]
    store_path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def open_store(path: Path | str) -> Any:
    store = EmbeddingStore.open(path)
    if store.meta.get("kind", "news") != "news":
        raise InputError(f"this store holds {store.meta.get('kind')} vectors, not news vectors", path=path)
    return store


def check_coverage(
    present: np.ndarray, news_ids: Sequence[str], needed: np.ndarray, *, missing: str, store: Path | str
) -> list[str]:
    """The needed news without a text vector; a MissingVectorsError unless missing == "learned"."""
    lacking = [news_ids[i] for i in needed[~present[needed]]]
    if lacking and missing != "learned":
        raise MissingVectorsError(lacking, len(needed), store)
    return lacking


def text_vectors(
    store: Any,
    news_ids: Sequence[str],
    needed: np.ndarray,
    *,
    missing: str,
    expected_dim: int | None = None,
) -> tuple[TextVectors, list[str]]:
    """Vectors of `news_ids` (index 0 = padding) and the needed news the store lacks.

    A needed news without a vector is a MissingVectorsError unless missing == "learned"; news
    that no impression uses may lack one (they are never scored).
    """
    if expected_dim is not None and store.dim != expected_dim:
        raise InputError(
            f"vectors have dimension {store.dim} but the model was trained on {expected_dim}-d vectors "
            "(use the store the run was trained with, or one made by the same model)",
            path=store.path,
        )
    matrix, _ = store.lookup(list(news_ids[1:]))
    matrix = np.concatenate([np.zeros((1, store.dim), dtype=np.float32), matrix])
    present = np.fromiter(
        (i > 0 and store.has(id_) for i, id_ in enumerate(news_ids)), dtype=bool, count=len(news_ids)
    )
    lacking = check_coverage(present, news_ids, needed, missing=missing, store=store.path)
    return TextVectors(
        matrix=matrix, present=present, store_path=Path(store.path), meta=dict(store.meta)
    ), lacking


def news_features(
    news_vocab: Vocab,
    news: NewsTable,
    vocabs: Vocabularies,
    *,
    text: TextVectors | None = None,
    graph_index: dict[str, int] | None = None,
    known: np.ndarray | None = None,
) -> NewsFeatures:
    """Per-news inputs for `news_vocab` (any dataset's), mapped onto the run's vocabularies;
    `known`: the news indices of the training impressions (they set the text centre)."""
    ids = news_vocab.ids
    rows = [news.index.get(id_) for id_ in ids]
    category = [vocabs.categories.get(news.category[r]) if r is not None else 0 for r in rows]
    subcategory = [vocabs.subcategories.get(news.subcategory[r]) if r is not None else 0 for r in rows]
    id_index = [vocabs.ids.get(id_) for id_ in ids]
    id_index[0] = 0
    graph_node = None
    if graph_index is not None:
        nodes = [graph_index.get(id_, NO_GRAPH_NODE) for id_ in ids]
        nodes[0] = NO_GRAPH_NODE
        graph_node = torch.tensor(nodes, dtype=torch.long)
    return NewsFeatures(
        id_index=torch.tensor(id_index, dtype=torch.long),
        category=torch.tensor(category, dtype=torch.long),
        subcategory=torch.tensor(subcategory, dtype=torch.long),
        text=torch.from_numpy(text.matrix) if text is not None else None,
        text_present=torch.from_numpy(text.present) if text is not None else None,
        graph_node=graph_node,
        known=None if known is None else _mask(len(ids), known),
    )


def _mask(size: int, rows: np.ndarray) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[torch.from_numpy(np.asarray(rows, dtype=np.int64))] = True
    mask[0] = False  # padding
    return mask


@dataclass
class DataContext:
    """What `build_model` needs from the data: vocabularies, per-news inputs, text size, graph."""

    vocabs: Vocabularies
    features: NewsFeatures
    text_dim: int | None = None
    graph: Any = None  # newsrec_cli.graph.NewsGraph or None
    text_check: Any = None  # newsrec_cli.embed.store.TextCheck of the store against the dataset
    text_meta: dict[str, Any] | None = None  # the store's meta.json (provider, model, template)


def prepare_context(
    settings: TrainSettings,
    dataset: MindDataset,
    train: Impressions,
    valid: Impressions,
    *,
    store: str | Path | None,
    graph: str | Path | None,
    trained_dim: int | None = None,
) -> tuple[DataContext, list[str]]:
    """Vocabularies, text vectors, graph nodes and categories for a fresh model, and the needed
    news the store lacks (allowed only with missing="learned"). `newsrec train` and `diagnose
    --init` both build their model from this, so a checked configuration is the trained one.
    """
    vocabs = build_vocabularies(dataset.news_vocab, dataset.news, train, users=settings.use_user_id)
    text, lacking, text_dim, text_check, text_meta = None, [], None, None, None
    if settings.use_text:
        if store is None:
            raise SettingsError(
                "train: text vectors need --embeddings STORE (or turn text off: --no-use-text)"
            )
        needed = needed_news(train, valid)
        if settings.missing == "error":
            # No store can hold text for news that news.tsv lacks: say so rather than "embed them".
            dataset.require_rows(train, valid)
        opened = open_store(store)
        text_check = check_store_texts(
            opened, dataset.news, [dataset.news_vocab.ids[i] for i in needed], data=dataset.root
        )
        text, lacking = text_vectors(
            opened,
            dataset.news_vocab.ids,
            needed,
            missing=settings.missing,
            expected_dim=trained_dim,
        )
        text_dim = opened.dim
        text_meta = dict(opened.meta)
        if settings.finetune_text and text_check.unverified:
            raise InputError(
                f"--finetune-text reads each news' text again, but {counted(text_check.unverified, 'vector')} of "
                "the store cannot be checked against its text (no fingerprint); embed it again with newsrec embed",
                path=opened.path,
            )
    news_graph = None
    if graph is not None and settings.use_graph:
        from newsrec_cli.graph import load_graph  # torch_geometric loads only when a graph is used

        news_graph = load_graph(graph)
    features = news_features(
        dataset.news_vocab,
        dataset.news,
        vocabs,
        text=text,
        graph_index=news_graph.news_index if news_graph is not None else None,
        known=needed_news(train),
    )
    context = DataContext(
        vocabs=vocabs,
        features=features,
        text_dim=text_dim,
        graph=news_graph,
        text_check=text_check,
        text_meta=text_meta,
    )
    return context, lacking
