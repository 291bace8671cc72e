"""Group 3 end to end: the official SDK drives a sandbox call that carries a lead; the callback it
books is dialed by the scheduler through ESL to the switch simulator at its time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import yotel
from yotel.errors import APIError, ConflictError, NotFoundError

from tests.conftest import AgentServer, in_thread

pytest.importorskip("bridge.api.routes.control", reason="the control endpoint has not landed yet")

LEAD_PHONE = "+442079460958"


def sdk(sandbox: Any) -> yotel.Client:
    return yotel.Client(api_key=sandbox.info.admin_key, base_url=sandbox.info.base_url, max_retries=1)


async def http(sandbox: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            f"{sandbox.info.base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {sandbox.info.admin_key}"},
        ) as resp:
            return resp.status, await resp.json()


async def place_call(sandbox: Any, **body: Any) -> str:
    status, placed = await http(
        sandbox, "POST", "/sandbox/calls", {"from": "+14155550100", "to": "+14155550199", **body}
    )
    assert status == 201, placed
    assert placed["state"] == "in_progress", placed
    return placed["call_id"]


async def wait_for(probe: Any, timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def test_lead_verbs_and_a_callback_dialed_by_the_scheduler(agent_server: AgentServer, sandbox):
    client = sdk(sandbox)
    tier1 = await in_thread(client.voice_agents.create, name="tier1", ws_url=agent_server.url)
    tier2 = await in_thread(client.voice_agents.create, name="tier2", ws_url=agent_server.url)
    campaign = await in_thread(client.campaigns.create, name="Renewals")
    lead = await in_thread(
        client.leads.create, campaign_id=campaign.id, phone=LEAD_PHONE, metadata={"plan": "gold"}
    )
    call_id = await place_call(sandbox, lead_id=lead.id, campaign_id=campaign.id, voice_agent_id=tier1.id)
    meta = await agent_server.metadata(call_id)
    assert meta["lead_id"] == lead.id and meta["lead_metadata"] == {"plan": "gold"}
    token = meta["callback_token"]

    # Two fields patched concurrently: both survive.
    first, second = await asyncio.gather(
        in_thread(
            client.ai_sessions.set_lead_field,
            call_id,
            field="preferred_callback_window",
            value="weekday_evenings",
            callback_token=token,
        ),
        in_thread(
            client.ai_sessions.set_lead_field,
            call_id,
            field="budget",
            value={"amount": 1200, "currency": "GBP"},
            callback_token=token,
        ),
    )
    assert first["ok"] is True and first["call_id"] == call_id
    assert first["result"] == {
        "lead_id": lead.id,
        "field": "preferred_callback_window",
        "value": "weekday_evenings",
    }
    assert second["result"]["field"] == "budget"
    status = await in_thread(
        client.ai_sessions.set_lead_status, call_id, status="connected", callback_token=token
    )
    assert status["result"] == {"lead_id": lead.id, "status": "connected"}
    stored = await in_thread(client._request, "GET", f"/api/v1/leads/{lead.id}")
    assert stored["custom_fields"] == {
        "preferred_callback_window": "weekday_evenings",
        "budget": {"amount": 1200, "currency": "GBP"},
    }
    assert stored["status"] == "connected" and stored["status_set_by"] == "ai"

    booked = await in_thread(
        client.ai_sessions.schedule_callback,
        call_id,
        scheduled_at=at(1.0),
        reason="Customer asked to be called back",
        voice_agent_id=tier2.id,
        callback_token=token,
    )
    callback_id = booked["result"]["callback_id"]
    assert callback_id.startswith("cb_") and booked["result"]["scheduled_at"].endswith("Z")
    assert (await in_thread(client._request, "GET", f"/api/v1/leads/{lead.id}"))["status"] == "callback"
    _, listed = await http(sandbox, "GET", f"/api/v1/callbacks?call_id={call_id}")
    assert [(c["id"], c["state"]) for c in listed["items"]] == [(callback_id, "scheduled")]

    def originates() -> list[str]:
        return [c for c in sandbox.sim.commands() if "originate" in c and LEAD_PHONE in c]

    assert originates() == []

    async def dialed() -> dict[str, Any] | None:
        _, cb = await http(sandbox, "GET", f"/api/v1/callbacks/{callback_id}")
        return cb if cb["state"] == "dialed" else None

    cb = await wait_for(dialed)
    [command] = originates()
    assert f"bridge_voice_agent_id={tier2.id}" in command
    assert f"bridge_lead_id={lead.id}" in command and f"bridge_campaign_id={campaign.id}" in command
    assert "origination_caller_id_number=+14155550199" in command
    assert cb["to"] == LEAD_PHONE and cb["attempts"] == 1 and cb["error"] is None
    new_call = cb["result_call_id"]
    assert new_call and f"origination_uuid={new_call}" in command
    _, listed = await http(sandbox, "GET", "/api/v1/callbacks?state=dialed")
    assert [(c["id"], c["result_call_id"]) for c in listed["items"]] == [(callback_id, new_call)]

    # The callback is a full AI call: the lead answers and tier2 gets the lead's metadata.
    meta2 = await agent_server.metadata(new_call)
    assert meta2["voice_agent_id"] == tier2.id and meta2["direction"] == "outbound"
    assert meta2["lead_id"] == lead.id and meta2["lead_metadata"] == {"plan": "gold"}
    lead_after = await in_thread(client._request, "GET", f"/api/v1/leads/{lead.id}")
    assert lead_after["attempts"] == 1 and lead_after["last_attempted_at"]
    await asyncio.sleep(0.3)
    assert len(originates()) == 1  # dialed once, not on every poll

    status_code, err = await http(sandbox, "DELETE", f"/api/v1/callbacks/{callback_id}")
    assert status_code == 409 and err["detail"]["code"] == "callback_not_cancellable"


async def test_lead_verb_errors(agent_server: AgentServer, sandbox):
    client = sdk(sandbox)
    agent = await in_thread(client.voice_agents.create, name="bot", ws_url=agent_server.url)
    call_id = await place_call(sandbox, voice_agent_id=agent.id)
    token = (await agent_server.metadata(call_id))["callback_token"]

    with pytest.raises(ConflictError) as no_lead:
        await in_thread(client.ai_sessions.set_lead_field, call_id, field="a", value=1, callback_token=token)
    assert no_lead.value.detail["code"] == "no_lead_on_call"
    with pytest.raises(ConflictError):
        await in_thread(client.ai_sessions.set_lead_status, call_id, status="completed", callback_token=token)

    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    naive = (datetime.now() + timedelta(hours=1)).replace(microsecond=0).isoformat()
    for when in (past, naive):
        with pytest.raises(APIError) as bad:
            await in_thread(
                client.ai_sessions.schedule_callback, call_id, scheduled_at=when, callback_token=token
            )
        assert bad.value.status_code == 400, when
    with pytest.raises(NotFoundError) as unknown_agent:
        await in_thread(
            client.ai_sessions.schedule_callback,
            call_id,
            scheduled_at=at(3600),
            voice_agent_id="va_nope",
            callback_token=token,
        )
    assert unknown_agent.value.detail["code"] == "voice_agent_not_found"

    # No lead: the caller is called back, from the number they dialed.
    booked = await in_thread(
        client.ai_sessions.schedule_callback, call_id, scheduled_at=at(3600), callback_token=token
    )
    _, cb = await http(sandbox, "GET", f"/api/v1/callbacks/{booked['result']['callback_id']}")
    assert (cb["to"], cb["from"], cb["lead_id"], cb["state"]) == (
        "+14155550100",
        "+14155550199",
        None,
        "scheduled",
    )
    status_code, cancelled = await http(sandbox, "DELETE", f"/api/v1/callbacks/{cb['id']}")
    assert status_code == 200 and cancelled["state"] == "cancelled"


async def test_a_callback_no_agent_resolves_for_fails_with_424(agent_server: AgentServer, sandbox):
    client = sdk(sandbox)
    agent = await in_thread(client.voice_agents.create, name="bot", ws_url=agent_server.url)
    call_id = await place_call(sandbox, voice_agent_id=agent.id)
    token = (await agent_server.metadata(call_id))["callback_token"]
    booked = await in_thread(
        client.ai_sessions.schedule_callback, call_id, scheduled_at=at(0.8), callback_token=token
    )
    # The agent that took the call is gone by the time the callback is due, and nothing else resolves.
    await in_thread(client.voice_agents.archive, agent.id)

    async def settled() -> dict[str, Any] | None:
        _, cb = await http(sandbox, "GET", f"/api/v1/callbacks/{booked['result']['callback_id']}")
        return cb if cb["state"] not in ("scheduled", "dialing") else None

    cb = await wait_for(settled)
    assert cb["state"] == "failed" and cb["error"]["code"] == "no_voice_agent_configured"
    assert cb["result_call_id"] is None
    assert not [c for c in sandbox.sim.commands() if c.startswith(("originate", "bgapi originate"))]
