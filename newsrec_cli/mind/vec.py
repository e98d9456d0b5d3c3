"""Reader of MIND's `entity_embedding.vec` / `relation_embedding.vec` (ID, then floats, tabs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from newsrec_cli.errors import InputError
from newsrec_cli.mind.lines import iter_rows


def read_vec(path: str | Path, *, dim: int | None = None) -> tuple[list[str], np.ndarray]:
    """Return (ids, float32 matrix [n, dim]); any dimension, fixed by the first line unless given.

    Real MIND files end each line with a tab; that empty last field is ignored. Non-numbers,
    NaN/Inf, a row of another dimension and a duplicate ID are InputErrors naming line and field.
    """
    path = Path(path)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    seen: dict[str, int] = {}
    for number, line in iter_rows(path):
        parts = line.rstrip("\t ").split("\t")
        if len(parts) == 1 and " " in parts[0]:
            parts = parts[0].split()  # space-separated variants of the format
        id_, values = parts[0].strip(), parts[1:]
        if not id_:
            raise InputError("empty ID", path=path, line=number, field="ID")
        if dim is None:
            dim = len(values)
            if dim == 0:
                raise InputError("no vector values after the ID", path=path, line=number, field="vector")
        if len(values) != dim:
            raise InputError(
                f"expected {dim} values, found {len(values)}", path=path, line=number, field="vector"
            )
        try:
            row = np.array(values, dtype=np.float32)
        except ValueError:
            col = next(i for i, v in enumerate(values) if not _is_float(v))
            raise InputError(
                f"not a number: {values[col]!r}", path=path, line=number, field=f"value {col + 1}"
            ) from None
        if not np.isfinite(row).all():
            col = int(np.flatnonzero(~np.isfinite(row))[0])
            raise InputError(
                f"{values[col]} is not a finite number", path=path, line=number, field=f"value {col + 1}"
            )
        if id_ in seen:
            raise InputError(
                f"duplicate ID {id_!r} (first on line {seen[id_]})", path=path, line=number, field="ID"
            )
        seen[id_] = number
        ids.append(id_)
        rows.append(row)
    if not rows:
        raise InputError("no vectors in file", path=path)
    return ids, np.stack(rows)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
