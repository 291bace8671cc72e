"""bridge.store.batch: concurrent callers share round trips, and each still gets its own answer."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.store import keys
from bridge.store.batch import Batcher, PipelinedScript
from bridge.store.reads import PointReads
from bridge.store.redis import connect
from bridge.webhooks.outbox import Outbox
from tests.conftest import on_cluster


async def test_a_lone_item_goes_at_once_and_what_queues_behind_it_goes_together() -> None:
    sizes: list[int] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(sizes) == 1:
            await gate.wait()  # the first round trip is "on the wire" while the others arrive
        return [i * 10 for i in items]

    b: Batcher[int, int] = Batcher(flush, max_batch=50)
    first = asyncio.create_task(b.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(b.submit(i)) for i in range(1, 121)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [i * 10 for i in range(1, 121)]
    assert sizes == [1, 50, 50, 20]


async def test_an_item_that_fails_fails_alone_and_a_failed_call_fails_its_whole_batch() -> None:
    calls = 0

    async def flush(items: list[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if "down" in items:
            raise ConnectionError("redis is down")
        return [ValueError(i) if i == "bad" else i.upper() for i in items]

    b: Batcher[str, str] = Batcher(flush)
    ok, bad = await asyncio.gather(b.submit("ok"), b.submit("bad"), return_exceptions=True)
    assert ok == "OK" and isinstance(bad, ValueError)
    # Submitted in one tick, the three share one call, and its failure.
    results = await asyncio.gather(b.submit("x"), b.submit("down"), b.submit("y"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and calls == 2
    assert await b.submit("after") == "AFTER"  # the batcher goes on after a failure


async def test_a_cancelled_caller_s_item_is_still_sent() -> None:
    sent: list[str] = []
    gate = asyncio.Event()

    async def flush(items: list[str]) -> list[str]:
        await gate.wait()
        sent.extend(items)
        return items

    b: Batcher[str, str] = Batcher(flush)
    task = asyncio.create_task(b.submit("kept"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await b.aclose()
    assert sent == ["kept"]


async def test_concurrent_emits_all_reach_the_outbox_in_order(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        await client.delete(keys.outbox())
        outbox = Outbox(client)
        events = await asyncio.gather(
            *[outbox.emit("call.started", "acme", {"call_id": f"c-{i}"}) for i in range(300)]
        )
        stored = await outbox.read_all()
        assert [e.event_id for e in stored] == [e.event_id for e in events if e is not None]
        assert [e.data["call_id"] for e in stored] == [f"c-{i}" for i in range(300)]
    finally:
        await client.aclose()


async def test_an_emit_with_redis_gone_raises() -> None:
    client = connect("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(Exception) as info:
            await Outbox(client).emit("call.started", "acme", {"call_id": "c-1"})
        assert "Connect" in type(info.value).__name__ or "connect" in str(info.value).lower()
    finally:
        await client.aclose()


async def test_point_reads_made_together_share_pipelines_and_each_gets_its_own_key(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        ids = [f"pr-{i}" for i in range(200)]  # sessions in many slots on a cluster
        for i, call_id in enumerate(ids):
            await client.hset(keys.session(call_id), mapping={"call_id": call_id, "n": str(i)})
            await client.sadd(keys.monitored_by(call_id), f"ai-{i}", f"ai-{i}-b")
        await client.set(keys.session("pr-string"), "not a hash")
        reads = PointReads(client)
        flushes = 0
        run = reads._run

        async def counted(batch: list[tuple[str, tuple[str, ...]]]) -> list[object]:
            nonlocal flushes
            flushes += 1
            return await run(batch)

        reads._run = counted  # type: ignore[method-assign]
        whole, fields, members, wrong, missing = await asyncio.gather(
            asyncio.gather(*[reads.hgetall(keys.session(c)) for c in ids]),
            asyncio.gather(*[reads.hget(keys.session(c), "n") for c in ids]),
            asyncio.gather(*[reads.smembers(keys.monitored_by(c)) for c in ids]),
            reads.hgetall(keys.session("pr-string")),
            reads.hgetall(keys.session("pr-none")),
            return_exceptions=True,
        )
        assert whole == [{"call_id": c, "n": str(i)} for i, c in enumerate(ids)]
        assert fields == [str(i) for i in range(200)]
        assert members == [{f"ai-{i}", f"ai-{i}-b"} for i in range(200)]
        assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)  # that read alone fails
        assert missing == {}
        assert flushes < 10  # 602 reads, a handful of round trips
    finally:
        await client.aclose()


async def test_a_point_read_with_redis_gone_raises() -> None:
    client = connect("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RedisConnectionError):
            await PointReads(client).hgetall(keys.session("c-1"))
    finally:
        await client.aclose()


_ECHO_LUA = """
if ARGV[1] == 'fail' then return redis.error_reply('refused ' .. KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


async def test_script_calls_made_together_share_pipelines_each_with_its_own_answer(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        script = PipelinedScript(client, _ECHO_LUA)
        flushes = 0
        run = script._run

        async def counted(batch: list[tuple[list[str], list[object]]]) -> list[object]:
            nonlocal flushes
            flushes += 1
            return await run(batch)

        script._run = counted  # type: ignore[method-assign]
        ids = [f"ps-{i}" for i in range(300)]  # keys in many slots on a cluster
        results = await asyncio.gather(
            *[script(keys=[keys.session(c)], args=[f"v{i}"]) for i, c in enumerate(ids)],
            script(keys=[keys.session("ps-bad")], args=["fail"]),
            return_exceptions=True,
        )
        assert results[:-1] == [f"v{i}" for i in range(300)]
        assert isinstance(results[-1], ResponseError) and "refused" in str(results[-1])  # alone
        assert [await client.get(keys.session(c)) for c in ids] == [f"v{i}" for i in range(300)]
        # 301 calls, a handful of round trips; on a cluster (no EVALSHA in a pipeline) each its own.
        assert flushes == 0 if on_cluster() else flushes < 10
        # One at a time, each is the plain script call: no pipeline, no task between.
        before = flushes
        for i in range(20):
            assert await script(keys=[keys.session(f"ps-lone-{i}")], args=[str(i)]) == str(i)
        assert flushes == before
    finally:
        await client.aclose()


async def test_script_calls_after_redis_forgot_the_script_load_it_again(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        script = PipelinedScript(client, _ECHO_LUA)
        assert await script(keys=[keys.session("ps-first")], args=["one"]) == "one"
        await client.script_flush()  # a restart or failover empties the script cache
        results = await asyncio.gather(
            *[script(keys=[keys.session(f"ps-again-{i}")], args=[str(i)]) for i in range(50)]
        )
        assert results == [str(i) for i in range(50)]
    finally:
        await client.aclose()


async def test_a_script_call_with_redis_gone_raises() -> None:
    client = connect("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RedisConnectionError):
            await PipelinedScript(client, _ECHO_LUA)(keys=[keys.session("c-1")], args=["x"])
    finally:
        await client.aclose()
