"""Issue 4: the SDK's voice_agents resource, including its 409 / 424 / 429 cases."""

from __future__ import annotations

import pytest
from yotel.errors import MaxConcurrentExceeded, NotFoundError, NoVoiceAgentConfigured, VoiceAgentInUse

from tests.conftest import AgentServer, in_thread
from tests.helpers import end_call, place_call, sdk, wait_until


async def test_crud_archive_default_and_in_use(sandbox, agent_server: AgentServer):
    client = sdk(sandbox)
    agent = await in_thread(
        client.voice_agents.create, name="bot", ws_url=agent_server.url, max_concurrent=1,
        token_lifetime="ws_session", subprotocol="audio.jambonz.org",
    )  # fmt: skip
    assert agent.status == "active" and agent.token_lifetime == "ws_session"
    assert (await in_thread(client.voice_agents.get, agent.id)).subprotocol == "audio.jambonz.org"
    updated = await in_thread(client.voice_agents.update, agent.id, max_concurrent=2, name="bot2")
    assert updated.max_concurrent == 2 and updated.name == "bot2" and updated.ws_url == agent.ws_url
    assert [a.id for a in await in_thread(client.voice_agents.list, status="active")] == [agent.id]

    call_id = await place_call(sandbox, voice_agent_id=agent.id)
    await agent_server.metadata(call_id)
    with pytest.raises(VoiceAgentInUse):
        await in_thread(client.voice_agents.delete, agent.id)
    await end_call(sandbox, call_id)

    # The hangup is handled after end_call returns: the agent is free once the session has ended.
    async def ended() -> bool:
        session = await sandbox.runtime.services.sessions.get(call_id)
        return session is not None and session.terminal

    await wait_until(ended, timeout=10)
    await in_thread(client.voice_agents.delete, agent.id)
    with pytest.raises(NotFoundError):
        await in_thread(client.voice_agents.get, agent.id)

    other = await in_thread(client.voice_agents.create, name="b", ws_url=agent_server.url)
    await in_thread(client.voice_agents.set_as_default, other.id)
    archived = await in_thread(client.voice_agents.archive, other.id)
    assert archived.status == "archived"
    assert await in_thread(client.voice_agents.get_default) is None
    assert await in_thread(client.voice_agents.list, status="archived") != []


async def test_max_concurrent_refuses_an_api_originate_with_429_and_frees_the_slot(sandbox, agent_server):
    client = sdk(sandbox, retry_on_429=False)
    agent = await in_thread(client.voice_agents.create, name="one", ws_url=agent_server.url, max_concurrent=1)
    body = {"to": "+14155550123", "from": "+14155550100", "voice_agent_id": agent.id}
    first = await in_thread(client._request, "POST", "/api/v1/calls", json=body)
    await agent_server.metadata(first["call_id"])
    with pytest.raises(MaxConcurrentExceeded) as exc:
        await in_thread(client._request, "POST", "/api/v1/calls", json=body)
    assert exc.value.retry_after == 5 and exc.value.detail["code"] == "max_concurrent_exceeded"

    # An inbound call beyond the cap is hung up with a clear cause.
    inbound = await place_call(sandbox, voice_agent_id=agent.id)
    session = await sandbox.runtime.services.sessions.get(inbound)
    assert session.outcome == "error" and session.reason == "max_concurrent_exceeded"

    await end_call(sandbox, first["call_id"])
    again = await in_thread(client._request, "POST", "/api/v1/calls", json=body)
    assert again["call_id"] != first["call_id"]


async def test_no_voice_agent_is_424(sandbox):
    with pytest.raises(NoVoiceAgentConfigured):
        await in_thread(
            sdk(sandbox)._request,
            "POST",
            "/api/v1/calls",
            json={"to": "+14155550123", "from": "+14155550100"},
        )
