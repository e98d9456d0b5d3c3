"""The one protocol every embedding provider follows, and the error a provider raises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from newsrec_cli.errors import NewsrecError


@dataclass(frozen=True)
class ProviderSpec:
    """What a provider will record in the store, known without loading a model or a client.

    `dimension` is None when only the first batch can tell (a local model not yet loaded, a
    model on a compatible server).
    """

    name: str
    model: str
    dimension: int | None
    semantic: bool


class EmbeddingProvider(Protocol):
    """Turns texts into vectors. `embed` returns float32 [len(texts), dimension]."""

    spec: ProviderSpec

    @property
    def dimension(self) -> int | None: ...

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        """Indices of `texts` grouped into the requests this provider wants, each saved on its own."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class ProviderError(NewsrecError):
    """A provider could not embed a batch (after its retries); the message is one line."""


def quiet_transformers() -> None:
    """transformers' own progress bars and load-time chatter off: the user sees newsrec's lines."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def fixed_batches(count: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def longest_first_batches(texts: Sequence[str], size: int) -> list[list[int]]:
    """Batches of `size` text positions, longest texts first, as sentence-transformers itself
    orders them: texts of similar lengths share a batch, so little of it is padding."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [[order[i] for i in group] for group in fixed_batches(len(order), size)]
