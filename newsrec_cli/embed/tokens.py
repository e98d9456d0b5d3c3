"""Token counts for OpenAI batching and cost estimates, online or off.

tiktoken downloads its `cl100k_base` file at first use (or reads it from TIKTOKEN_CACHE_DIR).
Where it cannot, the UTF-8 byte count stands in: a BPE token covers at least one byte, so the
count is a safe upper bound, batches stay under the API limits, and estimates err high.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# US$ per 1M input tokens (OpenAI price list); other models have no known price.
PRICE_PER_MILLION = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}
ENCODING = "cl100k_base"  # the encoding of every OpenAI embedding model


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of a text; `exact` is False for the byte-count upper bound."""

    count: Callable[[str], int]
    exact: bool
    source: str

    def total(self, texts: Sequence[str]) -> int:
        return sum(self.count(t) for t in texts)


def _byte_count(text: str) -> int:
    return len(text.encode("utf-8"))


@functools.cache
def token_counter() -> TokenCounter:
    """tiktoken's cl100k_base when it loads, else the byte-count upper bound."""
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(ENCODING)
    except Exception:  # no network, no cache, no package: all mean "use the upper bound"
        return TokenCounter(
            _byte_count, exact=False, source="upper bound, tiktoken encoding unavailable offline"
        )
    return TokenCounter(
        lambda text: len(encoding.encode(text, disallowed_special=())),
        exact=True,
        source=f"tiktoken {ENCODING}",
    )


def estimated_cost(model: str, tokens: int) -> float | None:
    """US$ for `tokens` input tokens, or None when the model's price is unknown."""
    price = PRICE_PER_MILLION.get(model)
    return None if price is None else tokens / 1_000_000 * price


def token_batches(counts: Sequence[int], *, max_tokens: int, max_texts: int) -> list[range]:
    """Consecutive batches with at most `max_tokens` tokens and `max_texts` texts each.

    A single text over `max_tokens` gets a batch of its own (the API then judges it).
    """
    batches: list[range] = []
    start, tokens = 0, 0
    for i, n in enumerate(counts):
        if i > start and (tokens + n > max_tokens or i - start >= max_texts):
            batches.append(range(start, i))
            start, tokens = i, 0
        tokens += n
    if start < len(counts):
        batches.append(range(start, len(counts)))
    return batches
