"""Stopping is bounded: a cancel always reaches a task that talks to Redis, and shutdown gives up on a
task that will not stop instead of hanging."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.config import Settings
from bridge.services import Services
from bridge.store.redis import connect


async def _commands_until(client: aioredis.Redis, released: asyncio.Event) -> None:
    # What the callback scheduler's tick does between its sleeps: nothing but Redis round trips.
    while not released.is_set():
        await client.get("x")
        await client.zrangebyscore("z", 0, 1)


async def test_a_loop_of_redis_commands_stops_at_its_first_cancel(redis_url: str) -> None:
    # The cancel lands at a different point of the command cycle each round (after 3..42 loop
    # iterations). Before the fix, redis-py's asyncio.wait_for around the socket write swallowed
    # one within the first few dozen rounds (Python 3.11) and the loop ran on as if never cancelled.
    client = connect(redis_url)
    released = asyncio.Event()  # only to end a loop that ate its cancel
    swallowed_at = None
    try:
        for k in range(300):
            task = asyncio.create_task(_commands_until(client, released))
            for _ in range(k % 40 + 3):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if not done:
                swallowed_at = k
                break
            assert task.cancelled()
    finally:
        released.set()
        await asyncio.wait({task}, timeout=5)
        await client.aclose()
    assert swallowed_at is None, f"cancel number {swallowed_at + 1} was swallowed"


async def test_a_write_that_cannot_drain_still_times_out() -> None:
    # The write keeps its bound (socket_timeout), now as asyncio.timeout: a server that answers the
    # connection handshake and then stops reading makes the client's buffer fill up.
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Handshake commands come one or a few per packet, each a RESP array ("*<n>").
        while b"SET\r\n" not in (chunk := await reader.read(65536)) and chunk:
            writer.write(b"+PONG\r\n" if b"PING" in chunk else b"+OK\r\n" * chunk.count(b"*"))
            await writer.drain()
        await finished.wait()  # never read again
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}")
    client.connection_pool.connection_kwargs["socket_timeout"] = 0.3
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError, match="writing"):
            await client.set("k", "x" * 64_000_000)
        assert time.monotonic() - started < 3.0
    finally:
        finished.set()
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_services_close_gives_up_on_a_task_that_will_not_stop(settings: Settings) -> None:
    svc = Services(settings, connect(settings.redis_url or ""))
    stubborn_ran = asyncio.Event()
    released = False

    async def stubborn() -> None:
        while not released:
            try:
                stubborn_ran.set()
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                continue  # a bug: a loop that eats its cancel

    async def polite() -> None:
        await asyncio.sleep(3600)

    stuck = svc.spawn(stubborn(), name="stubborn")
    fine = svc.spawn(polite(), name="polite")
    await stubborn_ran.wait()
    started = time.monotonic()
    async with asyncio.timeout(15):
        await svc.close()
    took = time.monotonic() - started
    assert 4.5 < took < 7.0, took  # bridge.tasks.STOP_TIMEOUT_S, then on without it
    assert fine.cancelled()
    assert not stuck.done()
    released = True  # the test's own clean-up: a task that eats its cancel must be told otherwise
    await asyncio.wait_for(stuck, 3)
