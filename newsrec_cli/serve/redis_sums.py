"""Live popularity sums in Redis, shared by every replica serving the same model.

Layout under `newsrec:popularity:<model version>:` (one export, one set of counts): hashes
`clicks`, `shows`, `ref`, `first` by news ID (GLOBAL_KEY "" for the whole stream), and `clock`
(latest event second, impressions applied). Floats are stored as Python's repr, which reads
back bit-identical, so replicas compute identical features.

A batch is merged optimistically: WATCH the hashes, read the batch's keys, merge them with
`running_counts.merge` (the in-process arithmetic), write in MULTI/EXEC; a concurrent write by
another replica aborts the EXEC and the merge is redone on the new values (redis-py's
`transaction`). Reads are one MULTI of HMGETs, or of HGETALLs for many keys, with the clock for
`read`: a consistent snapshot. The counts are seeded once from the export's frozen ones, in a
transaction that only the first replica's succeeds in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from newsrec_cli.errors import InputError
from newsrec_cli.mind.running_counts import NO_EVENT, Batch, MemorySums, merge
from newsrec_cli.serve.errors import Unavailable

FIELDS = ("clicks", "shows", "ref", "first")
UNREACHABLE = "the popularity counts' Redis is unreachable"
# `read` of more keys than this fetches the whole hashes (HGETALL) instead of HMGET: retrieval
# reads every served news, most without counts, and HMGET's 51k arguments cost redis-py ~0.2-0.9 s
# to pack and parse against ~50 ms for the whole hashes (benchmarks/bench_serve.py's popularity run)
WHOLE_HASHES = 1024


class RedisSums:
    """A `SumStore` (mind/running_counts.py) in Redis."""

    def __init__(self, client: Any, prefix: str, half_life_hours: float) -> None:
        self.client = client
        self.prefix = prefix
        self.half_life_hours = half_life_hours
        self.hashes = [f"{prefix}{name}" for name in FIELDS]
        self.clock_key = f"{prefix}clock"

    @classmethod
    def open(cls, url: str, model_version: str, start: MemorySums) -> RedisSums:
        """Connect, and seed the counts from `start` unless another replica already has."""
        import redis  # optional extra: only with --redis-url

        client = redis.Redis.from_url(url, socket_timeout=5)
        sums = cls(client, f"newsrec:popularity:{model_version}:", start.spec.half_life_hours)
        n = len(start.index)
        columns = [start.clicks[:n], start.shows[:n], start.ref[:n], start.first[:n]]

        def seed(pipe: Any) -> None:
            if pipe.exists(sums.clock_key):
                return
            pipe.multi()
            for key, column in zip(sums.hashes, columns, strict=True):
                if n:
                    pipe.hset(key, mapping=dict(zip(start.index, map(repr, column.tolist()), strict=True)))
            pipe.hset(sums.clock_key, mapping={"latest": start.latest, "impressions": start.impressions})

        try:
            client.transaction(seed, sums.clock_key, *sums.hashes)
        except redis.RedisError as exc:
            raise InputError(f"cannot seed the popularity counts ({exc})", path=url) from None
        return sums

    def add(self, batch: Batch) -> None:
        import redis  # optional extra

        def update(pipe: Any) -> None:
            old = _columns([pipe.hmget(key, batch.keys) for key in self.hashes])
            latest = pipe.hget(self.clock_key, "latest")
            merged = merge(self.half_life_hours, old, batch)
            pipe.multi()
            for key, column in zip(self.hashes, merged, strict=True):
                pipe.hset(key, mapping=dict(zip(batch.keys, map(repr, column.tolist()), strict=True)))
            pipe.hset(self.clock_key, "latest", max(int(latest or NO_EVENT), batch.latest))
            pipe.hincrby(self.clock_key, "impressions", batch.impressions)

        try:
            self.client.transaction(update, self.clock_key, *self.hashes)
        except redis.RedisError:
            raise Unavailable(UNREACHABLE) from None

    def read(
        self, keys: list[str]
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[int, int]]:
        """The sums of `keys` and the clock in one MULTI: a snapshot no replica writes into."""
        import redis  # optional extra

        whole = len(keys) > WHOLE_HASHES
        try:
            pipe = self.client.pipeline(transaction=True)
            for key in self.hashes:
                if whole:
                    pipe.hgetall(key)
                else:
                    pipe.hmget(key, keys)
            pipe.hmget(self.clock_key, ["latest", "impressions"])
            *columns, (latest, impressions) = pipe.execute()
        except redis.RedisError:
            raise Unavailable(UNREACHABLE) from None
        if whole:
            wanted = [k.encode() for k in keys]
            columns = [[values.get(k) for k in wanted] for values in columns]
        return _columns(columns), (int(latest or NO_EVENT), int(impressions or 0))

    def clock(self) -> tuple[int, int]:
        import redis  # optional extra

        try:
            latest, impressions = self.client.hmget(self.clock_key, ["latest", "impressions"])
        except redis.RedisError:
            raise Unavailable(UNREACHABLE) from None
        return int(latest or NO_EVENT), int(impressions or 0)


def _columns(values: list[list[Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HMGET answers (bytes or None per key) as (clicks, shows, ref, first) arrays."""
    clicks, shows, ref, first = values
    return (
        np.asarray([float(v) if v is not None else 0.0 for v in clicks], np.float64),
        np.asarray([float(v) if v is not None else 0.0 for v in shows], np.float64),
        np.asarray([int(v) if v is not None else NO_EVENT for v in ref], np.int64),
        np.asarray([int(v) if v is not None else NO_EVENT for v in first], np.int64),
    )
