"""The graph on disk: a folder of `graph.npz`, `news_ids.txt`, `entity_ids.txt` and `meta.json`.

`graph.npz` holds plain arrays only and is read with `allow_pickle=False`, so loading a graph
never runs code from the file:

    {title,abstract}_{news,entity}      int64 [E]  node rows of each news->entity link
    {title,abstract}_confidence         float32 [E]
    {title,abstract}_occurrences        int32 [E]
    cooccurs_{a,b}, cooccurs_count      int64/int64/int32 [P]  (only if built with co-occurrence)
    entity_source                       int8 [num_entities]  0 learned, 1 vec, 2 label_text
    {vec,label_text}_{rows,matrix}      int64 [n], float32 [n, dim]  (only the sources present)

Reverse edges are derived on load by the same `assemble` as after a build. Each file is written
to a temporary name and renamed; meta.json goes last, so a folder with a meta.json is complete.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.errors import InputError
from newsrec_cli.graph.graph import (
    FEATURE_SOURCES,
    FORMAT,
    FORMAT_VERSION,
    MENTION_RELATIONS,
    SOURCE_NAMES,
    Cooccurrence,
    EntityFeatures,
    GraphArrays,
    Mentions,
    NewsGraph,
    assemble,
)
from newsrec_cli.manifests import read_manifest

ARRAYS = "graph.npz"
NEWS_IDS = "news_ids.txt"
ENTITY_IDS = "entity_ids.txt"
META = "meta.json"


def check_target(path: Path) -> None:
    """A graph may be written to `path`: a new or empty folder, or one holding a graph (replaced)."""
    if path.exists() and not path.is_dir():
        raise InputError("exists and is not a folder", path=path)
    if path.is_dir() and any(path.iterdir()) and not (path / META).is_file():
        raise InputError("folder is not empty and holds no graph; choose another --out", path=path)


def save_graph(graph: NewsGraph, path: str | Path) -> Path:
    """Write `graph` into folder `path` (created; an older graph there is replaced)."""
    path = Path(path)
    check_target(path)
    path.mkdir(parents=True, exist_ok=True)
    a = graph.arrays
    arrays: dict[str, np.ndarray] = {"entity_source": a.entity_source.astype(np.int8)}
    for relation in MENTION_RELATIONS:
        m = a.mentions[relation]
        arrays[f"{relation}_news"] = m.news
        arrays[f"{relation}_entity"] = m.entity
        arrays[f"{relation}_confidence"] = m.confidence
        arrays[f"{relation}_occurrences"] = m.occurrences
    if a.cooccurrence is not None:
        arrays["cooccurs_a"] = a.cooccurrence.a
        arrays["cooccurs_b"] = a.cooccurrence.b
        arrays["cooccurs_count"] = a.cooccurrence.count
    for source, feats in a.features.items():
        arrays[f"{source}_rows"] = feats.rows
        arrays[f"{source}_matrix"] = feats.matrix
    meta = {**graph.meta, "format": FORMAT, "version": FORMAT_VERSION}
    meta["counts"] = {
        "news": len(a.news_ids),
        "entities": len(a.entity_ids),
        "edges": {"__".join(t): int(graph.data[t].edge_index.shape[1]) for t in graph.data.edge_types},
    }
    meta["feature_sources"] = {
        name: int((a.entity_source == code).sum()) for code, name in SOURCE_NAMES.items()
    }
    if (path / META).exists():
        (path / META).unlink()  # the folder is incomplete until the new meta.json lands
    atomic.write_npz(path / ARRAYS, **arrays)
    for name, ids in ((NEWS_IDS, a.news_ids), (ENTITY_IDS, a.entity_ids)):
        atomic.write_text(path / name, "".join(id_ + "\n" for id_ in ids))
    atomic.write_json(path / META, meta)
    graph.meta = meta
    return path


def load_graph(path: str | Path) -> NewsGraph:
    """Read a graph folder written by `save_graph`; InputError naming the file if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(
            "not a graph folder (no such folder); build one with `newsrec build-graph`", path=path
        )
    for name in (META, ARRAYS, NEWS_IDS, ENTITY_IDS):
        if not (path / name).is_file():
            raise InputError(
                f"not a complete graph (no {name}); rebuild it with `newsrec build-graph`", path=path
            )
    meta = _read_meta(path / META)
    news_ids = _read_ids(path / NEWS_IDS)
    entity_ids = _read_ids(path / ENTITY_IDS)
    try:
        with np.load(path / ARRAYS, allow_pickle=False) as npz:
            raw = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a readable .npz archive ({exc})", path=path / ARRAYS) from None
    arrays = _arrays_from(raw, news_ids, entity_ids, path / ARRAYS)
    return assemble(arrays, meta)


