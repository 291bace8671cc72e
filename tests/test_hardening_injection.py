"""Issue 13, findings 1, 2, 3 and 6, reproduced through the API against the sandbox: hostile values
never reach the switch, ids must be the tenant's, and a call whose setup or event handling fails
still ends cleanly (slot freed, session ended, webhooks fired)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.store import keys
from tests.conftest import AgentServer
from tests.helpers import (
    CALLER,
    DIALED,
    end_call,
    ensure_default_agent,
    events,
    http,
    place_call,
    start_call,
    wait_until,
)

UUID = "6f1c9a52-0d7e-4a53-9a55-2b8f3f1d1c11"
INJECTIONS = [
    ("campaign_id", "x}sofia/gateway/evil/+19995550000,{a=b"),
    ("lead_id", "l,origination_caller_id_number=+10000000000"),
    ("lead_id", "${uuid_kill(" + UUID + ")}"),
    ("campaign_id", "cmp_1\nbgapi originate sofia/gateway/evil/+1999 &park()"),
    ("voice_agent_id", "va_1,origination_caller_id_number=+1000"),
]


def _originates(sandbox: Any) -> list[str]:
    return [c for c in sandbox.sim.commands() if c.startswith("originate")]


@pytest.mark.parametrize(("field", "value"), INJECTIONS)
async def test_an_originate_variable_injection_is_refused_and_nothing_is_dialled(
    sandbox, agent_server: AgentServer, field: str, value: str
):
    await ensure_default_agent(sandbox, agent_server)
    reply = await http(sandbox, "POST", "/api/v1/calls", {"to": DIALED, "from": CALLER, field: value})
    assert (reply.status, reply.code) == (400, "validation_error"), reply.body
    assert field in reply.body["detail"]["message"]
    assert _originates(sandbox) == []
    body = {"to": DIALED, "from": CALLER, field: value}
    sandbox_reply = await http(sandbox, "POST", "/sandbox/calls", body)
    assert (sandbox_reply.status, sandbox_reply.code) == (400, "validation_error")


async def test_ids_of_another_tenant_are_as_unknown_as_made_up_ones(sandbox, agent_server: AgentServer):
    await ensure_default_agent(sandbox, agent_server)
    calls = sandbox.runtime.services.calls
    await calls.campaigns.put({"id": "cmp_theirs", "tenant_id": "globex", "name": "c"})
    await calls.leads.put({"id": "lead_theirs", "tenant_id": "globex", "phone": "+14155550123"})
    for field, foreign, unknown, code in (
        ("campaign_id", "cmp_theirs", "cmp_nope", "campaign_not_found"),
        ("lead_id", "lead_theirs", "lead_nope", "lead_not_found"),
        ("voice_agent_id", "va_theirs", "va_nope", "voice_agent_not_found"),
    ):
        for value in (foreign, unknown):
            for path in ("/api/v1/calls", "/sandbox/calls"):
                reply = await http(sandbox, "POST", path, {"to": DIALED, "from": CALLER, field: value})
                assert (reply.status, reply.code) == (404, code), (path, field, value, reply.body)
    assert _originates(sandbox) == []


async def test_the_tenants_own_ids_still_dial(sandbox, agent_server: AgentServer):
    agent = await ensure_default_agent(sandbox, agent_server)
    calls = sandbox.runtime.services.calls
    await calls.campaigns.put({"id": "cmp_ours", "tenant_id": "acme", "name": "c"})
    lead = {"id": "lead_ours", "tenant_id": "acme", "phone": DIALED, "campaign_id": "cmp_ours"}
    await calls.leads.put(lead)
    body = {"to": DIALED, "from": CALLER, "campaign_id": "cmp_ours", "lead_id": "lead_ours"}
    body["voice_agent_id"] = agent.id
    reply = await http(sandbox, "POST", "/api/v1/calls", body)
    assert reply.status == 201, reply.body
    [originate] = await wait_until(lambda: _async(_originates(sandbox)))
    assert "bridge_campaign_id=cmp_ours,bridge_lead_id=lead_ours}" in originate


async def _async(value: Any) -> Any:
    return value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ws_url", "ws://127.0.0.1:9/ws?a=${uuid_kill(" + UUID + ")}"),
        ("ws_url", "ws://127.0.0.1:9/{a}"),
        ("ws_url", "ws://127.0.0.1:9/a,b"),
        ("ws_url", "ws://127.0.0.1:9/a\rb"),
        ("ws_url", "ws://127.0.0.1:9/a\x00b"),
        ("auth_token", "secret\nbgapi originate sofia/gateway/evil/+1999 &park()"),
        ("auth_token", "${uuid_kill(" + UUID + ")}"),
        ("auth_token", "a}b"),
        ("auth_token", "a,b"),
    ],
)
async def test_a_voice_agent_value_the_switch_would_read_is_refused(sandbox, field: str, value: str):
    body = {"name": "bot", "ws_url": "ws://127.0.0.1:9/ws", field: value}
    reply = await http(sandbox, "POST", "/api/v1/voice-agents", body)
    assert (reply.status, reply.code) == (400, "validation_error"), reply.body
    assert field in reply.body["detail"]["message"]


async def test_a_prompt_url_with_a_nul_or_control_character_is_refused(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    before = len(sandbox.sim.commands())
    for audio_url in ("http://h/a\u0000b", "http://h/a\rb", "http://h/${x}", "http://h/a'b"):
        reply = await http(
            sandbox,
            "POST",
            f"/api/v1/ai-sessions/{call.call_id}/control",
            {"event": "play_audio", "audio_url": audio_url},
            auth=call.token,
            headers={"Idempotency-Key": f"k-{len(audio_url)}-{ord(audio_url[8])}"},
        )
        assert (reply.status, reply.code) == (400, "validation_error"), reply.body
    assert sandbox.sim.commands()[before:] == []


# ---------------------------------------------------------------- finding 3: a call always ends


async def _no_slots(sandbox: Any, agent_id: str) -> bool:
    return not await sandbox.runtime.services.voice_agents.active_calls(agent_id)


async def test_an_agent_stored_with_a_newline_token_ends_the_call_cleanly(sandbox, agent_server: AgentServer):
    """The value predates the rule (written straight to Redis): the call is refused at setup,
    the caller hung up, the slot freed and the session ended, and the next call goes through."""
    agent = await ensure_default_agent(sandbox, agent_server)
    redis = sandbox.runtime.services.redis
    stored = json.loads(await redis.get(keys.voice_agent(agent.id)))
    await redis.set(keys.voice_agent(agent.id), json.dumps({**stored, "auth_token": "a\nb"}))

    call_id = await place_call(sandbox)
    session = await wait_until(lambda: _ended(sandbox, call_id))
    assert (session.outcome, session.reason.split(":")[0]) == ("error", "switch_error")
    await wait_until(lambda: _no_slots(sandbox, agent.id))  # freed just after the session ends
    assert not any("\n" in c or "a\\nb" in c for c in sandbox.sim.commands())
    ended = await wait_until(lambda: events(sandbox, call_id, "call.ended"))
    assert ended[0].data["hangup_cause"] == "NORMAL_TEMPORARY_FAILURE"

    await redis.set(keys.voice_agent(agent.id), json.dumps(stored))
    assert (await start_call(sandbox, agent_server)).token


async def _ended(sandbox: Any, call_id: str) -> Any:
    session = await sandbox.runtime.services.sessions.get(call_id)
    return session if session is not None and session.terminal else None


async def test_a_failing_setup_handler_ends_the_call_instead_of_killing_its_worker(
    sandbox, agent_server: AgentServer
):
    agent = await ensure_default_agent(sandbox, agent_server)
    manager = sandbox.runtime.services.calls

    async def broken(call_id: str, agent: Any, token: Any) -> None:
        raise RuntimeError("a bug in a hook")

    manager.after_connect.append(broken)
    call_id = await place_call(sandbox)
    session = await wait_until(lambda: _ended(sandbox, call_id))
    assert (session.outcome, session.reason) == ("error", "internal_error")
    await wait_until(lambda: _no_slots(sandbox, agent.id))  # freed just after the session ends
    await wait_until(lambda: events(sandbox, call_id, "call.ended"))
    assert [e.data["outcome"] for e in await events(sandbox, call_id, "ai_session.ended")] == ["error"]
    manager.after_connect.remove(broken)


async def test_a_failing_hangup_handler_still_ends_the_session(sandbox, agent_server: AgentServer):
    """A handler that raises on CHANNEL_HANGUP_COMPLETE (before the bridge's own) and the bridge's
    own call_ended failing once: the session still ends once, with one call.ended."""
    agent = await ensure_default_agent(sandbox, agent_server)
    manager = sandbox.runtime.services.calls

    async def broken(event: Any) -> None:
        raise RuntimeError("a bug in a handler")

    real_call_ended = manager.call_ended
    failures = []

    async def call_ended_failing_once(session: Any, cause: str) -> None:
        if not failures:
            failures.append(cause)
            raise ConnectionError("Redis went away for a moment")
        await real_call_ended(session, cause)

    call = await start_call(sandbox, agent_server)
    manager._handlers["CHANNEL_HANGUP_COMPLETE"].insert(0, broken)
    manager.call_ended = call_ended_failing_once
    try:
        await end_call(sandbox, call.call_id)
        await wait_until(lambda: events(sandbox, call.call_id, "call.ended"))
    finally:
        manager.call_ended = real_call_ended
        manager._handlers["CHANNEL_HANGUP_COMPLETE"].remove(broken)
    session = await sandbox.runtime.services.sessions.get(call.call_id)
    assert (session.outcome, session.reason) == ("hangup", "caller_hangup")
    assert failures == ["NORMAL_CLEARING"]
    assert len(await events(sandbox, call.call_id, "call.ended")) == 1
    await wait_until(lambda: _no_slots(sandbox, agent.id))  # freed just after the session ends
