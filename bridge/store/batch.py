"""One Redis round trip shared by the callers that need it at the same moment.

Under load, many tasks each send one small command (an outbox XADD, a delivery's completion
script) and wait for its reply; most of their cost is redis-py's per-call work, not Redis's.
A `Batcher` sends the first item at once, and whatever is submitted while that round trip is on
the wire goes together in the next one. A lone caller therefore waits no longer than before; a
busy process sends a few large calls instead of many small ones. Each caller still gets its own
result or its own exception: a failure is reported to everyone whose item was in the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

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


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: Exception) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
