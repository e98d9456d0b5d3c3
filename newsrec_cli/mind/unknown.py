"""Where impressions use news IDs that news.tsv lacks: per file and field, the first line and the counts.

Impressions keep no line numbers (MIND-large's would cost memory on every load for the rare error
that needs them), so the line is found when it is asked for: the impression IDs that use an
unknown news ID come from the arrays, and the file is read only up to the first line that holds
one of them with an unknown ID in that field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newsrec_cli.mind.behaviors import DISTINCT_CHUNK, Impressions
from newsrec_cli.mind.lines import BOM
from newsrec_cli.plural import counted

FIELDS = (("History", "history", "history_offsets", 3), ("Impressions", "candidates", "candidate_offsets", 4))


@dataclass(frozen=True)
class UnknownUse:
    """The lines of one behaviors file whose `field` names a news ID without a news.tsv row."""

    path: str
    field: str  # "History" or "Impressions" (the behaviors.tsv column)
    line: int | None  # the first such line; None when the file no longer holds it
    lines: int  # how many lines (impressions) of those read use one
    ids: list[str]  # the distinct unknown IDs, in the order of the news vocabulary

    def describe(self, *, with_path: bool = True) -> str:
        """E.g. `field History of data/train/behaviors.tsv: 2 IDs on 3 lines, first line 17`."""
        where = f"field {self.field}" + (f" of {self.path}" if with_path else "")
        first = f", first line {self.line}" if self.line is not None else ""
        return f"{where}: {counted(len(self.ids), 'ID')} on {counted(self.lines, 'line')}{first}"


def unknown_uses(parts: Sequence[Impressions], unknown: np.ndarray) -> list[UnknownUse]:
    """Every (file, field) of `parts` that uses a news index marked in `unknown` (bool per index).

    In the order of the parts' files, History before Impressions. Parts read from one file (the
    splits a protocol cuts from it) are counted together.
    """
    found: dict[tuple[str, str], tuple[set[int], set[int]]] = {}
    vocab = parts[0].news_vocab.ids if parts else []
    for imps in parts:
        for field, values_name, offsets_name, _ in FIELDS:
            values, offsets = getattr(imps, values_name), getattr(imps, offsets_name)
            positions = _positions(values, unknown)
            if not len(positions):
                continue
            rows = np.unique(np.searchsorted(offsets, positions, side="right") - 1)
            ids, news = found.setdefault((imps.source, field), (set(), set()))
            ids.update(imps.impression_ids[rows].tolist())
            news.update(np.unique(values[positions]).tolist())
    firsts: dict[str, dict[str, int]] = {}
    for source in dict.fromkeys(source for source, _ in found):
        wanted = {field: found[(source, field)] for field, *_ in FIELDS if (source, field) in found}
        words = {field: {vocab[i] for i in news} for field, (_, news) in wanted.items()}
        ids = {field: impression_ids for field, (impression_ids, _) in wanted.items()}
        firsts[source] = _first_lines(Path(source), ids, words) if source else {}
    return [
        UnknownUse(source, field, firsts[source].get(field), len(ids), [vocab[i] for i in sorted(news)])
        for (source, field), (ids, news) in found.items()
    ]


def _positions(values: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """Flat positions of `values` marked in `unknown`, a slice at a time (arrays may be mapped)."""
    hits = [
        np.flatnonzero(unknown[values[start : start + DISTINCT_CHUNK]]) + start
        for start in range(0, len(values), DISTINCT_CHUNK)
    ]
    hits = [h for h in hits if len(h)]
    return np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)


def _first_lines(path: Path, ids: dict[str, set[int]], words: dict[str, set[str]]) -> dict[str, int]:
    """For each field, the first line whose impression ID is in ids[field] and whose field holds one
    of words[field]; the file is read until every field has its line."""
    columns = {field: column for field, _, _, column in FIELDS}
    encoded = {field: {w.encode("utf-8") for w in found} for field, found in words.items()}
    firsts: dict[str, int] = {}
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1:
                    raw = raw.removeprefix(BOM)
                head, _, _ = raw.partition(b"\t")
                try:
                    impression = int(head)
                except ValueError:
                    continue
                for field in ids.keys() - firsts.keys():
                    if impression in ids[field] and _holds(raw, columns[field], encoded[field]):
                        firsts[field] = number
                if len(firsts) == len(ids):
                    break
    except OSError:
        pass  # the file moved since it was read: the counts still stand
    return firsts


def _holds(raw: bytes, column: int, words: set[bytes]) -> bool:
    fields = raw.rstrip(b"\r\n").split(b"\t")
    if len(fields) <= column:
        return False
    return any(token.rpartition(b"-")[0] in words or token in words for token in fields[column].split())
