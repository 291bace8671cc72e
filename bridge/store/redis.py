"""Redis connections (the embedded redis-server used when REDIS_URL is not set: bridge.store.embedded).

`connect(url)` gives a plain `redis.asyncio.Redis`, or a `redis.asyncio.RedisCluster` when the URL's
scheme is `redis+cluster://` / `rediss+cluster://` or `cluster=True` (BRIDGE_REDIS_CLUSTER=1):
docs/redis-cluster.md.
Code that takes a client types it `RedisClient` and works with either: every script touches the
keys of one slot (bridge/store/keys.py), and what must span slots goes through `multi()`.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger(__name__)

# Either client: what every store, loop and route is given.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


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


class _FreshBeforeUse(_CancellableWrites):
    """A connection that, before it sends, makes sure the server has not closed it meanwhile (a
    killed client, a restarted node), and connects again if so: what redis-py's connection pool does
    on every checkout (ConnectionPool.ensure_connection) but a cluster node's pool does not. For the
    control client, which never retries, so a dropped connection would otherwise fail a verb.
    Only for request/response connections: pub/sub ones have data waiting by design."""

    is_connected: bool

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.is_connected:
            try:
                stale = await self.can_read()  # type: ignore[attr-defined]
            except (RedisConnectionError, OSError):
                stale = True
            if stale:
                await self.disconnect()  # type: ignore[attr-defined]
        await super().send_packed_command(command, check_health)


class _TcpConnection(_CancellableWrites, Connection):
    pass


class _CheckedTcpConnection(_FreshBeforeUse, Connection):
    pass


class _CheckedSslConnection(_FreshBeforeUse, SSLConnection):
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


def cluster_url(url: str, *, cluster: bool = False) -> tuple[str, bool]:
    """(the URL redis-py is given, whether it names a cluster). `redis+cluster://host:port` and
    `rediss+cluster://` name one; so does any redis:// URL when `cluster` (Settings.redis_cluster,
    BRIDGE_REDIS_CLUSTER=1)."""
    parts = urlsplit(url)
    plain = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if plain is not None:
        return urlunsplit(parts._replace(scheme=plain)), True
    return url, cluster


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


_CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 15,
}


# redis-py 8's pools hold 100 connections and raise MaxConnectionsError past that: a burst of call
# setups or webhook emits then failed (seen by bench/sessions.py). The shared pool may open many
# more (Redis's own maxclients is 10,000). Not a BlockingConnectionPool: its wait costs a timeout
# context on every command, 5 % of an event flood's CPU; the control endpoint's own client
# (dedicated below) is the blocking one, bounded by its callers' timeout.
MAX_CONNECTIONS = 4096
CLUSTER_MAX_CONNECTIONS_PER_NODE = 4096


def connect(url: str, *, cluster: bool = False) -> RedisClient:
    url, on_cluster = cluster_url(url, cluster=cluster)
    if on_cluster:
        return _connect_cluster(
            url,
            client_name=f"bridge-{os.getpid()}",
            max_connections=CLUSTER_MAX_CONNECTIONS_PER_NODE,
            **_CLIENT_OPTIONS,
        )
    pool = aioredis.ConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, client_name=f"bridge-{os.getpid()}", **_CLIENT_OPTIONS
    )
    # The URL picks the class (unix://, redis://, rediss://); no connection exists yet.
    pool.connection_class = cancellable_connection_class(pool.connection_class)
    # from_pool: the client owns the pool, so its aclose() closes the connections too.
    return aioredis.Redis.from_pool(pool)


_cluster_origin: weakref.WeakKeyDictionary[RedisCluster, tuple[str, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _connect_cluster(url: str, *, checked: bool = False, **options: Any) -> RedisCluster:
    """A RedisCluster from one seed node's URL (it discovers the others with CLUSTER SLOTS).
    `checked`: its connections check they are still open before each use (_FreshBeforeUse)."""
    if urlsplit(url).scheme == "unix":
        raise ValueError("a Redis Cluster is reached over TCP: redis+cluster://host:port")
    client = RedisCluster.from_url(url, **options)
    _cluster_origin[client] = (url, options)
    # Startup nodes exist already (no connection yet); nodes found later are built from the same
    # kwargs dict, so both get the cancellable class.
    cls = cancellable_connection_class(client.connection_kwargs["connection_class"])
    if checked:
        cls = _CheckedSslConnection if issubclass(cls, SSLConnection) else _CheckedTcpConnection
    client.connection_kwargs["connection_class"] = cls
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = cls
    return client


def dedicated(client: RedisClient, *, max_connections: int = 64) -> RedisClient:
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

    On a cluster: a RedisCluster of its own (its own pool per node) from the same seed URL, with
    the same two settings. MOVED/ASK redirections are still followed (the command did not run).
    """
    if isinstance(client, RedisCluster):
        url, options = _cluster_origin[client]
        return _connect_cluster(
            url,
            checked=True,
            **{
                **options,
                "socket_timeout": None,
                "retry": Retry(NoBackoff(), 0),
                "max_connections": max_connections,
                "client_name": f"bridge-{os.getpid()}-control",
            },
        )
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


def multi(client: RedisClient) -> Pipeline | ClusterPipeline:
    """A pipeline for writes that span slots (an entity and a tenant's index of it, say): MULTI/EXEC
    on one Redis; on a cluster, where one MULTI cannot span slots, a plain pipeline, whose commands
    each node runs in order but not all-or-nothing. Callers order what they write so a reader never
    trusts a half-done write (an index entry whose entity is missing is skipped) and make it
    idempotent (a retry finishes it). Writes within one slot use `client.pipeline(transaction=True)`
    or a script."""
    return client.pipeline(transaction=not isinstance(client, RedisCluster))


async def mget(client: RedisClient, names: list[str]) -> list[Any]:
    """MGET of keys in any slots (a cluster client asks each slot's master: not one snapshot)."""
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(names))
    return list(await client.mget(names))


async def ping(client: RedisClient, timeout_s: float = 2.0) -> None:
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
