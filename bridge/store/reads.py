"""Point reads of one key each, made by many tasks at the same moment, in one pipeline.

A burst of ESL events wakes many calls' workers in one loop iteration, and each handler first
reads its call's session (or its transfer field, or who monitors it): most of such a read's cost
is redis-py's per-command work and a socket write each, not Redis's. `PointReads` sends them
through `bridge.store.batch.Batcher`: a lone read goes out at once, the reads made while it is
on the wire go together in the next pipeline. A read is never reordered before a write its own
caller awaited, since the caller only asks once that write is done.
"""

from __future__ import annotations

import weakref
from typing import Any

from bridge.store.batch import Batcher
from bridge.store.redis import RedisClient

_Read = tuple[str, tuple[str, ...]]


class PointReads:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._batch: Batcher[_Read, Any] = Batcher(self._run)

    async def _run(self, reads: list[_Read]) -> list[Any]:
        # Not a transaction: the keys are in any slots (a cluster pipeline asks each node).
        pipe = self.redis.pipeline(transaction=False)
        for command, args in reads:
            getattr(pipe, command)(*args)
        return list(await pipe.execute(raise_on_error=False))

    async def hgetall(self, key: str) -> dict[str, str]:
        return await self._batch.submit(("hgetall", (key,)))  # type: ignore[no-any-return]

    async def hget(self, key: str, field: str) -> str | None:
        return await self._batch.submit(("hget", (key, field)))  # type: ignore[no-any-return]

    async def smembers(self, key: str) -> set[str]:
        return set(await self._batch.submit(("smembers", (key,))))


_of_client: weakref.WeakKeyDictionary[Any, PointReads] = weakref.WeakKeyDictionary()


def point_reads(redis: RedisClient) -> PointReads:
    """The one PointReads of this client, so the stores that share a client share its batches."""
    reads = _of_client.get(redis)
    if reads is None:
        reads = _of_client[redis] = PointReads(redis)
    return reads