def _arrays_from(
    raw: dict[str, np.ndarray], news_ids: list[str], entity_ids: list[str], file: Path
) -> GraphArrays:
    def get(key: str, dtype: type, ndim: int = 1) -> np.ndarray:
        if key not in raw:
            raise InputError("missing array", path=file, field=key)
        value = raw[key]
        if value.dtype != np.dtype(dtype) or value.ndim != ndim:
            raise InputError(
                f"expected {np.dtype(dtype)} with {ndim} dimension(s), found {value.dtype} {value.shape}",
                path=file,
                field=key,
            )
        return value

    def check_rows(key: str, value: np.ndarray, bound: int) -> None:
        if value.size and (value.min() < 0 or value.max() >= bound):
            raise InputError(f"row index out of range [0, {bound})", path=file, field=key)

    num_news, num_entities = len(news_ids), len(entity_ids)
    mentions = {}
    for relation in MENTION_RELATIONS:
        m = Mentions(
            news=get(f"{relation}_news", np.int64),
            entity=get(f"{relation}_entity", np.int64),
            confidence=get(f"{relation}_confidence", np.float32),
            occurrences=get(f"{relation}_occurrences", np.int32),
        )
        if not (m.news.shape == m.entity.shape == m.confidence.shape == m.occurrences.shape):
            raise InputError("arrays of one edge type differ in length", path=file, field=relation)
        check_rows(f"{relation}_news", m.news, num_news)
        check_rows(f"{relation}_entity", m.entity, num_entities)
        mentions[relation] = m
    cooccurrence = None
    if "cooccurs_a" in raw:
        cooccurrence = Cooccurrence(
            a=get("cooccurs_a", np.int64),
            b=get("cooccurs_b", np.int64),
            count=get("cooccurs_count", np.int32),
        )
        check_rows("cooccurs_a", cooccurrence.a, num_entities)
        check_rows("cooccurs_b", cooccurrence.b, num_entities)
    source = get("entity_source", np.int8)
    if source.shape[0] != num_entities:
        raise InputError(
            f"{source.shape[0]} rows but {num_entities} entity IDs", path=file, field="entity_source"
        )
    features = {}
    for name in FEATURE_SOURCES:
        if f"{name}_rows" in raw:
            feats = EntityFeatures(
                rows=get(f"{name}_rows", np.int64), matrix=get(f"{name}_matrix", np.float32, 2)
            )
            if feats.rows.shape[0] != feats.matrix.shape[0]:
                raise InputError("rows and matrix differ in length", path=file, field=f"{name}_matrix")
            check_rows(f"{name}_rows", feats.rows, num_entities)
            features[name] = feats
    return GraphArrays(
        news_ids=news_ids,
        entity_ids=entity_ids,
        mentions=mentions,
        cooccurrence=cooccurrence,
        entity_source=source,
        features=features,
    )


def _read_meta(path: Path) -> dict[str, Any]:
    meta = read_manifest(path, FORMAT, "the meta.json of a graph")
    if meta.get("version") != FORMAT_VERSION:
        raise InputError(
            f"graph format version {meta.get('version')!r}, this newsrec reads {FORMAT_VERSION}",
            path=path,
            field="version",
        )
    return meta


def _read_ids(path: Path) -> list[str]:
    try:
        ids = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", path=path) from None
    if ids and ids[-1] == "":
        ids.pop()
    return ids
