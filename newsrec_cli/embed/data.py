"""What to embed from a MIND dataset: the news of every split, and the entities they mention."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from newsrec_cli.mind.dataset import find_splits
from newsrec_cli.mind.news import NewsTable, read_news


@dataclass
class SplitNews:
    """The union of the news of all splits, and the news IDs of each split (for coverage)."""

    table: NewsTable
    split_ids: dict[str, list[str]]


def read_split_news(
    path: str | Path,
    *,
    on_bad_lines: Literal["error", "skip"] = "error",
    bad_entities: Literal["error", "collect"] = "collect",
) -> SplitNews:
    """Read news.tsv of each split once; rows are merged by ID (MIND's splits share news)."""
    table = NewsTable()
    split_ids: dict[str, list[str]] = {}
    for name, folder in find_splits(path).items():
        news = read_news(folder / "news.tsv", on_bad_lines=on_bad_lines, bad_entities=bad_entities)
        split_ids[name] = list(news.ids)
        table.merge(news)
    return SplitNews(table=table, split_ids=split_ids)


@dataclass
class EntityLabels:
    """One label per WikidataId (the first non-empty one seen), in order of first mention."""

    ids: list[str]
    labels: list[str]
    fallback_ids: list[str]  # entities with no label anywhere: their text is the WikidataId
    mentions: dict[str, int]


def entity_labels(table: NewsTable) -> EntityLabels:
    labels: dict[str, str] = {}
    mentions: dict[str, int] = {}
    for row in range(len(table)):
        for entity in table.entities_of(row):
            mentions[entity.wikidata_id] = mentions.get(entity.wikidata_id, 0) + 1
            if not labels.get(entity.wikidata_id):
                labels[entity.wikidata_id] = entity.label.strip()
    ids = list(labels)
    fallback = [i for i in ids if not labels[i]]
    return EntityLabels(
        ids=ids, labels=[labels[i] or i for i in ids], fallback_ids=fallback, mentions=mentions
    )
