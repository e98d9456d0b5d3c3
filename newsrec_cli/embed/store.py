"""The embedding store: a folder of `vectors.npy` float32 [N, D], `ids.txt` and `meta.json`,
and `text_hashes.txt`.

Row i of `vectors.npy` is the vector of the ID on line i of `ids.txt`; callers look vectors up by
ID only (`lookup`), never by row. The same class serves news stores (keyed by news ID) and entity
stores (keyed by WikidataId, meta "kind": "entities").

Line i of `text_hashes.txt` is the fingerprint of the exact text row i was made from (`text_hash`:
the first 16 hex digits of its SHA-256), or empty when that text is unknown (imported vectors).
A news ID alone does not say which text a vector stands for: two datasets can give one ID two
texts. Stores written before fingerprints have no such file; they load, unchecked.

A new version of the store is written into `.staging/` and a `COMMIT` marker is written last;
only then are the three files moved into place. A writer killed half-way through the moves
finishes them on its next run (`finish_commit`), and readers refuse a store in that state.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.errors import InputError
from newsrec_cli.manifests import read_manifest

VECTORS = "vectors.npy"
IDS = "ids.txt"
META = "meta.json"
HASHES = "text_hashes.txt"
STAGING = ".staging"
COMMIT = "COMMIT"
FORMAT = "newsrec-embedding-store"
FORMAT_VERSION = 1

# The settings that make two vectors comparable; a store only ever holds vectors made one way.
SIGNATURE_FIELDS = ("kind", "provider", "model", "dimension", "template", "normalized")


class EmbeddingStore:
    """Read access to a store; see the module docstring for the layout."""

    def __init__(
        self,
        path: Path,
        ids: list[str],
        vectors: np.ndarray,
        meta: dict[str, Any],
        hashes: list[str] | None = None,
    ) -> None:
        self.path = path
        self.ids = ids
        self.vectors = vectors
        self.meta = meta
        self.hashes = hashes  # text fingerprint per row ("" unknown); None: a store from before them
        self.dim = int(vectors.shape[1])
        self._index = {id_: row for row, id_ in enumerate(ids)}

    @classmethod
    def open(cls, path: str | Path) -> EmbeddingStore:
        """Open and check a store; InputError if `path` is not a complete, consistent store."""
        path = Path(path)
        if not path.is_dir():
            raise InputError("not an embedding store (no such folder)", path=path)
        if (path / STAGING / COMMIT).exists():
            raise InputError(
                "an update of this store was interrupted; rerun the `newsrec embed` command to finish it",
                path=path,
            )
        for name in (META, IDS, VECTORS):
            if not (path / name).is_file():
                raise InputError(f"not an embedding store (no {name})", path=path)
        meta = read_meta(path / META)
        ids = read_ids(path / IDS)
        try:
            vectors = np.load(path / VECTORS, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"not a readable .npy array ({exc})", path=path / VECTORS) from None
        check_matrix(vectors, path / VECTORS, rows=len(ids), dim=meta.get("dimension"))
        if meta.get("count") != len(ids):
            raise InputError(
                f"meta.json says {meta.get('count')} vectors but ids.txt has {len(ids)}",
                path=path / META,
                field="count",
            )
        hashes = read_hashes(path / HASHES, rows=len(ids)) if (path / HASHES).is_file() else None
        return cls(path, ids, vectors, meta, hashes)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._index

    def has(self, id_: str) -> bool:
        return id_ in self._index

    def row_of(self, id_: str) -> int | None:
        return self._index.get(id_)

    def hash_of(self, id_: str) -> str:
        """The fingerprint of the text `id_`'s vector was made from; "" when unknown or absent."""
        row = self._index.get(id_)
        return "" if row is None or self.hashes is None else self.hashes[row]

    def lookup(self, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Vectors of `ids` as float32 [len(ids), dim] and the IDs the store lacks.

        Rows of missing IDs are zeros; they are always listed in the second value, so a caller
        decides (error, learned vector, ...) and nothing is silently zero.
        """
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        rows, where, missing = [], [], []
        for i, id_ in enumerate(ids):
            row = self._index.get(id_)
            if row is None:
                missing.append(id_)
            else:
                rows.append(row)
                where.append(i)
        if rows:
            out[np.asarray(where)] = self.vectors[np.asarray(rows)]
        return out, missing

    @property
    def signature(self) -> dict[str, Any]:
        return {name: self.meta.get(name) for name in SIGNATURE_FIELDS}

    def __repr__(self) -> str:
        return (
            f"EmbeddingStore({str(self.path)!r}, kind={self.meta.get('kind')!r}, "
            f"model={self.meta.get('model')!r}, count={len(self)}, dim={self.dim})"
        )


def read_meta(path: Path) -> dict[str, Any]:
    meta = read_manifest(path, FORMAT, "the meta.json of an embedding store")
    if not isinstance(meta.get("dimension"), int):
        raise InputError("missing or non-integer dimension", path=path, field="dimension")
    return meta


def read_ids(path: Path) -> list[str]:
    """One ID per line; empty, blank-padded or duplicate IDs are errors naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", path=path) from None
    ids = text.split("\n")
    if ids and ids[-1] == "":
        ids.pop()
    seen: dict[str, int] = {}
    for number, id_ in enumerate(ids, start=1):
        id_ = id_.rstrip("\r")
        ids[number - 1] = id_
        if not id_ or id_ != id_.strip() or "\t" in id_:
            raise InputError(f"bad ID {id_!r} (empty, padded or with a tab)", path=path, line=number)
        if id_ in seen:
            raise InputError(f"duplicate ID {id_!r} (first on line {seen[id_]})", path=path, line=number)
        seen[id_] = number
    return ids


def text_hash(text: str) -> str:
    """The fingerprint of one embedded text (16 hex digits of SHA-256 of its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_hashes(path: Path, *, rows: int) -> list[str]:
    """One fingerprint (16 hex digits) or an empty line per row of the store."""
    try:
        lines = path.read_text(encoding="ascii").split("\n")
    except UnicodeDecodeError:
        raise InputError("not ASCII text", path=path) from None
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != rows:
        raise InputError(f"{len(lines)} fingerprints for {rows} IDs", path=path)
    for number, value in enumerate(lines, start=1):
        if value and (len(value) != 16 or any(c not in "0123456789abcdef" for c in value)):
            raise InputError(f"bad text fingerprint {value[:40]!r}", path=path, line=number)
    return lines


@dataclass
class TextCheck:
    """How the texts a store's vectors were made from compare with the texts of a dataset."""

    checked: int  # news whose store fingerprint could be compared
    changed: list[str]  # news whose text differs from the one embedded
    unverified: int  # news in the store with no fingerprint (old store, imported vectors)


def compare_texts(store: EmbeddingStore, ids: Sequence[str], texts: Sequence[str]) -> TextCheck:
    """Compare the fingerprints of `texts` (of `ids`) with the store's; IDs it lacks are skipped."""
    changed, checked, unverified = [], 0, 0
    for id_, text in zip(ids, texts, strict=True):
        if not store.has(id_):
            continue
        have = store.hash_of(id_)
        if not have:
            unverified += 1
            continue
        checked += 1
        if have != text_hash(text):
            changed.append(id_)
    return TextCheck(checked=checked, changed=changed, unverified=unverified)


def check_matrix(vectors: np.ndarray, path: Path, *, rows: int, dim: int | None) -> None:
    """A store matrix is float32 [rows, dim], finite."""
    if vectors.ndim != 2:
        raise InputError(f"expected a 2-D matrix, found shape {vectors.shape}", path=path)
    if vectors.dtype != np.float32:
        raise InputError(f"expected float32 vectors, found {vectors.dtype}", path=path)
    if vectors.shape[0] != rows:
        raise InputError(f"{vectors.shape[0]} rows but {rows} IDs", path=path)
    if dim is not None and vectors.shape[1] != dim:
        raise InputError(f"vectors have dimension {vectors.shape[1]}, meta.json says {dim}", path=path)
    check_finite(vectors, path=path)


def check_finite(vectors: np.ndarray, *, path: Path | str | None = None, ids: Sequence[str] = ()) -> None:
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        who = f"ID {ids[row]!r}" if ids else f"row {row}"
        raise InputError(f"{int(bad.sum())} vectors contain NaN or Inf (first: {who})", path=path)


def signature_mismatch(meta: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The signature fields on which a store differs from the wanted settings, as readable text.

    A dimension of None means "not known yet" (a model not loaded) and matches any.
    """
    diffs = []
    for name in SIGNATURE_FIELDS:
        have, want = meta.get(name), wanted.get(name)
        if name == "dimension" and (have is None or want is None):
            continue
        if have != want:
            diffs.append(f"{name} {have!r} (asked: {want!r})")
    return diffs


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_meta(signature: dict[str, Any], **extra: Any) -> dict[str, Any]:
    created = now()
    return {"format": FORMAT, "version": FORMAT_VERSION, **signature, "created": created, **extra}


def commit(
    path: Path,
    ids: list[str],
    vectors: np.ndarray,
    meta: dict[str, Any],
    hashes: Sequence[str] | None = None,
) -> None:
    """Write a new version of the store at `path`, atomically as a whole (see module docstring).

    `hashes`: the text fingerprint of each row ("" unknown); None writes no text_hashes.txt.
    """
    if len(ids) != vectors.shape[0] or len(set(ids)) != len(ids):
        raise ValueError("commit needs one unique ID per vector row")
    if hashes is not None and len(hashes) != len(ids):
        raise ValueError("commit needs one text fingerprint per vector row")
    meta = {**meta, "count": len(ids), "dimension": int(vectors.shape[1]), "updated": now()}
    meta.pop("text_hashes", None)
    if hashes is not None:
        meta["text_hashes"] = f"{HASHES}: SHA-256 (first 16 hex digits) of the text of each row"
    staging = path / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    atomic.write_npy(staging / VECTORS, np.ascontiguousarray(vectors, dtype=np.float32))
    atomic.write_text(staging / IDS, "".join(id_ + "\n" for id_ in ids))
    atomic.write_json(staging / META, meta)
    if hashes is not None:
        atomic.write_text(staging / HASHES, "".join(h + "\n" for h in hashes))
    atomic.write_text(staging / COMMIT, "ready\n")
    finish_commit(path)


def finish_commit(path: Path) -> bool:
    """Move a complete staged version into place (roll forward); drop an incomplete one.

    Returns True when a staged version was moved in. Safe to call again after any kill.
    """
    staging = path / STAGING
    if not staging.is_dir():
        return False
    if not (staging / COMMIT).exists():
        shutil.rmtree(staging, ignore_errors=True)
        return False
    for name in (VECTORS, IDS, META):
        if (staging / name).exists():
            os.replace(staging / name, path / name)
    if (staging / HASHES).exists():
        os.replace(staging / HASHES, path / HASHES)
    elif "text_hashes" not in read_meta(path / META):
        # A version without fingerprints: stale ones of the previous version must not stay.
        (path / HASHES).unlink(missing_ok=True)
    (staging / COMMIT).unlink()
    shutil.rmtree(staging, ignore_errors=True)
    return True


def is_store(path: Path) -> bool:
    return (path / META).is_file() or (path / STAGING / COMMIT).is_file()
