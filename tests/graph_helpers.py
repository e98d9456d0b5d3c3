"""Helpers of the graph tests: the shared real fixtures and small MIND folders made from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_NEWS = SHARED / "mind_tiny" / "news.tsv"
RELATION_VEC = SHARED / "relation_embedding.vec"


def need_shared() -> None:
    if not REAL_NEWS.exists() or not RELATION_VEC.exists():
        pytest.skip(f"shared MIND fixtures not found at {SHARED}")


def real_lines() -> list[str]:
    need_shared()
    return REAL_NEWS.read_text(encoding="utf-8").splitlines()


def write_mind(folder: Path, lines: list[str]) -> Path:
    """A MIND folder with these news lines and an empty behaviors.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (folder / "behaviors.tsv").write_text("", encoding="utf-8")
    return folder


def direct_links(
    lines: list[str], min_confidence: float = 0.0
) -> dict[str, dict[tuple[str, str], tuple[float, int]]]:
    """(news ID, WikidataId) -> (highest confidence, occurrences), per column, straight from the JSON."""
    links: dict[str, dict[tuple[str, str], tuple[float, int]]] = {"title": {}, "abstract": {}}
    for line in lines:
        fields = line.split("\t")
        for relation, text in (("title", fields[6]), ("abstract", fields[7])):
            for item in json.loads(text) if text.strip() else []:
                if item["Confidence"] < min_confidence:
                    continue
                key = (fields[0], item["WikidataId"])
                conf, occ = links[relation].get(key, (0.0, 0))
                links[relation][key] = (
                    max(conf, item["Confidence"]),
                    occ + max(1, len(item["OccurrenceOffsets"])),
                )
    return links


def relation_rows(count: int) -> list[np.ndarray]:
    """The first `count` real 100-d vectors of relation_embedding.vec (same format as entity vectors)."""
    need_shared()
    rows = []
    for line in RELATION_VEC.read_text(encoding="utf-8").splitlines()[:count]:
        rows.append(np.array(line.rstrip("\t").split("\t")[1:], dtype=np.float32))
    return rows


def write_vec(path: Path, ids: list[str], rows: list[np.ndarray]) -> Path:
    """A .vec file in MIND's layout: ID, tab-separated floats, a trailing tab."""
    text = "".join(
        id_ + "\t" + "\t".join(f"{v:.6f}" for v in row) + "\t\n" for id_, row in zip(ids, rows, strict=True)
    )
    path.write_text(text, encoding="utf-8")
    return path
