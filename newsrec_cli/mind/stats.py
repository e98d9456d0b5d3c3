"""Numbers that describe a MIND dataset, per split: sizes, click rate, history lengths, coverage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from newsrec_cli.mind.behaviors import UNLABELED, Impressions, read_behaviors
from newsrec_cli.mind.layout import find_splits
from newsrec_cli.mind.news import NewsTable, read_news
from newsrec_cli.mind.report import ReadReport
from newsrec_cli.mind.vocab import Vocab

PERCENTILES = (10, 25, 50, 75, 90, 99)


@dataclass
class SplitStats:
    """The numbers of one split (or of the whole dataset, `name="all"`)."""

    name: str
    news: int
    users: int
    impressions: int
    candidates: int
    clicks: int | None  # None for an unlabeled (test) split
    candidates_per_impression: float
    history_mean: float
    history_empty: float  # share of impressions with no history
    history_percentiles: dict[str, float]
    history_in_news: float  # share of history IDs that have a row in news.tsv
    candidates_in_news: float
    news_with_entities: float
    first_time: str | None
    last_time: str | None
    days: int
    skipped_lines: int = 0

    @property
    def click_rate(self) -> float | None:
        return None if self.clicks is None or not self.candidates else self.clicks / self.candidates

    def to_dict(self) -> dict:
        data = asdict(self)
        data["click_rate"] = self.click_rate
        return data


@dataclass
class DatasetStats:
    root: Path
    splits: list[SplitStats] = field(default_factory=list)
    reports: list[ReadReport] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "splits": {s.name: s.to_dict() for s in self.splits},
            "skipped": [r.summary() for r in self.reports if not r.ok],
        }


def dataset_stats(path: str | Path, *, on_bad_lines: Literal["error", "skip"] = "error") -> DatasetStats:
    """Read every split of a dataset and describe it; a split's IDs are checked against its own news.tsv."""
    folders = find_splits(path)
    result = DatasetStats(root=Path(path))
    news_vocab, user_vocab = Vocab(), Vocab()
    all_news = NewsTable()
    parts: list[tuple[str, NewsTable, Impressions, int]] = []
    for name, folder in folders.items():
        news = read_news(folder / "news.tsv", on_bad_lines=on_bad_lines, bad_entities="collect")
        for id_ in news.ids:
            news_vocab.add(id_)
        report = ReadReport(path=str(folder / "behaviors.tsv"))
        imps = read_behaviors(
            folder / "behaviors.tsv", news_vocab, user_vocab, on_bad_lines=on_bad_lines, report=report
        )
        result.reports += news.reports + [report]
        all_news.merge(news)
        skipped = sum(len(r.skipped) for r in news.reports) + len(report.skipped)
        parts.append((name, news, imps, skipped))
    # the vocabularies are complete only now, so the numbers are computed after all reads
    for name, news, imps, skipped in parts:
        result.splits.append(split_stats(name, news, imps, skipped))
    if len(parts) > 1:
        merged = Impressions.concat([imps for _, _, imps, _ in parts])
        skipped = sum(s.skipped_lines for s in result.splits)
        result.splits.append(split_stats("all", all_news, merged, skipped))
    return result


def split_stats(name: str, news: NewsTable, imps: Impressions, skipped_lines: int = 0) -> SplitStats:
    """Describe impressions against the news table their IDs should be found in."""
    known = np.zeros(len(imps.news_vocab) + 1, dtype=bool)
    for id_ in news.ids:
        known[imps.news_vocab.get(id_)] = True
    known[0] = False
    lengths = imps.history_lengths
    labeled = len(imps.labels) > 0 and bool((imps.labels != UNLABELED).all())
    with_entities = sum(1 for t, a in zip(news.title_entities, news.abstract_entities, strict=True) if t or a)
    times = imps.times
    first = last = None
    days = 0
    if len(times):
        first, last = (str(t.astype("datetime64[m]")).replace("T", " ") for t in (times.min(), times.max()))
        days = len(np.unique(times.astype("datetime64[D]")))
    return SplitStats(
        name=name,
        news=len(news),
        users=len(np.unique(imps.users)),
        impressions=len(imps),
        candidates=len(imps.candidates),
        clicks=int((imps.labels == 1).sum()) if labeled else None,
        candidates_per_impression=_mean(imps.candidate_counts),
        history_mean=_mean(lengths),
        history_empty=_mean(lengths == 0),
        history_percentiles={
            f"p{p}": float(np.percentile(lengths, p)) if len(lengths) else 0.0 for p in PERCENTILES
        },
        history_in_news=_mean(known[imps.history]),
        candidates_in_news=_mean(known[imps.candidates]),
        news_with_entities=with_entities / len(news) if len(news) else 0.0,
        first_time=first,
        last_time=last,
        days=days,
        skipped_lines=skipped_lines,
    )


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else 0.0
