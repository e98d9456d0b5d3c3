"""OpenAI embeddings, or any OpenAI-compatible server (vLLM, Ollama, LiteLLM) via `base_url`.

Requests go through the official SDK, and so do their retries: 408/409/429/5xx answers, timeouts
and dropped connections are retried up to `max_retries` times with the SDK's exponential backoff
(0.5 s doubling to 8 s, with jitter), or after the server's Retry-After when it asks for at most
two minutes (a longer one is not waited for). A server that refuses the connection or a host name
that does not resolve fails at once (nothing listens there: waiting will not help): see
`_FailFastClient`. A request that still fails raises ProviderError; the run keeps every batch
before it. The API key comes from OPENAI_API_KEY and is scrubbed from every message we emit.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from typing import Any

import numpy as np
import openai

from newsrec_cli.embed.providers.base import ProviderError, ProviderSpec
from newsrec_cli.embed.tokens import TokenCounter, token_batches, token_counter
from newsrec_cli.errors import SettingsError

DEFAULT_MODEL = "text-embedding-3-small"
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
NO_DIMENSIONS = {"text-embedding-ada-002"}  # the API rejects `dimensions` for it
KEY_VARIABLE = "OPENAI_API_KEY"


def describe(model: str | None, dimensions: int | None) -> ProviderSpec:
    """Name, model and (when known without a request) dimension of an OpenAI embedding run."""
    model = model or DEFAULT_MODEL
    if dimensions is not None and model in NO_DIMENSIONS:
        raise SettingsError(
            f"embed.dimensions: {model} has a fixed size; --dimensions is for text-embedding-3 models"
        )
    known = KNOWN_DIMENSIONS.get(model)
    if dimensions is not None and known is not None and dimensions > known:
        raise SettingsError(f"embed.dimensions = {dimensions}: {model} returns at most {known}")
    return ProviderSpec(name="openai", model=model, dimension=dimensions or known, semantic=True)


class OpenAIProvider:
    """Token-sized batches sent to `/embeddings`; see the module docstring for retries."""

    def __init__(
        self,
        model: str | None = None,
        *,
        dimensions: int | None = None,
        base_url: str | None = None,
        max_batch_tokens: int = 250_000,
        max_batch_texts: int = 2048,
        max_retries: int = 6,
        timeout: float = 60.0,
        counter: TokenCounter | None = None,
    ) -> None:
        self.spec = describe(model, dimensions)
        self.dimensions = dimensions
        self.base_url = base_url
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_texts = max_batch_texts
        self.max_retries = max_retries
        self.counter = counter or token_counter()
        key = os.environ.get(KEY_VARIABLE, "").strip()
        self._secret = key or None
        if not key:
            if base_url is None:
                raise SettingsError(
                    f"{KEY_VARIABLE} is not set (needed for the OpenAI API; --dry-run needs none)"
                )
            key = "unused"  # compatible servers (Ollama, vLLM) usually ask for no key, the SDK wants one
        self._client = openai.OpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
            http_client=_FailFastClient(),
        )
        self._dimension = self.spec.dimension

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        counts = [self.counter.count(t) for t in texts]
        ranges = token_batches(counts, max_tokens=self.max_batch_tokens, max_texts=self.max_batch_texts)
        return [list(r) for r in ranges]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        request: dict[str, Any] = {"model": self.spec.model, "input": list(texts), "encoding_format": "float"}
        if self.dimensions is not None:
            request["dimensions"] = self.dimensions
        where = self.base_url or "the OpenAI API"
        try:
            response = self._client.embeddings.create(**request)
        except Unreachable as exc:
            raise self._error(
                f"cannot reach {where}: {_short(str(exc))} (not retried: nothing answers there; "
                "check --base-url and that the server runs)"
            ) from None
        except openai.APIStatusError as exc:
            reason = _short(re.sub(r"^Error code: \d+ - ", "", exc.message))
            raise self._error(
                f"{where} answered HTTP {exc.status_code}{_after(exc.response.request)}: {reason}"
            ) from None
        except openai.APITimeoutError as exc:
            raise self._error(f"{where} timed out{_after(exc.request)}") from None
        except openai.APIConnectionError as exc:
            cause = _short(str(_root_cause(exc)))
            raise self._error(f"cannot reach {where}{_after(exc.request)}: {cause}") from None
        except (openai.APIError, ValueError) as exc:  # unparsable body, "No embedding data received"
            raise self._error(f"malformed response from {where}: {_short(str(exc))}") from None
        vectors = self._parse(response, len(texts), where)
        if self._dimension is None:
            self._dimension = vectors.shape[1]
        return vectors

    def _parse(self, response: object, count: int, where: str) -> np.ndarray:
        """Check the response by hand: the SDK builds it without validation."""
        data = getattr(response, "data", None)
        if not isinstance(data, list) or len(data) != count:
            got = len(data) if isinstance(data, list) else "no 'data' list"
            raise self._error(f"malformed response from {where}: expected {count} embeddings, got {got}")
        rows: list[Any] = [None] * count
        for position, item in enumerate(data):
            index = getattr(item, "index", position)
            embedding = getattr(item, "embedding", None)
            if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
                raise self._error(f"malformed response from {where}: bad or repeated index {index!r}")
            if not isinstance(embedding, list) or not embedding:
                raise self._error(
                    f"malformed response from {where}: embedding {index} is not a list of numbers"
                )
            rows[index] = embedding
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise self._error(
                f"malformed response from {where}: embeddings are not numbers of one length"
            ) from None
        if vectors.ndim != 2:
            raise self._error(f"malformed response from {where}: embeddings of different lengths")
        if self._dimension is not None and vectors.shape[1] != self._dimension:
            raise self._error(
                f"{where} returned {vectors.shape[1]}-d vectors, expected {self._dimension} "
                f"(model {self.spec.model}, dimensions {self.dimensions})"
            )
        return vectors

    def _error(self, message: str) -> ProviderError:
        return ProviderError(message.replace(self._secret, "***") if self._secret else message)

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.spec.model!r}, base_url={self.base_url!r})"


def _short(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _tries(request: Any) -> int:
    """How many times the SDK sent `request`: it numbers its retries in a header of each attempt."""
    retries = request.headers.get("x-stainless-retry-count", "0") if request is not None else "0"
    return int(retries) + 1 if retries.isdigit() else 1


def _after(request: Any) -> str:
    tries = _tries(request)
    return f" after {tries} tries" if tries > 1 else ""


class Unreachable(openai.OpenAIError):
    """Nothing answers at the address. The SDK re-raises an OpenAIError raised while sending as it
    is, before its retry of other errors (openai >= 3.0; read in 3.0.0 and 3.63.0)."""


class _FailFastClient(openai.DefaultHttpxClient):
    """The SDK's default HTTP client, where a refused connection or an unknown host raises
    `Unreachable`: the SDK's retry settings cannot tell those from a dropped connection, which
    is worth retrying; the SDK would wait through every backoff (about 20 s at 6 retries) for nothing."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        try:
            return super().send(request, **kwargs)
        except Exception as exc:
            cause = _root_cause(exc)
            if isinstance(cause, ConnectionRefusedError | socket.gaierror):
                raise Unreachable(str(cause)) from exc
            raise


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (the OS error under the SDK's and httpx's wrappers)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc
