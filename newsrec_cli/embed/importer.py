"""Bring precomputed vectors (a .npy matrix + an IDs file) into a store. Never unpickles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newsrec_cli.embed.chunks import ChunkLog
from newsrec_cli.embed.run import open_existing
from newsrec_cli.embed.store import check_finite, commit, new_meta, read_ids, signature_mismatch
from newsrec_cli.errors import InputError, SettingsError


@dataclass
class ImportReport:
    store_path: Path
    imported: int
    already_present: int
    count: int
    dimension: int

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "store_path": str(self.store_path)}


def load_vectors(path: Path) -> np.ndarray:
    """A 2-D numeric .npy matrix as float32; object arrays (pickles) are refused."""
    if not path.is_file():
        raise InputError("vectors file not found", path=path)
    try:
        matrix = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError(
                "holds Python objects (a pickle); only plain numeric .npy is read", path=path
            ) from None
        raise InputError(f"not a .npy array ({exc})", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc})", path=path) from None
    if not isinstance(matrix, np.ndarray):
        raise InputError("expected one .npy matrix, found an .npz archive", path=path)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise InputError(f"expected a 2-D matrix [N, D], found shape {matrix.shape}", path=path)
    if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
        raise InputError(f"expected numbers, found dtype {matrix.dtype}", path=path)
    return matrix.astype(np.float32, copy=False)


def import_vectors(
    vectors_path: Path,
    ids_path: Path,
    store_path: Path,
    *,
    model: str,
    provider: str = "import",
    template: str | None = None,
    normalize: bool = True,
    kind: str = "news",
    force: bool = False,
) -> ImportReport:
    """Add the rows of `vectors_path` (row i = line i of `ids_path`) to the store at `store_path`.

    A store of the same provider/model/dimension/template/normalisation gains the IDs it lacks;
    IDs it already has keep their vectors. Another store is replaced only with `force`.
    """
    vectors = load_vectors(vectors_path)
    ids = read_ids(ids_path)
    if len(ids) != len(vectors):
        raise InputError(
            f"{len(ids)} IDs for {len(vectors)} vector rows ({vectors_path.name})", path=ids_path
        )
    check_finite(vectors, path=vectors_path, ids=ids)
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    signature = {
        "kind": kind,
        "provider": provider,
        "model": model,
        "dimension": int(vectors.shape[1]),
        "template": template,
        "normalized": normalize,
    }
    store = open_existing(store_path)
    if ChunkLog(store_path).exists() and not force:
        raise SettingsError(
            f"{store_path}: an interrupted embedding run is in progress here; finish it or --force"
        )
    source = {"vectors": str(vectors_path.resolve()), "ids": str(ids_path.resolve())}
    if store is not None and not signature_mismatch(store.meta, signature):
        new = [i for i, id_ in enumerate(ids) if not store.has(id_)]
        all_ids = store.ids + [ids[i] for i in new]
        all_vectors = np.concatenate([np.asarray(store.vectors), vectors[np.asarray(new, dtype=np.int64)]])
        meta = {**store.meta, "source": source}
        present = len(ids) - len(new)
        # The texts of imported vectors are unknown: no fingerprint ("") for the new rows.
        hashes = None if store.hashes is None else store.hashes + [""] * len(new)
    elif store is not None and not force:
        diffs = "; ".join(signature_mismatch(store.meta, signature))
        raise SettingsError(
            f"{store_path}: store made with other settings: {diffs}. Pass --force to replace it"
        )
    else:
        all_ids, all_vectors, present = ids, vectors, 0
        meta = new_meta(signature, semantic=provider != "hashing", source=source)
        new = list(range(len(ids)))
        hashes = [""] * len(ids)
    ChunkLog(store_path).clear()
    commit(store_path, all_ids, all_vectors, meta, hashes)
    return ImportReport(
        store_path=store_path,
        imported=len(new),
        already_present=present,
        count=len(all_ids),
        dimension=int(vectors.shape[1]),
    )
