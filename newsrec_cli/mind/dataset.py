"""A dataset: one MIND folder, or a parent with train/, valid/ (or dev/) and test/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from newsrec_cli.errors import InputError
from newsrec_cli.mind.behaviors import Impressions, distinct_news
from newsrec_cli.mind.cache import CacheInfo, load_behaviors
from newsrec_cli.mind.layout import SINGLE, find_splits  # also imported from here by other modules
from newsrec_cli.mind.news import NewsTable, read_news
from newsrec_cli.mind.protocol import Protocol, make_protocol
from newsrec_cli.mind.report import ReadReport
from newsrec_cli.mind.unknown import unknown_uses
from newsrec_cli.mind.vocab import Vocab
from newsrec_cli.plural import agree, counted


@dataclass
class MindDataset:
    """News of all splits in one table, impressions per split, shared vocabularies.

    `news_vocab` index i is row i-1 of `news` for i <= len(news); indices beyond are IDs that
    behaviors mention but no news.tsv has (a coverage gap `newsrec data stats` reports).
    """

    root: Path
    folders: dict[str, Path]
    news: NewsTable
    news_vocab: Vocab
    user_vocab: Vocab
    splits: dict[str, Impressions] = field(default_factory=dict)
    reports: list[ReadReport] = field(default_factory=list)
    caches: dict[str, CacheInfo] = field(default_factory=dict)

    @property
    def vec_files(self) -> list[Path]:
        """entity_embedding.vec files found beside the news (any split, or the root)."""
        candidates = [self.root / "entity_embedding.vec"] + [
            f / "entity_embedding.vec" for f in self.folders.values()
        ]
        seen: list[Path] = []
        for p in candidates:
            if p.exists() and p.resolve() not in [s.resolve() for s in seen]:
                seen.append(p)
        return seen

    def in_news(self, news_idx: np.ndarray) -> np.ndarray:
        """Which vocabulary indices have a row in news.tsv."""
        return (news_idx >= 1) & (news_idx <= len(self.news))

    def without_rows(self, *parts: Impressions) -> np.ndarray:
        """Distinct news indices the impressions use (histories and candidates) that news.tsv lacks."""
        needed = distinct_news(*parts)
        return needed[~self.in_news(needed)]

    def require_rows(self, *parts: Impressions) -> None:
        """InputError naming the count, the first IDs, and per file and field the first line and
        the number of lines, when an impression uses a news news.tsv lacks.

        A model scores a news by its row (text, category, entities): one without a row would be
        scored on padding, a wrong number given as a right one. Train and evaluate both refuse.
        """
        unknown = self.without_rows(*parts)
        if not len(unknown):
            return
        marked = np.zeros(len(self.news_vocab), dtype=bool)
        marked[unknown] = True
        uses = unknown_uses(parts, marked)
        first = ", ".join(self.news_vocab.ids[i] for i in unknown[:5])
        where = "; ".join(use.describe(with_path=use.path != uses[0].path) for use in uses)
        # the error points at the earliest line of the first file, whichever field it is in
        at = min((u for u in uses if u.path == uses[0].path), key=lambda u: u.line or 0, default=None)
        raise InputError(
            f"{counted(len(unknown), 'news ID')} in the impressions {agree(len(unknown), 'has', 'have')} "
            f"no row in news.tsv (first: {first}); {where}; drop them with `newsrec filter "
            "--require-embeddings STORE`, or train with --missing learned",
            path=at.path if at else parts[0].source or self.root,
            line=at.line if at else None,
            field=at.field if at else "History/Impressions",
        )

    def protocol(
        self,
        split: Literal["auto", "time", "impression"] = "auto",
        valid_days: int | None = None,
        valid_fraction: float = 0.1,
        seed: int = 42,
        select_on: Literal["auto", "valid"] = "auto",
    ) -> Protocol:
        """Training, selection and reported impressions (`mind/protocol.py`)."""
        return make_protocol(self, split, valid_days, valid_fraction, seed, select_on)

    def train_valid(
        self,
        split: Literal["auto", "time", "impression"] = "auto",
        valid_days: int | None = None,
        valid_fraction: float = 0.1,
        seed: int = 42,
        select_on: Literal["auto", "valid"] = "auto",
    ) -> tuple[Impressions, Impressions, str]:
        """Training and selection impressions and a sentence saying how they were split."""
        chosen = self.protocol(split, valid_days, valid_fraction, seed, select_on)
        return chosen.train, chosen.select, chosen.note


def load_dataset(
    path: str | Path,
    *,
    on_bad_lines: Literal["error", "skip"] = "error",
    bad_entities: Literal["error", "collect"] = "error",
    behaviors: bool = True,
    splits: tuple[str, ...] | None = None,
    cache: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> MindDataset:
    """Read the news of every split (union by ID) and, if asked, the behaviors of each split.

    Behaviors go through the parse-once cache (`mind/cache.py`): the first read of a split
    writes its arrays, later reads memory-map them. `progress(split, bytes, size)` follows a parse.
    """
    root = Path(path)
    folders = find_splits(root)
    if splits is not None:
        folders = {k: v for k, v in folders.items() if k in splits or k == SINGLE}
    news = NewsTable()
    for folder in folders.values():
        news.merge(
            read_news(folder / "news.tsv", on_bad_lines=on_bad_lines, bad_entities=bad_entities, known=news)
        )
    news_vocab = Vocab(news.ids)
    user_vocab = Vocab()
    dataset = MindDataset(
        root=root,
        folders=folders,
        news=news,
        news_vocab=news_vocab,
        user_vocab=user_vocab,
        reports=list(news.reports),
    )
    if behaviors:
        for name, folder in folders.items():
            file = folder / "behaviors.tsv"
            if not file.exists():
                raise InputError("behaviors.tsv not found", path=file)
            report = ReadReport(path=str(file))
            on_bytes = (
                None if progress is None else (lambda done, size, name=name: progress(name, done, size))
            )
            dataset.splits[name], info = load_behaviors(
                file,
                news.ids,
                news_vocab,
                user_vocab,
                on_bad_lines=on_bad_lines,
                report=report,
                progress=on_bytes,
                cache=cache,
            )
            if info is not None:
                dataset.caches[name] = info
            dataset.reports.append(report)
    return dataset
