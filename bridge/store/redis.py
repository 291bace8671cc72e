"""Redis connections (the embedded redis-server used when REDIS_URL is not set: bridge.store.embedded)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger(__name__)


class StoreUnavailable(Exception):
    """Redis did not answer; the API turns this into 503 `store_unavailable`."""


class _CancellableWrites:
    """A redis-py connection whose socket write honours cancellation.

    redis-py bounds every write with `asyncio.wait_for(..., socket_timeout)`. On Python 3.11,
    wait_for swallows a cancel that arrives once the write it wraps has finished but before
    wait_for has returned (CPython gh-86296, fixed in 3.12 by building wait_for on
    asyncio.timeout): the command then completes as if nothing happened, and the task that was
    cancelled carries on. Every loop that talks to Redis (the callback scheduler, webhooks, token
    refresh) could so outlive a single `cancel()`, and an `asyncio.timeout` around a Redis call
    could fail to fire. Here the same bound is an `asyncio.timeout`, which lets the cancel through.

    The write itself is redis-py's, run with `socket_timeout` unset for its duration (that is
    what makes it skip the wait_for). A connect or health check it does first then reads under
    this same bound instead of one of its own. A connection serves one command at a time, so
    nothing else reads the attribute meanwhile; reads keep `socket_timeout` (redis-py bounds them
    with asyncio.timeout already).
    """

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class _TcpConnection(_CancellableWrites, Connection):
    pass


class _SslConnection(_CancellableWrites, SSLConnection):
    pass


class _UnixConnection(_CancellableWrites, UnixDomainSocketConnection):
    pass


_CANCELLABLE: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _TcpConnection,
    SSLConnection: _SslConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


def cancellable_connection_class(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """The `_CancellableWrites` version of a redis-py connection class (itself if unknown)."""
    return _CANCELLABLE.get(cls, cls)


def connect(url: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=15,
        client_name=f"bridge-{os.getpid()}",
    )
    pool = client.connection_pool
    # The URL picks the class (unix://, redis://, rediss://); no connection exists yet.
    pool.connection_class = cancellable_connection_class(pool.connection_class)
    return client


def dedicated(client: aioredis.Redis, *, max_connections: int = 64) -> aioredis.Redis:
    """A client of its own for the control endpoint's hot path, on the server `client` talks to
    (same address, TLS, credentials, database and parser: hiredis when installed):

    - its own connection pool, so verbs never queue behind the rest of the bridge (webhook
      delivery, the scheduler) nor the other way round; blocking, so a burst waits for a
      connection instead of failing with "too many connections";
    - no socket_timeout: redis-py would then wrap every write in a `wait_for` (a task each) and
      every read in a timeout of its own. The caller bounds the whole exchange with one
      `asyncio.timeout` instead (bridge.api.pipeline), which also drops the connection it cancels;
    - no retries: a script re-sent after its reply was lost could run twice (count the request
      twice, or find its own idempotency claim and wait on itself).
    """
    pool = client.connection_pool
    kwargs = {
        **pool.connection_kwargs,
        "socket_timeout": None,
        "retry": Retry(NoBackoff(), 0),
        "client_name": f"bridge-{os.getpid()}-control",
    }
    # from_pool: the client owns the pool, so its aclose() closes the connections too.
    return aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool(
            connection_class=pool.connection_class, max_connections=max_connections, timeout=None, **kwargs
        )
    )


async def ping(client: aioredis.Redis, timeout_s: float = 2.0) -> None:
    # asyncio.timeout, not wait_for: see _CancellableWrites.
    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except Exception as exc:
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc


def __getattr__(name: str) -> Any:
    # EmbeddedRedis and find_redis_server moved to bridge.store.embedded; old imports still work.
    if name in ("EmbeddedRedis", "find_redis_server"):
        from bridge.store import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
