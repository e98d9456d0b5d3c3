"""The log of a run in progress: one `chunks/NNNNN.npz` (IDs + vectors) per finished batch.

Each chunk is written atomically, so after a kill -9 or Ctrl-C the folder holds only whole
batches. A rerun with the same settings loads them and skips their IDs; the run's end folds
them into the store and deletes the folder. `run.json` records the settings the chunks were
made with, so chunks of other settings are never mixed in.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.embed.store import signature_mismatch
from newsrec_cli.errors import InputError

CHUNKS = "chunks"
RUN = "run.json"


class ChunkLog:
    """Finished batches of an unfinished run, under `STORE/chunks/`."""

    def __init__(self, store_path: Path) -> None:
        self.folder = store_path / CHUNKS
        self._next: int | None = None

    def exists(self) -> bool:
        return (self.folder / RUN).is_file()

    def signature(self) -> dict[str, Any] | None:
        if not self.exists():
            return None
        try:
            return json.loads((self.folder / RUN).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None

    def mismatch(self, wanted: dict[str, Any]) -> list[str]:
        """How the interrupted run's settings differ from `wanted` (empty: they match)."""
        have = self.signature()
        if have is None:
            return ["unreadable run.json"] if self.folder.exists() else []
        return signature_mismatch(have, wanted)

    def start(self, signature: dict[str, Any]) -> None:
        """Keep the chunks of a matching interrupted run; otherwise begin an empty log."""
        if self.exists() and not self.mismatch(signature):
            atomic.remove_temporaries(self.folder)
            return
        self.clear()
        atomic.write_json(self.folder / RUN, signature)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("[0-9]*.npz"))

    def load(self) -> tuple[list[str], np.ndarray | None]:
        """The IDs and vectors of every finished chunk, in the order they were written."""
        ids, vectors, _ = self.load_with_hashes()
        return ids, vectors

    def load_with_hashes(self) -> tuple[list[str], np.ndarray | None, list[str]]:
        """IDs, vectors and text fingerprints ("" for chunks written before them) of every chunk.

        An ID can appear twice (its text changed and it was embedded again): the later one holds.
        """
        ids: list[str] = []
        hashes: list[str] = []
        parts: list[np.ndarray] = []
        for path in self.files():
            try:
                with np.load(path, allow_pickle=False) as chunk:
                    chunk_ids = [str(i) for i in chunk["ids"]]
                    vectors = np.asarray(chunk["vectors"], dtype=np.float32)
                    chunk_hashes = (
                        [str(h) for h in chunk["hashes"]]
                        if "hashes" in chunk.files
                        else [""] * len(chunk_ids)
                    )
            except (ValueError, OSError, KeyError) as exc:
                raise InputError(f"unreadable chunk ({exc}); rerun with --force", path=path) from None
            if vectors.ndim != 2 or vectors.shape[0] != len(chunk_ids) or len(chunk_hashes) != len(chunk_ids):
                raise InputError("chunk with mismatched IDs and vectors; rerun with --force", path=path)
            if parts and vectors.shape[1] != parts[0].shape[1]:
                raise InputError("chunks of different dimensions; rerun with --force", path=path)
            ids.extend(chunk_ids)
            hashes.extend(chunk_hashes)
            parts.append(vectors)
        if not parts:
            return [], None, []
        return ids, np.concatenate(parts), hashes

    def append(self, ids: Sequence[str], vectors: np.ndarray, hashes: Sequence[str] | None = None) -> Path:
        """Save one finished batch (and the fingerprints of its texts); numbered after the last chunk."""
        if self._next is None:
            existing = self.files()
            self._next = int(existing[-1].stem) + 1 if existing else 0
        path = self.folder / f"{self._next:05d}.npz"
        arrays = {"ids": np.asarray(list(ids), dtype=str), "vectors": vectors.astype(np.float32)}
        if hashes is not None:
            arrays["hashes"] = np.asarray(list(hashes), dtype=str)
        atomic.write_npz(path, **arrays)
        self._next += 1
        return path

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._next = None
