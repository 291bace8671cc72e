"""Issue 2, end to end: sandbox call -> session -> audio fork -> SDK -> hangup."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import yotel
from yotel.errors import AISessionTerminated, NoVoiceAgentConfigured

from bridge.api.app import create_app
from bridge.config import Settings
from bridge.services import Services
from bridge.store.redis import connect
from tests.conftest import AgentServer, in_thread


def sdk(sandbox: Any, key: str | None = None) -> yotel.Client:
    return yotel.Client(api_key=key or sandbox.info.admin_key, base_url=sandbox.info.base_url, max_retries=1)


async def place_call(sandbox: Any, **body: Any) -> dict[str, Any]:
    payload = {"from": "+14155550100", "to": "+14155550199", **body}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sandbox.info.base_url}/sandbox/calls",
            json=payload,
            headers={"Authorization": f"Bearer {sandbox.info.admin_key}"},
        ) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()


async def end_call(sandbox: Any, call_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.delete(
            f"{sandbox.info.base_url}/sandbox/calls/{call_id}",
            headers={"Authorization": f"Bearer {sandbox.info.admin_key}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def event_types(sandbox: Any, call_id: str) -> list[str]:
    events = await sandbox.runtime.services.outbox.read_all()
    return [e.event_type for e in events if e.data.get("call_id") == call_id]


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_sandbox_call_reaches_the_agent_and_the_sdk_drives_it(sandbox, agent_server: AgentServer):
    client = sdk(sandbox)
    agent = await in_thread(
        client.voice_agents.create, name="Sales bot", ws_url=agent_server.url, auth_token="s3cret",
        subprotocol="audio.jambonz.org",
    )  # fmt: skip
    await in_thread(client.voice_agents.set_as_default, agent.id)
    assert await in_thread(client.voice_agents.get_default) == agent.id

    placed = await place_call(sandbox)
    call_id = placed["call_id"]
    assert placed["state"] == "in_progress"

    meta = await agent_server.metadata(call_id)
    assert meta["call_id"] == call_id
    assert meta["tenant_id"] == sandbox.info.tenant_id == "acme"
    assert meta["voice_agent_id"] == agent.id
    assert meta["direction"] == "inbound"
    assert meta["from"] == "+14155550100" and meta["to"] == "+14155550199"
    assert meta["callback_token"].startswith("yt_cb_") and len(meta["callback_token"]) == 32
    assert meta["token_expires_at"].endswith("Z")
    assert meta["audio_format"]["sample_rate_hz"] == 16000
    conn = agent_server.connection(call_id)
    assert conn["protocol"] == "audio.jambonz.org"
    assert conn["headers"].get("Authorization") == "Bearer s3cret"
    await agent_server.wait_for(lambda: agent_server.connection(call_id)["binary_frames"] >= 3)

    state = await in_thread(client.ai_sessions.get_call_state, call_id, callback_token=meta["callback_token"])
    assert state["ok"] is True and state["call_id"] == call_id
    assert state["result"]["state"] == "in_progress"
    assert state["result"]["answered"] is True
    assert state["result"]["is_recording"] is True

    channel = sandbox.sim.snapshot(call_id)
    assert channel["answered"] is True
    assert any(c.startswith(f"uuid_answer {call_id}") for c in channel["commands"])
    assert any(c.startswith(f"uuid_record {call_id} start") for c in channel["commands"])
    assert any(c.startswith("uuid_audio_fork") and "start" in c for c in channel["commands"])

    ended = await end_call(sandbox, call_id)
    assert ended["state"] == "ended" and ended["outcome"] == "hangup"
    with pytest.raises(AISessionTerminated) as exc:
        await in_thread(client.ai_sessions.get_call_state, call_id, callback_token=meta["callback_token"])
    assert exc.value.status_code == 409
    assert exc.value.detail["code"] == "ai_session_terminated"

    # call.ended follows ai_session.ended from the same hangup event: the session ending first is
    # what end_call waited for.
    async def call_ended() -> bool:
        return "call.ended" in await event_types(sandbox, call_id)

    await wait_until(call_ended)
    types = await event_types(sandbox, call_id)
    for expected in ("call.started", "call.answered", "ai_session.started", "ai_session.ended", "call.ended"):
        assert expected in types
    assert types.index("call.started") < types.index("call.answered") < types.index("call.ended")
    await agent_server.wait_for(lambda: agent_server.connection(call_id)["closed"])


async def test_session_is_readable_through_the_ai_sessions_api(sandbox, agent_server: AgentServer):
    client = sdk(sandbox)
    agent = await in_thread(client.voice_agents.create, name="bot", ws_url=agent_server.url)
    placed = await place_call(sandbox, voice_agent_id=agent.id)
    call_id = placed["call_id"]
    session = await in_thread(client.ai_sessions.get, call_id)
    assert session["call_id"] == call_id and session["voice_agent_id"] == agent.id
    assert session["state"] == "in_progress" and session["metadata"] == {"logs": []}
    listed = await in_thread(client.ai_sessions.list, voice_agent_id=agent.id)
    assert [s["call_id"] for s in listed] == [call_id]


async def test_call_without_a_voice_agent_is_hung_up_with_outcome_error(sandbox):
    placed = await place_call(sandbox)
    call_id = placed["call_id"]
    assert placed["outcome"] == "error" and placed["reason"] == "no_voice_agent_configured"

    async def hung_up() -> bool:
        snap = sandbox.sim.snapshot(call_id)
        return snap is None or snap.get("hangup_cause") == "SERVICE_UNAVAILABLE"

    await wait_until(hung_up)
    session = await sandbox.runtime.services.sessions.get(call_id)
    assert session.outcome == "error" and session.reason == "no_voice_agent_configured"


async def test_outbound_call_without_agent_is_424_and_with_agent_reaches_the_ai(sandbox, agent_server):
    client = sdk(sandbox)
    body = {"to": "+14155550123", "from": "+14155550100"}
    with pytest.raises(NoVoiceAgentConfigured):
        await in_thread(client._request, "POST", "/api/v1/calls", json=body)

    agent = await in_thread(client.voice_agents.create, name="out", ws_url=agent_server.url)
    created = await in_thread(
        client._request, "POST", "/api/v1/calls", json={**body, "voice_agent_id": agent.id}
    )
    call_id = created["call_id"]
    meta = await agent_server.metadata(call_id)
    assert meta["direction"] == "outbound" and meta["to"] == "+14155550123"
    originate = [c for c in sandbox.sim.commands() if c.startswith("originate")]
    assert any(
        f"origination_uuid={call_id}" in c and "sofia/gateway/pstn/+14155550123" in c for c in originate
    )


async def test_session_whose_channel_vanished_during_an_esl_outage_is_ended(sandbox, agent_server):
    client = sdk(sandbox)
    agent = await in_thread(client.voice_agents.create, name="bot", ws_url=agent_server.url)
    call_id = (await place_call(sandbox, voice_agent_id=agent.id))["call_id"]
    await agent_server.metadata(call_id)  # call set-up (record, fork) has finished
    svc = sandbox.runtime.services

    await sandbox.sim.drop_connections()
    await sandbox.sim.hangup(call_id)  # its events go nowhere: no listener is connected

    async def ended() -> bool:
        session = await svc.sessions.get(call_id)
        return session is not None and session.terminal

    await wait_until(ended, timeout=10)
    session = await svc.sessions.get(call_id)
    assert session.outcome == "hangup"  # ended by the resync, not by a failed set-up
    await wait_until(lambda: _is(svc.switches.default.connected), timeout=10)
    assert await svc.voice_agents.active_calls(agent.id) == set()

    async def call_ended() -> bool:
        return "call.ended" in await event_types(sandbox, call_id)

    await wait_until(call_ended)


async def test_api_key_scopes_are_enforced(sandbox, agent_server):
    svc = sandbox.runtime.services
    read_only, _ = await svc.tenants.create_key("acme", ["voice_agents:read"])
    client = sdk(sandbox, read_only)
    with pytest.raises(yotel.errors.PermissionError) as exc:
        await in_thread(client.voice_agents.create, name="x", ws_url=agent_server.url)
    assert exc.value.detail["code"] == "missing_scope"
    assert await in_thread(client.voice_agents.list) == []
    with pytest.raises(yotel.errors.AuthenticationError):
        await in_thread(sdk(sandbox, "yt_live_not-a-key").voice_agents.list)


async def test_a_redis_outage_is_a_503_in_the_envelope(settings: Settings):
    svc = Services(settings, connect("redis://127.0.0.1:1/0"))
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(create_app(svc))) as http:
        resp = await http.get("/api/v1/voice-agents", headers={"Authorization": "Bearer yt_live_x"})
        body = await resp.json()
        assert resp.status == 503
        assert body["detail"]["code"] == "store_unavailable"
        assert body["detail"]["request_id"] == resp.headers["X-Request-Id"]
    await svc.redis.aclose()


async def test_switch_outage_is_a_503_for_a_new_call(sandbox, agent_server):
    client = sdk(sandbox)
    agent = await in_thread(client.voice_agents.create, name="bot", ws_url=agent_server.url)
    await sandbox.sim.stop()
    svc = sandbox.runtime.services
    await wait_until(lambda: _not(svc.switches.default.connected))
    with pytest.raises(yotel.errors.APIError) as exc:
        await in_thread(
            client._request, "POST", "/api/v1/calls",
            json={"to": "+14155550123", "from": "+14155550100", "voice_agent_id": agent.id},
        )  # fmt: skip
    assert exc.value.status_code == 503 and exc.value.detail["code"] == "switch_unavailable"


async def _not(value: bool) -> bool:
    return not value


async def _is(value: bool) -> bool:
    return value
