"""Reader of MIND's news.tsv into a column table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from newsrec_cli.errors import InputError
from newsrec_cli.mind.entities import Entity, parse_entities
from newsrec_cli.mind.lines import iter_rows
from newsrec_cli.mind.report import BadLine, ReadReport

NEWS_COLUMNS = (
    "NewsID",
    "Category",
    "SubCategory",
    "Title",
    "Abstract",
    "URL",
    "TitleEntities",
    "AbstractEntities",
)


@dataclass
class NewsTable:
    """The rows of one or more news.tsv files as columns; row i is news `ids[i]`."""

    ids: list[str] = field(default_factory=list)
    category: list[str] = field(default_factory=list)
    subcategory: list[str] = field(default_factory=list)
    title: list[str] = field(default_factory=list)
    abstract: list[str] = field(default_factory=list)
    url: list[str] = field(default_factory=list)
    title_entities: list[list[Entity]] = field(default_factory=list)
    abstract_entities: list[list[Entity]] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    reports: list[ReadReport] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, row: tuple, title_entities: list[Entity], abstract_entities: list[Entity]) -> None:
        self.index[row[0]] = len(self.ids)
        self.ids.append(row[0])
        self.category.append(row[1])
        self.subcategory.append(row[2])
        self.title.append(row[3])
        self.abstract.append(row[4])
        self.url.append(row[5])
        self.title_entities.append(title_entities)
        self.abstract_entities.append(abstract_entities)

    def entities_of(self, row: int) -> list[Entity]:
        """Title then abstract entities of one news row."""
        return self.title_entities[row] + self.abstract_entities[row]

    def merge(self, other: NewsTable) -> None:
        """Add the rows of `other` whose IDs are new (MIND's train and dev news overlap)."""
        for i, id_ in enumerate(other.ids):
            if id_ in self.index:
                continue
            self.append(
                (
                    id_,
                    other.category[i],
                    other.subcategory[i],
                    other.title[i],
                    other.abstract[i],
                    other.url[i],
                ),
                other.title_entities[i],
                other.abstract_entities[i],
            )
        self.reports.extend(other.reports)


def read_news(
    path: str | Path,
    *,
    on_bad_lines: Literal["error", "skip"] = "error",
    bad_entities: Literal["error", "collect"] = "error",
    known: NewsTable | None = None,
) -> NewsTable:
    """Read one news.tsv.

    A malformed row (wrong column count, empty or duplicate ID, bad entity JSON) raises InputError
    naming file, line and field; with on_bad_lines="skip" it is skipped and listed in the table's
    report instead. With bad_entities="collect" unparsable entity JSON keeps the row, with no
    entities for that column, and is counted per column in the report (what the graph builder wants).
    """
    path = Path(path)
    table = NewsTable()
    report = ReadReport(path=str(path), bad_entities={"TitleEntities": [], "AbstractEntities": []})
    for number, line in iter_rows(path, on_bad_lines, report):
        report.lines += 1
        row = line.split("\t")
        problem = _check_row(row, table.index)
        if problem is None and known is not None and row[0] in known.index:
            continue
        if problem is None:
            parsed: list[list[Entity]] = []
            for column, text in (("TitleEntities", row[6]), ("AbstractEntities", row[7])):
                try:
                    parsed.append(parse_entities(text))
                except ValueError as exc:
                    if bad_entities == "collect":
                        report.bad_entities[column].append(BadLine(str(path), number, column, str(exc)))
                        parsed.append([])
                    else:
                        problem = (column, str(exc))
                        break
        if problem is not None:
            column, reason = problem
            if on_bad_lines == "error":
                raise InputError(reason, path=path, line=number, field=column)
            report.skipped.append(BadLine(str(path), number, column, reason))
            continue
        table.append(tuple(row[:6]), parsed[0], parsed[1])
    table.reports.append(report)
    return table


def _check_row(row: list[str], seen: dict[str, int]) -> tuple[str, str] | None:
    if len(row) != len(NEWS_COLUMNS):
        return ("columns", f"expected {len(NEWS_COLUMNS)} tab-separated columns, found {len(row)}")
    if not row[0].strip():
        return ("NewsID", "empty news ID")
    if row[0] in seen:
        return ("NewsID", f"duplicate news ID {row[0]!r}")
    return None
