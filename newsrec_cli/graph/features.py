"""Input features of entity nodes, by preference: MIND's entity_embedding.vec, a label-text store, learned.

Each entity takes its features from the first source that has it; what a source lacks falls to the
next. Entities no source covers get a learned embedding in the encoder (no row here). The report
says, per source, how many entities it covered and where the vectors came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import InputError
from newsrec_cli.graph.graph import LABEL_TEXT, LEARNED, VEC, EntityFeatures
from newsrec_cli.mind import read_vec


def read_vec_files(paths: Sequence[Path]) -> tuple[dict[str, int], np.ndarray]:
    """Union of several .vec files (MIND ships one per split): ID -> row, and the matrix.

    The first file that has an ID wins; all files must share one dimension.
    """
    index: dict[str, int] = {}
    blocks: list[np.ndarray] = []
    dim: int | None = None
    for path in paths:
        ids, matrix = read_vec(path, dim=dim)
        dim = int(matrix.shape[1])
        keep = [row for row, id_ in enumerate(ids) if id_ not in index]
        offset = len(index)
        for k, row in enumerate(keep):
            index[ids[row]] = offset + k
        blocks.append(matrix[keep])
    if not blocks:
        return {}, np.zeros((0, 0), dtype=np.float32)
    return index, np.concatenate(blocks).astype(np.float32, copy=False)


def open_entity_store(path: Path) -> EmbeddingStore:
    """Open an entity-label store (`newsrec embed entities`); InputError if it is not one."""
    store = EmbeddingStore.open(path)
    kind = store.meta.get("kind")
    if kind != "entities":
        raise InputError(
            f"not an entity store (kind is {kind!r}, expected 'entities'); "
            "make one with `newsrec embed entities`",
            path=path,
            field="kind",
        )
    return store


def resolve_entity_features(
    entity_ids: Sequence[str],
    *,
    vec_files: Sequence[Path] = (),
    store_path: Path | None = None,
) -> tuple[np.ndarray, dict[str, EntityFeatures], dict[str, Any]]:
    """Pick each entity's feature source.

    Returns (source code per entity int8 [E], frozen features per source, report per source).
    """
    num = len(entity_ids)
    source = np.full(num, LEARNED, dtype=np.int8)
    features: dict[str, EntityFeatures] = {}
    report: dict[str, Any] = {}

    if vec_files:
        index, matrix = read_vec_files(vec_files)
        rows = np.array([j for j, id_ in enumerate(entity_ids) if id_ in index], dtype=np.int64)
        report["vec"] = {
            "count": int(rows.size),
            "files": [str(p) for p in vec_files],
            "dim": int(matrix.shape[1]),
            "vectors_in_files": len(index),
        }
        if rows.size:
            picked = np.array([index[entity_ids[j]] for j in rows], dtype=np.int64)
            features["vec"] = EntityFeatures(rows=rows, matrix=np.ascontiguousarray(matrix[picked]))
            source[rows] = VEC

    if store_path is not None:
        store = open_entity_store(store_path)
        wanted = np.flatnonzero(source == LEARNED)
        vectors, missing = store.lookup([entity_ids[j] for j in wanted])
        lacking = set(missing)
        found = np.array([k for k, j in enumerate(wanted) if entity_ids[j] not in lacking], dtype=np.int64)
        rows = wanted[found] if found.size else np.zeros(0, dtype=np.int64)
        report["label_text"] = {
            "count": int(rows.size),
            "store": str(store_path),
            "model": store.meta.get("model"),
            "dim": int(store.dim),
        }
        if rows.size:
            features["label_text"] = EntityFeatures(
                rows=rows.astype(np.int64), matrix=np.ascontiguousarray(vectors[found], dtype=np.float32)
            )
            source[rows] = LABEL_TEXT

    report["learned"] = {"count": int((source == LEARNED).sum())}
    return source, features, report
