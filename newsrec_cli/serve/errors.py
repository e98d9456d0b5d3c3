"""What can go wrong in a request, as the serving engine says it: domain errors, no HTTP.

The HTTP layer (app.py) maps each kind to its status in one table; `newsrec recommend` prints the
reason. `UnknownNews` carries the IDs, so each layer names them in its own words (and bounds how
many it echoes: wire.py).
"""

from __future__ import annotations

# An error names at most this many IDs, each cut to this many characters, so that whatever a
# request sends, its error stays small (an ID of 1 MB, or 2,000 of them, is not echoed back).
SHOWN_IDS = 5
SHOWN_CHARS = 40


def cut(text: str, chars: int = SHOWN_CHARS) -> str:
    """`text`, cut to `chars` characters with an ellipsis and its length when longer."""
    if len(text) <= chars:
        return text
    return f"{text[:chars]}... ({len(text):,} characters)"


def shown_ids(ids: list[str]) -> list[str]:
    """The first SHOWN_IDS of `ids`, each cut by `cut`."""
    return [cut(i) for i in ids[:SHOWN_IDS]]


def name_ids(ids: list[str]) -> str:
    """A bounded phrase for `ids`: "N1, N2 (2 news)", or the first few "and 1995 more"."""
    named = ", ".join(shown_ids(ids))
    more = len(ids) - SHOWN_IDS
    return f"{named} and {more} more ({len(ids)} news)" if more > 0 else f"{named} ({len(ids)} news)"


class ServeError(Exception):
    """A request the service cannot answer; `reason` is one line for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotReady(ServeError):
    """The model and index are still loading."""

    def __init__(self, reason: str = "not ready: the model and index are still loading") -> None:
        super().__init__(reason)


class Unavailable(ServeError):
    """A store the service depends on (Redis) cannot be reached."""


class TooLarge(ServeError):
    """More items than the service takes in one request."""


class InvalidRequest(ServeError):
    """A request that is well-formed JSON but asks for something impossible."""


class UnknownNews(InvalidRequest):
    """News IDs the service does not know; `ids` in the order given, each once."""

    def __init__(self, message: str, ids: list[str]) -> None:
        super().__init__(message)
        self.ids = ids


class NotFound(ServeError):
    """The thing a path names does not exist (a news, a user, a chart)."""


class Unsupported(ServeError):
    """The model or its export cannot do what is asked (no popularity, no run for explanations)."""


class ProviderFailed(ServeError):
    """The embedding provider answered something unusable."""
