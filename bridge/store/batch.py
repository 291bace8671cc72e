"""One Redis round trip shared by the callers that need it at the same moment.

Under load, many tasks each send one small command (an outbox XADD, a delivery's completion
script) and wait for its reply; most of their cost is redis-py's per-call work, not Redis's.
A `Batcher` sends the first item at once, and whatever is submitted while that round trip is on
the wire goes together in the next one. A lone caller therefore waits no longer than before; a
busy process sends a few large calls instead of many small ones. Each caller still gets its own
result or its own exception: a failure is reported to everyone whose item was in the batch.
`PipelinedScript` does this for one Lua script called on keys of many slots.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from redis.exceptions import NoScriptError

from bridge.store.redis import RedisClient, is_cluster

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self, flush: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]], *, max_batch: int = 256
    ) -> None:
        """`flush(items)` answers one result per item, in order; an exception in that list fails
        only its own item, an exception raised fails the whole batch."""
        self._flush = flush
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name="redis.batch")
        return await fut

    @property
    def busy(self) -> bool:
        """A batch is on the wire (or about to be): an item submitted now waits for it."""
        return self._drainer is not None

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for what was submitted to be sent, callers that were cancelled included."""
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._drainer)

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    results = await self._flush([item for item, _ in batch])
                except Exception as exc:
                    _fail(batch, exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if fut.done():  # its caller was cancelled; the item was sent all the same
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
        except BaseException:
            # Cancelled (the loop is closing): nobody may wait for ever on an item whose reply
            # will never be read.
            lost = RuntimeError("the Redis batch was cancelled before its reply was read")
            _fail(batch + self._pending, lost)
            self._pending = []
            raise
        finally:
            self._drainer = None


_ScriptCall = tuple[list[str], list[Any]]


class PipelinedScript:
    """A Lua script whose calls made at the same moment go out as EVALSHAs in one pipeline.

    For scripts called once per request on keys of that request's own slot (an idempotency
    answer stored per call): one script cannot take them all on a cluster, a non-transaction
    pipeline could. A call made while no other is on the wire is the plain script call, on the
    caller's own task, so a lone caller pays nothing for the batching (no task hop; cancelling
    it cancels its call, as with the script itself); the calls made while one is on the wire go
    in the next pipeline. A call Redis answers NOSCRIPT (its script cache was flushed, a
    failover) is made again on its own through redis-py's Script, which loads the script first.
    On a cluster redis-py refuses EVALSHA in a pipeline ("blocked when running redis in cluster
    mode"), so there every call is its own round trip."""

    def __init__(self, redis: RedisClient, source: str, *, max_batch: int = 256) -> None:
        self.redis = redis
        self.script = redis.register_script(source)
        self._batch: Batcher[_ScriptCall, Any] | None = (
            None if is_cluster(redis) else Batcher(self._run, max_batch=max_batch)
        )
        self._direct = 0  # plain script calls on the wire

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        if self._batch is None:
            return await self.script(keys=keys, args=args)
        if self._direct or self._batch.busy:
            return await self._batch.submit((keys, args))
        self._direct += 1
        try:
            return await self.script(keys=keys, args=args)
        finally:
            self._direct -= 1

    async def aclose(self, timeout_s: float = 5.0) -> None:
        if self._batch is not None:
            await self._batch.aclose(timeout_s)

    async def _run(self, calls: list[_ScriptCall]) -> list[Any]:
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self.script(keys=keys, args=args)]
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self.script.sha, len(keys), *keys, *args)
        results = list(await pipe.execute(raise_on_error=False))
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError):
                keys, args = calls[i]
                try:
                    results[i] = await self.script(keys=keys, args=args)
                except Exception as exc:
                    results[i] = exc
        return results


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: Exception) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
