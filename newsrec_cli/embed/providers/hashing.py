"""A deterministic, dependency-free provider for smoke tests. NOT semantic.

Signed feature hashing of lowercase word unigrams and bigrams (Weinberger et al., 2009) with
blake2b, so the same text gives the same vector on every machine and in every process. Texts
that share words get similar vectors; paraphrases with other words do not.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence

import numpy as np

from newsrec_cli.embed.providers.base import ProviderSpec, fixed_batches

MODEL = "hashing-unigram-bigram-v1"
_WORD = re.compile(r"\w+")


class HashingProvider:
    """Feature hashing into `dimension` buckets; `delay` seconds of sleep per batch (tests)."""

    def __init__(self, dimension: int, *, batch_size: int = 64, delay: float = 0.0) -> None:
        self.spec = ProviderSpec(name="hashing", model=MODEL, dimension=dimension, semantic=False)
        self.batch_size = batch_size
        self.delay = delay

    @property
    def dimension(self) -> int:
        return self.spec.dimension or 0

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        return fixed_batches(len(texts), self.batch_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in _features(text):
                digest = int.from_bytes(
                    hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little"
                )
                sign = 1.0 if digest & 1 else -1.0
                out[row, (digest >> 1) % self.dimension] += sign
        return out

    def __repr__(self) -> str:
        return f"HashingProvider(dimension={self.dimension}, batch_size={self.batch_size})"


def _features(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    # The whole text is a feature too, so a text without word characters is not a zero vector.
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)] + ["\x00" + text]
