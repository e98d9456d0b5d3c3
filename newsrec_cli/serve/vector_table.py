"""The export's news-vector table: model vectors by news ID, float32 or int8 with scales per row.

A table is an embedding store folder (`ids.txt`, `meta.json`, `vectors.npy`; see embed/store.py)
whose `meta.json` names the dtype:

- ``float32``: `vectors.npy` float32 [N, D], a plain embedding store;
- ``int8``: `vectors.npy` int8 [N, D] codes and `scales.npy` float32 [N, P], one scale per row
  and part. A news vector is the learned part followed by the unit text part of the content
  prior (model/recommender.py); their components differ in size by an order of magnitude, so
  each part gets its own scale (a single scale per row would leave the text part a few levels).
  Part p spans columns ``parts[p] : parts[p + 1]`` of meta ``"parts"``; row i of part p is
  ``codes[i, part] * scales[i, p]``, symmetric, the largest component mapping to 127.

`read_table` gives float32 vectors whatever the dtype (serving computes in float32); the int8
table is 4x smaller on disk than float32 and dequantised once at load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.embed.store import IDS, META, VECTORS, EmbeddingStore, commit, new_meta, read_ids, read_meta
from newsrec_cli.errors import InputError

Dtype = Literal["float32", "int8"]
SCALES = "scales.npy"
LEVELS = 127  # symmetric int8: codes in [-127, 127], so -x is exactly representable


def quantise(vectors: np.ndarray, parts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, D] -> int8 codes [N, D] and float32 scales [N, P] (P = len(parts) - 1)."""
    codes = np.zeros(vectors.shape, np.int8)
    scales = np.zeros((len(vectors), len(parts) - 1), np.float32)
    for p, (start, stop) in enumerate(zip(parts[:-1], parts[1:], strict=True)):
        block = vectors[:, start:stop].astype(np.float32)
        scale = np.abs(block).max(axis=1, initial=0.0) / LEVELS  # (N,)
        safe = np.where(scale > 0, scale, 1.0)  # an all-zero part (no text vector) stays zero
        codes[:, start:stop] = np.clip(np.rint(block / safe[:, None]), -LEVELS, LEVELS).astype(np.int8)
        scales[:, p] = scale
    return codes, scales


def dequantise(codes: np.ndarray, scales: np.ndarray, parts: list[int]) -> np.ndarray:
    """int8 codes [N, D], scales [N, P] -> float32 [N, D]."""
    out = codes.astype(np.float32)
    for p, (start, stop) in enumerate(zip(parts[:-1], parts[1:], strict=True)):
        out[:, start:stop] *= scales[:, p : p + 1]
    return out


def roundtrip(vectors: np.ndarray, dtype: Dtype, parts: list[int]) -> np.ndarray:
    """What a table of `dtype` gives back for `vectors` (parity is measured on this)."""
    return vectors if dtype == "float32" else dequantise(*quantise(vectors, parts), parts)


def write_table(
    path: Path, ids: list[str], vectors: np.ndarray, signature: dict[str, Any], dtype: Dtype, parts: list[int]
) -> None:
    """Write the table; float32 is an embedding store commit. Each file is written atomically and
    meta.json last; the export's manifest, written after parity, is what makes a table served."""
    if dtype == "float32":
        commit(path, ids, vectors, new_meta(signature, dtype="float32"))
        return
    if len(ids) != len(vectors) or len(set(ids)) != len(ids):
        raise ValueError("write_table needs one unique ID per vector row")
    codes, scales = quantise(vectors, parts)
    path.mkdir(parents=True, exist_ok=True)
    atomic.write_npy(path / VECTORS, codes)
    atomic.write_npy(path / SCALES, scales)
    atomic.write_text(path / IDS, "".join(id_ + "\n" for id_ in ids))
    meta = new_meta(signature, dtype="int8", parts=list(parts), count=len(ids))
    atomic.write_json(path / META, {**meta, "dimension": int(vectors.shape[1])})


def read_table(path: Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(IDs, float32 vectors [N, D], meta) of a table of either dtype; InputError when it is not one."""
    meta = read_meta(path / META) if (path / META).is_file() else {}
    dtype = meta.get("dtype", "float32")  # tables written before dtypes are float32 stores
    if dtype == "float32":
        store = EmbeddingStore.open(path)
        return list(store.ids), np.asarray(store.vectors, np.float32), store.meta
    if dtype != "int8":
        raise InputError(f"unknown table dtype {dtype!r} (float32 or int8)", path=path / META, field="dtype")
    ids = read_ids(path / IDS)
    parts = meta.get("parts")
    try:
        codes = np.load(path / VECTORS, allow_pickle=False)
        scales = np.load(path / SCALES, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"not a readable int8 table ({exc})", path=path) from None
    dim = meta.get("dimension")
    if (
        codes.dtype != np.int8
        or codes.ndim != 2
        or codes.shape != (len(ids), dim)
        or not isinstance(parts, list)
        or len(parts) < 2
        or parts[0] != 0
        or parts[-1] != dim
        or scales.dtype != np.float32
        or scales.shape != (len(ids), len(parts) - 1)
    ):
        raise InputError(
            f"int8 table does not match its meta (codes {codes.dtype} {codes.shape}, scales "
            f"{scales.dtype} {scales.shape}, {len(ids)} IDs, dimension {dim}, parts {parts})",
            path=path,
        )
    if not np.isfinite(scales).all():
        raise InputError("int8 table has non-finite scales", path=path / SCALES)
    return ids, dequantise(codes, scales, parts), meta
