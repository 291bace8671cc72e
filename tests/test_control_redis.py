"""The control hot path's Redis side on redis-py: its own client and pool, the scripts loaded again
after Redis forgets them, a Redis that stops answering (503 within the pipeline's bound, then
back to normal), and connections Redis dropped being replaced without failing a verb."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

import bridge.api.pipeline as pipeline_module
from bridge.api.routes.control import PIPELINE_KEY
from tests.conftest import AgentServer
from tests.helpers import commands, control, sandbox_with, start_call


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000) as box:
        yield box


def pipeline_of(sandbox: Any) -> Any:
    return sandbox.runtime._runner.app[PIPELINE_KEY]


async def test_the_hot_path_has_a_redis_py_client_of_its_own(sandbox, agent_server: AgentServer):
    pipeline = pipeline_of(sandbox)
    shared: aioredis.Redis = sandbox.runtime.services.redis
    own: aioredis.Redis = pipeline.redis
    assert isinstance(own, aioredis.Redis) and own is not shared
    assert own.connection_pool is not shared.connection_pool
    assert isinstance(own.connection_pool, aioredis.BlockingConnectionPool)
    kwargs = own.connection_pool.connection_kwargs
    # Bounded by the pipeline's asyncio.timeout, not per read and write; never re-sent.
    assert kwargs["socket_timeout"] is None and kwargs["retry"].get_retries() == 0
    assert kwargs["path"] == shared.connection_pool.connection_kwargs["path"]
    call = await start_call(sandbox, agent_server)
    assert (await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token)).status == 200
    pool = own.connection_pool
    parser = "_AsyncHiredisParser" if HIREDIS_AVAILABLE else "_AsyncRESP2Parser"
    conns = [*pool._available_connections, *pool._in_use_connections]
    assert conns and {type(c._parser).__name__ for c in conns} == {parser}
    # Closing the client (at shutdown) closes its pool's connections.
    assert own.auto_close_connection_pool is True


async def test_scripts_are_loaded_again_after_redis_forgets_them(
    sandbox, agent_server: AgentServer, redis: aioredis.Redis
):
    call = await start_call(sandbox, agent_server)
    first = await control(sandbox, call.call_id, {"event": "hold"}, auth=call.token, idempotency_key="k1")
    assert first.status == 200
    await redis.script_flush()
    # Admission (claim), the stored answer and a replay all run on freshly loaded scripts.
    again = await control(sandbox, call.call_id, {"event": "unhold"}, auth=call.token, idempotency_key="k2")
    assert again.status == 200
    # The answer is stored while it is sent: let that land first, or the flush below could
    # fall between its script's reload and its run (then nothing is stored and k2 runs again).
    await pipeline_of(sandbox).drain()
    await redis.script_flush()
    replay = await control(sandbox, call.call_id, {"event": "unhold"}, auth=call.token, idempotency_key="k2")
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert len(commands(sandbox, call.call_id, "uuid_hold off")) == 1


async def test_a_redis_that_stops_answering_is_503_within_the_bound(
    sandbox, agent_server: AgentServer, redis: aioredis.Redis, monkeypatch
):
    monkeypatch.setattr(pipeline_module, "_REDIS_TIMEOUT_S", 0.3)
    call = await start_call(sandbox, agent_server)
    assert (await control(sandbox, call.call_id, {"event": "get_call_state"}, auth=call.token)).status == 200
    await redis.execute_command("CLIENT", "PAUSE", 1200, "ALL")
    t0 = time.monotonic()
    stuck = await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token, idempotency_key="m1")
    waited = time.monotonic() - t0
    assert (stuck.status, stuck.code) == (503, "store_unavailable")
    assert stuck.body["detail"]["request_id"]
    assert 0.25 <= waited < 1.0, waited
    assert commands(sandbox, call.call_id, "uuid_audio ") == []
    await asyncio.sleep(1.2)  # the pause is over
    # The cancelled exchange's connection was dropped, not reused half-read: the same request
    # (nothing was claimed or cached) now goes through, once.
    retried = await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token, idempotency_key="m1")
    assert retried.status == 200 and "Idempotent-Replayed" not in retried.headers
    assert len(commands(sandbox, call.call_id, "uuid_audio ")) == 1


async def test_connections_redis_dropped_are_replaced_without_failing_a_verb(
    sandbox, agent_server: AgentServer, redis: aioredis.Redis
):
    call = await start_call(sandbox, agent_server)
    for _ in range(3):
        reply = await control(sandbox, call.call_id, {"event": "get_call_state"}, auth=call.token)
        assert reply.status == 200
    clients = await redis.client_list()
    hot = [c for c in clients if c["name"].endswith("-control")]
    assert hot, clients
    for client in hot:
        await redis.client_kill_filter(_id=client["id"])
    await asyncio.sleep(0.05)
    replies = [
        await control(sandbox, call.call_id, {"event": "send_dtmf", "digits": "1"}, auth=call.token)
        for _ in range(3)
    ]
    assert [r.status for r in replies] == [200, 200, 200]
    assert len(commands(sandbox, call.call_id, "uuid_send_dtmf")) == 3
