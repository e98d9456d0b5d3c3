"""The user-state cache: Redis when a URL is given, an in-process LRU otherwise (and as fallback).

Keys carry the model version and backend (see Engine.cache_key), so a new export or a reload
never serves a stale user state. A Redis that goes away is logged once; requests go on with the
LRU and Redis is tried again after a short pause, and its return is logged once too.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

log = logging.getLogger("newsrec.serve")

RETRY_SECONDS = 2.0


def to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def set(self, key: str, value: np.ndarray) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


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
        self.lru = LRU(lru_size)
        self.on_result = on_result or (lambda _r: None)
        self.redis = None
        self.redis_url = redis_url
        self._down_until = 0.0
        self._down_logged = False
        if redis_url:
            import redis

            self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
            # Short timeouts: a dead Redis must cost a request milliseconds, not seconds.
            self.redis = redis.Redis.from_url(redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)

    @property
    def kind(self) -> str:
        return "redis" if self.redis is not None else "lru"

    def _redis_usable(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._down_until

    def _redis_failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_SECONDS
        if not self._down_logged:
            log.warning("redis unavailable (%s): serving on without it (in-process LRU)", type(exc).__name__)
            self._down_logged = True

    def _redis_ok(self) -> None:
        if self._down_logged:
            log.warning("redis is back: using it again")
            self._down_logged = False

    def get(self, key: str) -> np.ndarray | None:
        value = None
        if self._redis_usable():
            try:
                data = self.redis.get(key)  # type: ignore[union-attr]
                self._redis_ok()
                value = from_bytes(data) if data is not None else None
            except self._errors as exc:
                self._redis_failed(exc)
                value = self.lru.get(key)
        else:
            value = self.lru.get(key)
        self.on_result("hit" if value is not None else "miss")
        return value

    def set(self, key: str, value: np.ndarray) -> None:
        self.lru.set(key, value)
        if self._redis_usable():
            try:
                self.redis.set(key, to_bytes(value), ex=self.ttl)  # type: ignore[union-attr]
                self._redis_ok()
            except self._errors as exc:
                self._redis_failed(exc)
