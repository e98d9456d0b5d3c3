"""Vector matrices under diagnosis: opening a store that the strict reader refuses, and their stats.

`EmbeddingStore.open` refuses a store with NaN or Inf rows (rightly: training must not read it).
A diagnosis wants to count them instead, so `open_store` falls back to reading the same three
files through the store module's own readers and lets the checks report the bad rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from newsrec_cli.diagnose.report import Check, Status, Table
from newsrec_cli.diagnose.stats import non_finite_rows, row_norms, share
from newsrec_cli.embed.store import IDS, META, VECTORS, EmbeddingStore, read_ids, read_meta
from newsrec_cli.errors import InputError
from newsrec_cli.plural import agree, counted

NORMALIZED_TOLERANCE = 1e-3  # |norm - 1| allowed for a store whose meta says "normalized"


def open_store(path: str | Path) -> EmbeddingStore:
    """The store at `path`, also when its only fault is non-finite rows (the checks report those)."""
    path = Path(path)
    try:
        return EmbeddingStore.open(path)
    except InputError as strict:
        try:
            meta, ids = read_meta(path / META), read_ids(path / IDS)
            vectors = np.load(path / VECTORS, mmap_mode="r", allow_pickle=False)
        except (InputError, ValueError, OSError):
            raise strict from None
        consistent = (
            vectors.ndim == 2 and vectors.shape[0] == len(ids) and np.issubdtype(vectors.dtype, np.floating)
        )
        if not consistent or not non_finite_rows(vectors).any():
            raise strict from None
        return EmbeddingStore(path, ids, vectors, meta)


def vector_checks(matrices: dict[str, tuple[np.ndarray, bool | None]]) -> tuple[list[Check], Table]:
    """NaN/Inf, zero rows and norm statistics of named matrices.

    `matrices` maps a name to (matrix [rows, dim], whether its source says it is L2-normalised,
    or None when it says nothing).
    """
    table = Table(
        "Vectors",
        [
            "vectors",
            "rows",
            "dim",
            "NaN/Inf rows",
            "zero rows",
            "norm min",
            "norm median",
            "norm mean",
            "norm max",
        ],
    )
    checks: list[Check] = []
    for name, (matrix, normalized) in matrices.items():
        bad = non_finite_rows(matrix)
        norms = row_norms(matrix)
        good = norms[~bad]
        zero = int((good == 0).sum())
        stats = (
            (float(good.min()), float(np.median(good)), float(good.mean()), float(good.max()))
            if good.size
            else (None,) * 4
        )
        table.add(name, int(matrix.shape[0]), int(matrix.shape[1]), int(bad.sum()), zero, *stats)
        checks.extend(_matrix_checks(name, int(bad.sum()), zero, good, normalized, int(matrix.shape[0])))
    return checks, table


def _matrix_checks(
    name: str, bad: int, zero: int, norms: np.ndarray, normalized: bool | None, rows: int
) -> list[Check]:
    checks = []
    value = {"rows": rows, "non_finite": bad, "zero": zero}
    if bad:
        checks.append(
            Check(
                f"{name}: finite",
                Status.FAIL,
                value,
                f"{bad:,} of {counted(rows, 'vector')} {agree(bad, 'contains', 'contain')} NaN or Inf ({share(bad, rows):.2%})",
                "re-create these vectors (for a store: delete it and rerun `newsrec embed`)",
            )
        )
    elif zero:
        checks.append(
            Check(
                f"{name}: zero vectors",
                Status.WARN,
                value,
                f"{zero:,} of {counted(rows, 'vector')} {agree(zero, 'is', 'are')} all zeros: a missing vector passed off as a real one",
                "re-embed these IDs; a zero vector scores as 'no information' without saying so",
            )
        )
    else:
        checks.append(
            Check(f"{name}: finite", Status.OK, value, f"{counted(rows, 'vector')}, all finite and non-zero")
        )
    if normalized and norms.size and float(np.abs(norms - 1.0).max()) > NORMALIZED_TOLERANCE:
        worst = float(norms[np.argmax(np.abs(norms - 1.0))])
        checks.append(
            Check(
                f"{name}: normalised",
                Status.WARN,
                {"norm_min": float(norms.min()), "norm_max": float(norms.max())},
                f"meta says normalized, but a norm is {worst:.4g}",
                "re-embed with normalize=true, or fix meta.json",
            )
        )
    return checks
