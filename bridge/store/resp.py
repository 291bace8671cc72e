"""A small multiplexed RESP2 client for the control endpoint's hot path (its Lua scripts).

Why not redis-py here: a control verb is two Redis round trips, and profiling showed redis-py's
per-command machinery (connection pool, retry wrapper, per-argument encoding, a coroutine per
reply element) costing more CPU than the script and the syscalls together. This client keeps one
connection, sends the commands issued in one loop iteration with at most two writes, and parses whole
replies from a buffer in one pass: concurrent requests share the socket (replies come back in
order, so a FIFO of futures matches them) and a burst of replies costs one read.

Scope: plain TCP or a unix socket, optional AUTH and SELECT, RESP2 replies. Everything else in
the bridge stays on redis-py; `RespClient.for_redis()` returns None (use redis-py) for anything
it does not cover, such as TLS.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

log = structlog.get_logger(__name__)

_CRLF = b"\r\n"
# A Redis that stopped reading must not make us buffer without bound.
_MAX_WRITE_BUFFER = 16 * 1024 * 1024


class _Incomplete(Exception):
    pass


def pack(args: tuple[Any, ...]) -> bytes:
    """A command as a RESP array of bulk strings (arguments are str or int)."""
    parts = [f"*{len(args)}\r\n"]
    for arg in args:
        text = arg if isinstance(arg, str) else str(arg)
        # Lengths are in bytes; formatting text and encoding once is cheaper than bytes formatting.
        size = len(text) if text.isascii() else len(text.encode())
        parts.append(f"${size}\r\n{text}\r\n")
    return "".join(parts).encode()


def parse(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One reply from `buf` at `pos`: (value, next position). Raises _Incomplete for a partial one."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    line = bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + size]).decode(), pos + size + 2
    if kind == 42:  # * array
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(line), pos
    if kind == 43:  # + simple string
        return line.decode(), pos
    if kind == 45:  # - error
        text = line.decode()
        return (NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)), pos
    raise RedisConnectionError(f"unexpected RESP type byte {kind!r}")


class RespClient:
    def __init__(
        self,
        *,
        path: str | None = None,
        host: str = "127.0.0.1",
        port: int = 6379,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        connect_timeout: float = 2.0,
        reply_timeout: float = 5.0,
    ) -> None:
        self.path, self.host, self.port = path, host, port
        self.username, self.password, self.db = username, password, db
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        # (future, loop time it was sent): replies arrive in this order.
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._connect_lock = asyncio.Lock()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._closed = False

    @classmethod
    def for_redis(cls, redis: aioredis.Redis) -> RespClient | None:
        """A client for the server `redis` talks to, or None when its options are not covered."""
        pool = redis.connection_pool
        opts = pool.connection_kwargs
        if issubclass(pool.connection_class, aioredis.UnixDomainSocketConnection):
            where: dict[str, Any] = {"path": opts["path"]}
        elif pool.connection_class is aioredis.Connection:
            where = {"host": opts.get("host", "127.0.0.1"), "port": int(opts.get("port", 6379))}
        else:
            return None  # TLS and anything custom
        if opts.get("credential_provider"):
            return None  # credentials we cannot read up front
        return cls(
            **where,
            username=opts.get("username"),
            password=opts.get("password"),
            db=int(opts.get("db") or 0),
            connect_timeout=float(opts.get("socket_connect_timeout") or 2.0),
            reply_timeout=float(opts.get("socket_timeout") or 5.0),
        )

    async def execute(self, *args: Any) -> Any:
        writer = self._writer if self._writer is not None else await self._connect()
        if writer.transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            raise RedisConnectionError("Redis is not reading: write buffer full")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((future, loop.time()))
        if self._flush_scheduled:
            self._out.append(pack(args))
        else:
            # The first command of a loop iteration leaves at once; the ones other requests issue
            # in the same iteration follow together in one write at its end.
            writer.write(pack(args))
            self._flush_scheduled = True
            loop.call_soon(self._flush, writer)
        reply = await future
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _flush(self, writer: asyncio.StreamWriter) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self._writer is writer:
            writer.write(b"".join(out))

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._drop(RedisConnectionError("client closed"))

    # ------------------------------------------------------------ connection

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._connect_lock:
            if self._writer is not None:
                return self._writer
            if self._closed:
                raise RedisConnectionError("client closed")
            try:
                async with asyncio.timeout(self.connect_timeout):
                    if self.path:
                        reader, writer = await asyncio.open_unix_connection(self.path)
                    else:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    await self._handshake(reader, writer)
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
            self._writer = writer
            loop = asyncio.get_running_loop()
            self._reader_task = loop.create_task(self._read(reader, writer))
            if self._watchdog is None or self._watchdog.done():
                self._watchdog = loop.create_task(self._watch())
            return writer

    async def _watch(self) -> None:
        """One timer for all calls instead of one per call: replies come in order, so if the oldest
        is overdue, Redis is stuck (or gone) for every caller, and the connection is dropped."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(min(1.0, self.reply_timeout / 4))
            if self._pending and loop.time() - self._pending[0][1] > self.reply_timeout:
                log.warning("resp_reply_timeout", pending=len(self._pending), timeout_s=self.reply_timeout)
                self._drop(RedisConnectionError(f"Redis did not answer within {self.reply_timeout:g} s"))

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands: list[tuple[Any, ...]] = []
        if self.password:
            commands.append(
                ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            )
        if self.db:
            commands.append(("SELECT", self.db))
        for command in commands:
            writer.write(pack(command))
            buf = b""
            while True:
                buf += await reader.read(4096)
                try:
                    reply, _ = parse(buf, 0)
                    break
                except _Incomplete:
                    if reader.at_eof():
                        raise RedisConnectionError(
                            "Redis closed the connection during the handshake"
                        ) from None
            if isinstance(reply, ResponseError):
                writer.close()
                raise reply

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        error: Exception = RedisConnectionError("Redis closed the connection")
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                pos = 0
                while pos < len(buf):
                    try:
                        reply, pos = parse(buf, pos)
                    except _Incomplete:
                        break
                    if not self._pending:
                        raise RedisConnectionError("a reply nobody asked for")
                    future = self._pending.popleft()[0]
                    if not future.done():  # a caller that timed out leaves its slot behind
                        future.set_result(reply)
                del buf[:pos]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(str(exc))
            log.warning("resp_connection_failed", error=str(exc))
        if self._writer is writer:
            self._drop(error)

    def _drop(self, error: Exception) -> None:
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if writer is not None:
            writer.close()
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._out = []
        pending, self._pending = self._pending, collections.deque()
        for future, _sent in pending:
            if not future.done():
                future.set_exception(error)
