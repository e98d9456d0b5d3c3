"""What a store holds: settings, size, vector norms, and coverage of a dataset's news."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from newsrec_cli.embed.store import EmbeddingStore

NORM_BLOCK = 65_536  # rows per block, so a large store's norms need little memory


@dataclass
class Coverage:
    """How many of one split's IDs have a vector."""

    split: str
    total: int
    covered: int
    missing: list[str]

    @property
    def share(self) -> float:
        return self.covered / self.total if self.total else 1.0

    def to_dict(self, max_missing: int = 20) -> dict[str, Any]:
        return {
            "split": self.split,
            "total": self.total,
            "covered": self.covered,
            "share": self.share,
            "missing": len(self.missing),
            "missing_first": self.missing[:max_missing],
        }


def coverage(store: EmbeddingStore, split_ids: dict[str, Sequence[str]]) -> list[Coverage]:
    result = []
    for split, ids in split_ids.items():
        missing = [i for i in ids if not store.has(i)]
        result.append(Coverage(split=split, total=len(ids), covered=len(ids) - len(missing), missing=missing))
    return result


def norm_stats(vectors: np.ndarray) -> dict[str, float | int]:
    """Min, mean and max L2 norm, and rows that are all zero."""
    if len(vectors) == 0:
        return {"min": 0.0, "mean": 0.0, "max": 0.0, "zero_rows": 0}
    norms = np.concatenate(
        [
            np.linalg.norm(np.asarray(vectors[i : i + NORM_BLOCK]), axis=1)
            for i in range(0, len(vectors), NORM_BLOCK)
        ]
    )
    return {
        "min": float(norms.min()),
        "mean": float(norms.mean()),
        "max": float(norms.max()),
        "zero_rows": int((norms == 0).sum()),
    }


def describe_store(store: EmbeddingStore) -> dict[str, Any]:
    meta = store.meta
    return {
        "path": str(store.path),
        "kind": meta.get("kind", "news"),
        "provider": meta.get("provider"),
        "model": meta.get("model"),
        "semantic": meta.get("semantic", True),
        "dimension": store.dim,
        "count": len(store),
        "template": meta.get("template"),
        "normalized": meta.get("normalized"),
        "fallback_texts": meta.get("fallback_texts", 0),
        "created": meta.get("created"),
        "updated": meta.get("updated"),
        "source": meta.get("source"),
        # Rows whose text fingerprint is known; None: a store made before fingerprints.
        "fingerprinted": None if store.hashes is None else sum(1 for h in store.hashes if h),
        "norms": norm_stats(store.vectors),
    }
