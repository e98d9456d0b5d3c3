"""The user-state cache: Redis when a URL is given, an in-process TTL cache always (and as fallback).

Keys are made by Engine.cache_key from everything a user state depends on (model version,
backend, user, the news IDs of the history and a digest of each one's vector), so a new export,
an updated news or another replica sharing the Redis never serves a stale or foreign state.
Both layers expire entries after the same TTL. A Redis that goes away is logged once; requests
go on with the in-process layer and Redis is tried again after a short pause, and its return is
logged once too. A TTL of 0 switches the cache off (every state is computed).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from cachetools import TTLCache

log = logging.getLogger("newsrec.serve")

RETRY_SECONDS = 2.0


def to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class LocalCache:
    """A thread-safe in-process TTL cache (cachetools.TTLCache, least recently used evicted first)."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self._data: TTLCache[str, np.ndarray] = TTLCache(maxsize=max(size, 1), ttl=ttl)
        self._lock = threading.Lock()  # TTLCache itself is not thread-safe

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._data.get(key)

    def set(self, key: str, value: np.ndarray) -> None:
        with self._lock:
            self._data[key] = value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            self._data.expire()
            return len(self._data)


class UserCache:
    """get/set of user states; `on_result("hit"|"miss")` feeds the metrics."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        ttl: int = 3600,
        lru_size: int = 10_000,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.enabled = ttl > 0 and lru_size > 0
        self.local = LocalCache(lru_size, max(ttl, 1))
        self.on_result = on_result or (lambda _r: None)
        self.redis = None
        self.redis_url = redis_url
        self._down_until = 0.0
        self._down_logged = False
        if redis_url and self.enabled:
            import redis  # optional extra: only with --redis-url

            self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
            # Short timeouts: a dead Redis must cost a request milliseconds, not seconds.
            self.redis = redis.Redis.from_url(redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)

    @property
    def kind(self) -> str:
        if not self.enabled:
            return "off"
        return "redis" if self.redis is not None else "in-process"

    def _redis_usable(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._down_until

    def _redis_failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_SECONDS
        if not self._down_logged:
            log.warning(
                "redis unavailable (%s): serving on without it (in-process cache)", type(exc).__name__
            )
            self._down_logged = True

    def _redis_ok(self) -> None:
        if self._down_logged:
            log.warning("redis is back: using it again")
            self._down_logged = False

    def get(self, key: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        value = None
        if self._redis_usable():
            try:
                data = self.redis.get(key)  # type: ignore[union-attr]
                self._redis_ok()
                value = from_bytes(data) if data is not None else None
            except self._errors as exc:
                self._redis_failed(exc)
                value = self.local.get(key)
        else:
            value = self.local.get(key)
        self.on_result("hit" if value is not None else "miss")
        return value

    def set(self, key: str, value: np.ndarray) -> None:
        if not self.enabled:
            return
        self.local.set(key, value)
        if self._redis_usable():
            try:
                self.redis.set(key, to_bytes(value), ex=self.ttl)  # type: ignore[union-attr]
                self._redis_ok()
            except self._errors as exc:
                self._redis_failed(exc)
