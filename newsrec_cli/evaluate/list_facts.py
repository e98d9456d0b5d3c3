"""What the beyond-accuracy metrics and the re-rankers read about news and users, indexed by news
vocabulary index: L2-normalised text vectors, category codes, per-impression history category
distributions, distinct training users per news, and clicks over the reported split.

Built once per evaluation from the dataset, the run's text store and the splits; the pure
metrics (`newsrec_cli.evaluate.beyond`) and `newsrec_cli.rerank` take these arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import InputError
from newsrec_cli.evaluate.beyond import distinct_user_counts, history_distribution
from newsrec_cli.mind.behaviors import Impressions, distinct_news, gather_segments
from newsrec_cli.mind.dataset import MindDataset

UNKNOWN = "(no news row)"


@dataclass
class ListFacts:
    """Per news index (0 is padding): text vectors (None without a store), category codes in
    [0, C), distinct training users, and clicks in the reported split."""

    vectors: np.ndarray | None  # float64 [V, D], rows L2-normalised (zeros where no vector)
    categories: np.ndarray  # int64 [V]
    category_names: list[str]
    user_counts: np.ndarray  # int64 [V]
    users: int  # distinct users of the training split
    clicks: np.ndarray  # float64 [V]
    catalogue: np.ndarray  # int64: the reported split's distinct candidates
    history_codes: np.ndarray  # int64 [H]: the category of each entry of the split's histories

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    def history_distribution(self, history_offsets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Category distributions (B, C) of the histories of impressions `rows` (None: all)."""
        offsets = np.asarray(history_offsets, dtype=np.int64)
        rows = np.arange(len(offsets) - 1) if rows is None else np.asarray(rows, dtype=np.int64)
        sub_offsets, take = gather_segments(offsets, rows)
        return history_distribution(self.history_codes[take], sub_offsets, self.n_categories)


def list_facts(
    dataset: MindDataset, train: Impressions | None, target: Impressions, store: Path | None
) -> ListFacts:
    """The facts of `target` (the reported split): categories from news.tsv, text vectors from
    `store` (None: no ILD, no MMR), users and clicks counted in `train` and `target`."""
    size = len(dataset.news_vocab)
    names = [*dataset.news.category, UNKNOWN]
    uniques, codes = np.unique(np.asarray(names, dtype=object), return_inverse=True)
    categories = np.full(size, int(np.flatnonzero(uniques == UNKNOWN)[0]), dtype=np.int64)
    rows = min(size - 1, len(dataset.news))
    categories[1 : rows + 1] = codes[:rows]  # news index i is news.tsv row i - 1 (MindDataset)
    vectors = None if store is None else _unit_vectors(EmbeddingStore.open(store), dataset, target)
    if train is not None and len(train):
        counts, users = _training_users(train, size)
    else:
        counts, users = np.zeros(size, dtype=np.int64), 0
    clicks = np.zeros(size, dtype=np.float64)
    if target.labeled:
        clicked = np.asarray(target.candidates)[np.asarray(target.labels) == 1]
        clicks += np.bincount(clicked, minlength=size)[:size]
    catalogue = np.unique(np.asarray(target.candidates, dtype=np.int64))
    history_codes = categories[np.asarray(target.history, dtype=np.int64)]
    return ListFacts(
        vectors, categories, [str(n) for n in uniques], counts, users, clicks, catalogue, history_codes
    )


def _unit_vectors(store: EmbeddingStore, dataset: MindDataset, target: Impressions) -> np.ndarray:
    """The store's vectors of the split's news, by news index, L2-normalised; a candidate without a
    vector is an error naming the store (ILD and MMR would silently treat it as orthogonal)."""
    ids = dataset.news_vocab.ids
    needed = distinct_news(target)
    out = np.zeros((len(ids), store.dim), dtype=np.float64)
    matrix, missing = store.lookup([ids[i] for i in needed])
    candidates = set(np.unique(np.asarray(target.candidates)).tolist())
    lacking = [m for m in missing if dataset.news_vocab.get(m) in candidates]
    if lacking:
        raise InputError(
            f"{len(lacking):,} candidate news have no text vector (e.g. {lacking[0]}); ILD@k and MMR "
            "need a vector for every candidate",
            path=store.path,
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out[needed] = np.divide(matrix, norms, out=np.zeros_like(matrix, dtype=np.float64), where=norms > 0)
    return out


def _training_users(train: Impressions, size: int) -> tuple[np.ndarray, int]:
    """Distinct training users per news (in a history or among clicked candidates), and U."""
    clicked = np.asarray(train.labels) == 1
    users = np.concatenate(
        [
            np.repeat(train.users, train.history_lengths),
            np.repeat(train.users, train.candidate_counts)[clicked],
        ]
    )
    items = np.concatenate([np.asarray(train.history), np.asarray(train.candidates)[clicked]])
    keep = items < size
    return distinct_user_counts(users[keep], items[keep], size), int(len(np.unique(train.users)))
