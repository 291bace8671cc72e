"""The hot path's RESP2 client (bridge.store.resp) and LuaScript against a real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from bridge.store.lua import LuaScript
from bridge.store.redis import EmbeddedRedis, connect
from bridge.store.resp import RespClient, _Incomplete, pack, parse


def test_pack_and_parse():
    assert pack(("SET", "k", 1, "é")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$2\r\n\xc3\xa9\r\n"
    reply = b"*4\r\n$2\r\nok\r\n$-1\r\n:42\r\n*1\r\n+PONG\r\n"
    assert parse(reply, 0) == (["ok", None, 42, ["PONG"]], len(reply))
    error, _ = parse(b"-NOSCRIPT No matching script\r\n", 0)
    assert isinstance(error, NoScriptError)
    for partial in (b"*2\r\n$2\r\nok\r\n", b"$5\r\nhel", b"*1\r\n:4"):
        with pytest.raises(_Incomplete):
            parse(partial, 0)


@pytest.fixture
async def client(redis: aioredis.Redis):
    resp = RespClient.for_redis(redis)
    assert resp is not None
    yield resp
    await resp.close()


async def test_commands_and_concurrent_replies_match(client: RespClient, redis: aioredis.Redis):
    assert await client.execute("SET", "k", "v") == "OK"
    assert await client.execute("GET", "k") == "v"
    assert await client.execute("GET", "missing") is None
    results = await asyncio.gather(*[client.execute("INCRBY", "n", i) for i in range(1, 201)])
    assert sorted(results) == sorted(set(results)) and results[-1] <= sum(range(1, 201))
    assert int(await redis.get("n")) == sum(range(1, 201))
    values = await asyncio.gather(*[client.execute("ECHO", f"v{i}") for i in range(300)])
    assert values == [f"v{i}" for i in range(300)]
    with pytest.raises(ResponseError):
        await client.execute("INCR", "k")
    assert await client.execute("PING") == "PONG"  # an error reply does not desynchronise the stream


async def test_lua_script_reloads_after_a_flush(client: RespClient, redis: aioredis.Redis):
    script = LuaScript(client, "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
    assert await script(["a"], ["b", 1]) == ["a", "b", 2]
    await redis.script_flush()
    assert await script(["a"], ["c", 2]) == ["a", "c", 3]
    on_redis_py = LuaScript(redis, "return 'same'")
    assert await on_redis_py([], []) == "same"


async def test_a_caller_that_gives_up_leaves_the_stream_in_order(client: RespClient):
    slow = asyncio.ensure_future(client.execute("EVAL", "local t = redis.call('TIME') return 'slow'", 0))
    await asyncio.sleep(0)
    slow.cancel()
    assert await client.execute("ECHO", "next") == "next"


async def test_a_dropped_connection_fails_pending_calls_then_reconnects(
    client: RespClient, redis: aioredis.Redis
):
    assert await client.execute("PING") == "PONG"
    blocked = asyncio.ensure_future(client.execute("BLPOP", "never", 5))
    await asyncio.sleep(0.05)
    await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    with pytest.raises(RedisConnectionError):
        await blocked
    assert await client.execute("PING") == "PONG"


async def test_db_and_password_from_the_redis_py_client(tmp_path: Path):
    server = EmbeddedRedis(tmp_path, persistent=False)
    url = await asyncio.to_thread(server.start)
    try:
        admin = connect(url)
        await admin.config_set("requirepass", "s3cret")
        await admin.aclose()
        secured = aioredis.Redis.from_url(f"{url}?db=3&password=s3cret", decode_responses=True)
        resp = RespClient.for_redis(secured)
        assert resp is not None and resp.db == 3 and resp.password == "s3cret"
        assert await resp.execute("SET", "where", "db3") == "OK"
        assert await secured.get("where") == "db3"
        await resp.close()
        wrong = RespClient(path=resp.path, password="nope")
        with pytest.raises(ResponseError):
            await wrong.execute("PING")
        await secured.aclose()
    finally:
        await asyncio.to_thread(server.stop)


def test_tls_is_left_to_redis_py():
    assert RespClient.for_redis(aioredis.Redis.from_url("rediss://example.com:6380/0")) is None
    tcp = RespClient.for_redis(aioredis.Redis.from_url("redis://:pw@example.com:6390/2"))
    assert tcp is not None and (tcp.host, tcp.port, tcp.db, tcp.password) == ("example.com", 6390, 2, "pw")


async def test_an_overdue_reply_drops_the_connection(redis: aioredis.Redis):
    base = RespClient.for_redis(redis)
    assert base is not None
    client = RespClient(path=base.path, reply_timeout=0.3)
    try:
        stuck = asyncio.ensure_future(client.execute("BLPOP", "never", 5))
        queued = asyncio.ensure_future(client.execute("PING"))  # behind the stuck reply
        with pytest.raises(RedisConnectionError, match="did not answer"):
            await asyncio.wait_for(stuck, 2)
        with pytest.raises(RedisConnectionError):
            await queued
        assert await client.execute("PING") == "PONG"
    finally:
        await client.close()
