"""The bridge on a real Redis Cluster (tests/redis_cluster.py: three masters from the redis-server
the other tests use): the client, the control hot path's own client, the health check and a
cluster that stops answering, the slots keys share, and work that spans masters (a scan of every
master, pub/sub between instances). `make test` also runs most store, control, webhook, lead,
callback and end-to-end modules on the cluster (BRIDGE_TEST_REDIS=cluster, see the Makefile)."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import aiohttp
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.cluster import key_slot

import bridge.api.pipeline as pipeline_module
from bridge.api.routes.control import PIPELINE_KEY
from bridge.config import Settings
from bridge.store import keys
from bridge.store.redis import StoreUnavailable, cluster_url, connect, ping
from tests.conftest import AgentServer
from tests.helpers import commands, control, sandbox_with, start_call


@pytest.fixture
async def cluster(redis_cluster_url: str):
    client = connect(redis_cluster_url)
    await client.flushdb()  # every master
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def sandbox(redis_cluster_url: str, cluster: RedisCluster, tmp_path: Any) -> Any:
    async with sandbox_with(redis_cluster_url, tmp_path, rate_limit_per_s=1000) as box:
        yield box


async def healthz(box: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{box.info.base_url}/healthz") as resp:
        return resp.status, await resp.json()


def slot(key: str) -> int:
    return key_slot(key.encode())


# ---------------------------------------------------------------- the client


def test_which_urls_name_a_cluster(monkeypatch):
    assert cluster_url("redis+cluster://10.0.0.1:7000") == ("redis://10.0.0.1:7000", True)
    assert cluster_url("rediss+cluster://u:p@h:7000") == ("rediss://u:p@h:7000", True)
    assert cluster_url("redis://h:6379/0") == ("redis://h:6379/0", False)
    assert cluster_url("redis://h:7000", cluster=True) == ("redis://h:7000", True)
    monkeypatch.setenv("BRIDGE_REDIS_CLUSTER", "1")
    assert Settings.from_env().redis_cluster is True


async def test_bridge_redis_cluster_makes_a_plain_url_a_cluster(
    redis_cluster_url: str, cluster: RedisCluster, tmp_path: Any, agent_server: AgentServer
):
    plain = redis_cluster_url.replace("redis+cluster://", "redis://")
    async with sandbox_with(plain, tmp_path, redis_cluster=True) as box:
        assert isinstance(box.runtime.services.redis, RedisCluster)
        call = await start_call(box, agent_server)
        assert (await control(box, call.call_id, {"event": "hold"}, auth=call.token)).status == 200


async def test_a_cluster_url_gives_a_cluster_client_that_reaches_every_master(cluster):
    assert isinstance(cluster, RedisCluster)
    await ping(cluster)
    assert len(cluster.get_primaries()) == 3
    owners = {cluster.get_node_from_key(keys.session(f"c{i}")).name for i in range(30)}
    assert len(owners) == 3  # calls spread over the masters


async def test_a_cluster_nobody_answers_is_store_unavailable_at_startup():
    client = connect("redis+cluster://127.0.0.1:1")
    with pytest.raises(StoreUnavailable):
        await ping(client, timeout_s=1.0)
    await client.aclose()


async def test_the_hot_path_has_a_cluster_client_of_its_own(sandbox, agent_server: AgentServer):
    shared = sandbox.runtime.services.redis
    own = sandbox.runtime._runner.app[PIPELINE_KEY].redis
    assert isinstance(shared, RedisCluster) and isinstance(own, RedisCluster) and own is not shared
    assert own.connection_kwargs["socket_timeout"] is None and own.retry.get_retries() == 0
    call = await start_call(sandbox, agent_server)
    assert (await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token)).status == 200
    status, body = await healthz(sandbox)
    assert status == 200 and body["redis"] is True


async def test_a_cluster_that_stops_answering_is_503_within_the_bound_then_back(
    sandbox, agent_server: AgentServer, cluster: RedisCluster, monkeypatch
):
    monkeypatch.setattr(pipeline_module, "_REDIS_TIMEOUT_S", 0.3)
    call = await start_call(sandbox, agent_server)
    assert (await control(sandbox, call.call_id, {"event": "get_call_state"}, auth=call.token)).status == 200
    # Longer than the health check's own 2 s bound, so it sees the pause too.
    await cluster.execute_command("CLIENT PAUSE", 2600, "ALL", target_nodes=RedisCluster.PRIMARIES)
    t0 = time.monotonic()
    stuck = await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token, idempotency_key="m1")
    waited = time.monotonic() - t0
    assert (stuck.status, stuck.code) == (503, "store_unavailable")
    assert 0.25 <= waited < 1.2, waited
    status, body = await healthz(sandbox)
    assert status == 503 and body["redis"] is False
    assert commands(sandbox, call.call_id, "uuid_audio ") == []
    await asyncio.sleep(max(0.0, 2.7 - (time.monotonic() - t0)))  # the pause is over
    retried = await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token, idempotency_key="m1")
    assert retried.status == 200 and "Idempotent-Replayed" not in retried.headers
    assert len(commands(sandbox, call.call_id, "uuid_audio ")) == 1
    assert (await healthz(sandbox))[0] == 200


async def test_connections_a_node_dropped_are_replaced_without_failing_a_verb(
    sandbox, agent_server: AgentServer, cluster: RedisCluster
):
    call = await start_call(sandbox, agent_server)
    for _ in range(3):
        reply = await control(sandbox, call.call_id, {"event": "get_call_state"}, auth=call.token)
        assert reply.status == 200
    killed = 0
    for node in cluster.get_primaries():
        for client in await cluster.client_list(target_nodes=node):
            if client["name"].endswith("-control"):
                await cluster.client_kill_filter(_id=client["id"], target_nodes=node)
                killed += 1
    assert killed
    await asyncio.sleep(0.05)
    replies = [
        await control(sandbox, call.call_id, {"event": "send_dtmf", "digits": "1"}, auth=call.token)
        for _ in range(3)
    ]
    assert [r.status for r in replies] == [200, 200, 200]
    assert len(commands(sandbox, call.call_id, "uuid_send_dtmf")) == 3


async def test_scripts_are_loaded_again_after_every_master_forgets_them(
    sandbox, agent_server: AgentServer, cluster: RedisCluster
):
    call = await start_call(sandbox, agent_server)
    assert (await control(sandbox, call.call_id, {"event": "hold"}, auth=call.token)).status == 200
    await cluster.script_flush()
    assert (await control(sandbox, call.call_id, {"event": "unhold"}, auth=call.token)).status == 200


# ---------------------------------------------------------------- slots


def _builders() -> dict[str, Any]:
    return {
        name: fn
        for name, fn in vars(keys).items()
        if inspect.isfunction(fn) and fn.__module__ == keys.__name__ and not name.startswith("_")
    }


def test_every_key_is_tagged_by_its_owner_or_group_or_is_a_single_key():
    singles = {"keys_version", "tenants", "live_sessions", "token_refresh_due", "session_deadlines"}
    singles |= {"recording_url_secret", "supervision_channel", "bridges"}
    for name, fn in _builders().items():
        params = inspect.signature(fn).parameters
        key = fn(*[f"id{i}" for i in range(len(params))])
        assert key.startswith(keys.PREFIX), name
        if name in singles:
            assert "{" not in key, name
            continue
        tag = key[key.index("{") + 1 : key.index("}")]
        assert tag in ("webhooks", "callbacks") or tag.split(":", 1)[1] == "id0", (name, key)


def test_the_keys_each_script_touches_share_a_slot():
    call, tenant = "0d1f4c7e-call", "acme"
    groups = {
        "control admission": [keys.session(call), keys.rate_limit(call), keys.idempotency(call, "k")],
        "session end": [keys.session(call), keys.session_logs(call)],
        "escalation pointer": [keys.call_escalation(call), keys.session(call)],
        "tenant": [
            keys.tenant(tenant),
            keys.tenant_sessions(tenant),
            keys.supervisor(tenant, "s"),
            keys.supervisor_conns(tenant, "s"),
            keys.supervisor_duty(tenant, "s"),
        ],
        "leads:bulk": [keys.campaign("cmp"), keys.campaign_leads("cmp"), keys.campaign_phones("cmp")],
        "lead": [keys.lead("l"), keys.lead_custom_fields("l")],
        "webhooks": [
            keys.outbox(),
            keys.webhook_retry_queue(),
            keys.delivery("d"),
            keys.webhook("w"),
            keys.webhook_deliveries("w"),
        ],
        "callbacks": [
            keys.callback("cb"),
            keys.callbacks_due(),
            keys.callbacks_dialing(),
            keys.callback_idempotency(call, "k"),
        ],
        "voice agent": [keys.voice_agent("va"), keys.voice_agent_active("va")],
        "conference": [keys.conference("cf"), keys.conference_members("cf")],
        "box lease": [keys.box_lease("fs1"), keys.box_mark("fs1")],
    }
    for name, group in groups.items():
        assert len({slot(k) for k in group}) == 1, name
    # ... and the families are not one slot by accident.
    assert len({slot(g[0]) for g in groups.values()}) >= 8


# ---------------------------------------------------------------- work over every master


async def test_orphan_slot_cleanup_scans_every_master(sandbox, cluster: RedisCluster):
    agents = [f"va_{i}" for i in range(12)]
    for va in agents:
        await cluster.sadd(keys.voice_agent_active(va), f"gone-{va}")
    masters = {cluster.get_node_from_key(keys.voice_agent_active(va)).name for va in agents}
    assert len(masters) >= 2
    await sandbox.runtime.services.calls.resync.free_orphan_slots()  # the call ids are not live
    for va in agents:
        assert await cluster.scard(keys.voice_agent_active(va)) == 0, va
