"""Build the news-entity graph of a MIND dataset: every split's news in one graph.

    build_graph(Path("data/mind"), GraphSettings(min_confidence=0.5), entity_store=None)

News rows follow the dataset's news table (train, then valid, then test news not seen before),
so graph row i is news vocabulary index i + 1 of `load_dataset` on the same folder; callers should
still map by ID with `graph.news_index`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from newsrec_cli.graph.features import resolve_entity_features
from newsrec_cli.graph.graph import (
    FORMAT,
    FORMAT_VERSION,
    MENTION_RELATIONS,
    Cooccurrence,
    GraphArrays,
    Mentions,
    NewsGraph,
    assemble,
)
from newsrec_cli.mind import Entity, NewsTable, load_dataset
from newsrec_cli.mind.report import FIRST_FEW
from newsrec_cli.plural import counted
from newsrec_cli.settings import GraphSettings

COLUMNS = {"title": "TitleEntities", "abstract": "AbstractEntities"}

ProgressFn = Callable[[int, int], None]  # (news done, news in all)


@dataclass
class BuildReport:
    """What the build read, kept, dropped and could not parse (also stored in meta.json)."""

    dataset: str
    splits: list[str]
    news: int = 0
    entities: int = 0
    links_read: dict[str, int] = field(default_factory=dict)
    links_below_confidence: dict[str, int] = field(default_factory=dict)
    bad_entities: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped_lines: int = 0
    features: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def warnings(self) -> list[str]:
        """One line per problem a user should know about (bad JSON per column, skipped lines)."""
        lines = []
        if self.news and not self.entities:
            lines.append(
                "no entity links in these news: every news item gets the same graph vector "
                "(train without --graph, or use data with TitleEntities/AbstractEntities)"
            )
        for column, bad in self.bad_entities.items():
            if bad["count"]:
                first = ", ".join(bad["first"])
                lines.append(
                    f"{bad['count']:,} news with unparsable {column} JSON kept without those entities "
                    f"(first: {first})"
                )
        if self.skipped_lines:
            lines.append(f"{counted(self.skipped_lines, 'malformed news line')} skipped")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "splits": self.splits,
            "news": self.news,
            "entities": self.entities,
            "links_read": self.links_read,
            "links_below_confidence": self.links_below_confidence,
            "bad_entities": self.bad_entities,
            "skipped_lines": self.skipped_lines,
            "features": self.features,
            "seconds": round(self.seconds, 3),
        }


def build_graph(
    dataset: str | Path,
    settings: GraphSettings,
    *,
    entity_store: Path | None = None,
    entity_vec: Sequence[Path] | None = None,
    on_bad_lines: Literal["error", "skip"] = "error",
    progress: ProgressFn | None = None,
) -> tuple[NewsGraph, BuildReport]:
    """Read the news of every split and build the graph with its entity features.

    `entity_vec` replaces the entity_embedding.vec files found in the dataset folders; give an
    empty list to use none. `progress(done, total)` is called as news are processed.
    """
    start = time.perf_counter()
    data = load_dataset(dataset, on_bad_lines=on_bad_lines, bad_entities="collect", behaviors=False)
    report = BuildReport(dataset=str(dataset), splits=list(data.folders), news=len(data.news))
    report.skipped_lines = sum(len(r.skipped) for r in data.reports)
    for column in COLUMNS.values():
        bad = [b for r in data.reports for b in r.bad_entities.get(column, [])]
        report.bad_entities[column] = {
            "count": len(bad),
            "first": [f"{b.path}:{b.line}" for b in bad[:FIRST_FEW]],
        }

    entity_ids, mentions = collect_mentions(data.news, settings.min_confidence, report, progress)
    report.entities = len(entity_ids)
    cooccurrence = None
    if settings.cooccurrence_min > 0:
        cooccurrence = count_cooccurrence(
            mentions, len(data.news), len(entity_ids), settings.cooccurrence_min
        )

    vec_files = list(entity_vec) if entity_vec is not None else data.vec_files
    source, features, feature_report = resolve_entity_features(
        entity_ids, vec_files=vec_files, store_path=entity_store
    )
    report.features = feature_report
    arrays = GraphArrays(
        news_ids=list(data.news.ids),
        entity_ids=entity_ids,
        mentions=mentions,
        cooccurrence=cooccurrence,
        entity_source=source,
        features=features,
    )
    report.seconds = time.perf_counter() - start
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "min_confidence": settings.min_confidence,
            "cooccurrence_min": settings.cooccurrence_min,
        },
        "build": report.to_dict(),
    }
    return assemble(arrays, meta), report


def collect_mentions(
    news: NewsTable,
    min_confidence: float,
    report: BuildReport,
    progress: ProgressFn | None = None,
) -> tuple[list[str], dict[str, Mentions]]:
    """Entity rows in order of first mention, and one Mentions per column.

    Several links of one entity in one column (MIND repeats some) become one edge: the highest
    confidence and the sum of their occurrences.
    """
    entity_index: dict[str, int] = {}
    columns = {"title": news.title_entities, "abstract": news.abstract_entities}
    parts: dict[str, tuple[list[int], list[int], list[float], list[int]]] = {
        relation: ([], [], [], []) for relation in MENTION_RELATIONS
    }
    read = dict.fromkeys(MENTION_RELATIONS, 0)
    dropped = dict.fromkeys(MENTION_RELATIONS, 0)
    for row in range(len(news)):
        for relation in MENTION_RELATIONS:
            links: list[Entity] = columns[relation][row]
            if not links:
                continue
            merged: dict[int, list[float]] = {}
            for entity in links:
                read[relation] += 1
                if entity.confidence < min_confidence:
                    dropped[relation] += 1
                    continue
                j = entity_index.setdefault(entity.wikidata_id, len(entity_index))
                occurrences = max(1, len(entity.offsets))
                if j in merged:
                    merged[j][0] = max(merged[j][0], entity.confidence)
                    merged[j][1] += occurrences
                else:
                    merged[j] = [entity.confidence, occurrences]
            news_rows, entity_rows, confidence, occurrences = parts[relation]
            for j, (conf, occ) in merged.items():
                news_rows.append(row)
                entity_rows.append(j)
                confidence.append(conf)
                occurrences.append(int(occ))
        if progress is not None and (row + 1) % 10_000 == 0:
            progress(row + 1, len(news))
    if progress is not None:
        progress(len(news), len(news))
    report.links_read = read
    report.links_below_confidence = dropped
    mentions = {
        relation: Mentions(
            news=np.asarray(cols[0], dtype=np.int64),
            entity=np.asarray(cols[1], dtype=np.int64),
            confidence=np.asarray(cols[2], dtype=np.float32),
            occurrences=np.asarray(cols[3], dtype=np.int32),
        )
        for relation, cols in parts.items()
    }
    return list(entity_index), mentions


def count_cooccurrence(
    mentions: dict[str, Mentions], num_news: int, num_entities: int, min_count: int
) -> Cooccurrence:
    """Entity pairs named together (title or abstract) in at least `min_count` news."""
    news = np.concatenate([m.news for m in mentions.values()])
    entity = np.concatenate([m.entity for m in mentions.values()])
    # One (news, entity) pair per news even when the entity is in title and abstract.
    pairs = np.unique(news * num_entities + entity)
    news, entity = pairs // num_entities, pairs % num_entities
    bounds = np.searchsorted(news, np.arange(num_news + 1))
    sizes = np.diff(bounds)
    a_parts, b_parts = [], []
    # News with the same number of entities c form an [n, c] block (entities ascending per row):
    # one triu_indices per c gives every pair of every such news at once.
    for c in np.unique(sizes[sizes >= 2]):
        starts = bounds[:-1][sizes == c]
        block = entity[starts[:, None] + np.arange(c)]
        i, j = np.triu_indices(int(c), k=1)
        a_parts.append(block[:, i].reshape(-1))
        b_parts.append(block[:, j].reshape(-1))
    if not a_parts:
        empty = np.zeros(0, dtype=np.int64)
        return Cooccurrence(a=empty, b=empty.copy(), count=np.zeros(0, dtype=np.int32))
    keys, counts = np.unique(
        np.concatenate(a_parts) * num_entities + np.concatenate(b_parts), return_counts=True
    )
    keep = counts >= min_count
    keys, counts = keys[keep], counts[keep]
    return Cooccurrence(
        a=(keys // num_entities).astype(np.int64),
        b=(keys % num_entities).astype(np.int64),
        count=counts.astype(np.int32),
    )
