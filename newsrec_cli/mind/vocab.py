"""String IDs to dense indices, 0 reserved for padding."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from newsrec_cli import atomic

PAD = "<pad>"


class Vocab:
    """An append-only map from string IDs to indices 1..n; index 0 is padding.

    >>> v = Vocab(["N1", "N2"]); v["N2"], v.get("N9"), len(v)
    (2, 0, 3)
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self.ids: list[str] = [PAD]
        self.index: dict[str, int] = {}
        for id_ in ids:
            self.add(id_)

    def add(self, id_: str) -> int:
        idx = self.index.get(id_)
        if idx is None:
            idx = len(self.ids)
            self.index[id_] = idx
            self.ids.append(id_)
        return idx

    def __getitem__(self, id_: str) -> int:
        return self.index[id_]

    def get(self, id_: str, default: int = 0) -> int:
        return self.index.get(id_, default)

    def __contains__(self, id_: object) -> bool:
        return id_ in self.index

    def __len__(self) -> int:
        """Size including the padding row, i.e. the size of an embedding table over it."""
        return len(self.ids)

    def save(self, path: str | Path) -> None:
        """One ID per line, line i+1 = index i+1 (the padding row is not written)."""
        atomic.write_text(Path(path), "".join(f"{i}\n" for i in self.ids[1:]))

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        text = Path(path).read_text(encoding="utf-8")
        return cls(line for line in text.split("\n") if line)

    def __repr__(self) -> str:
        return f"Vocab({len(self.ids) - 1} ids)"
