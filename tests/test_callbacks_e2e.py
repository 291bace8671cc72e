"""The scheduler inside a running sandbox bridge: a booked callback is originated through the real
ESL client to the switch simulator at its time, exactly once, and shows up dialed in the API."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bridge.api.auth import Principal
from bridge.calls.voice_agents import VoiceAgentCreate
from bridge.store.callbacks import CallbackStore
from bridge.store.crm import CampaignCreate, LeadCreate
from bridge.verbs import leads as verbs
from bridge.verbs.base import VerbContext
from bridge.verbs.models import VERB_ADAPTER
from tests.conftest import AgentServer


async def api(sandbox: Any, method: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            f"{sandbox.info.base_url}{path}",
            headers={"Authorization": f"Bearer {sandbox.info.admin_key}"},
        ) as resp:
            return resp.status, await resp.json()


async def test_a_booked_callback_is_originated_once_at_its_time(agent_server: AgentServer, sandbox):
    svc = sandbox.runtime.services
    tier1 = await svc.voice_agents.create("acme", VoiceAgentCreate(name="t1", ws_url=agent_server.url))
    tier2 = await svc.voice_agents.create("acme", VoiceAgentCreate(name="t2", ws_url=agent_server.url))
    campaign = await svc.calls.campaigns.create("acme", CampaignCreate(name="Renewals"))
    lead = await svc.calls.leads.create(
        "acme", campaign["id"], LeadCreate(phone="+442079460958", metadata={"plan": "gold"})
    )
    call_id = await sandbox.sim.place_inbound_call(
        "+14155550100",
        "+14155550199",
        {"bridge_tenant_id": "acme", "bridge_lead_id": lead["id"], "bridge_voice_agent_id": tier1.id},
    )
    meta = await agent_server.metadata(call_id)
    assert meta["lead_metadata"] == {"plan": "gold"}
    session = await svc.sessions.get(call_id)
    ctx = VerbContext(svc, session, Principal("callback_token", "acme", frozenset()), "req_e2e")
    scheduled_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    body = {"event": "schedule_callback", "scheduled_at": scheduled_at, "voice_agent_id": tier2.id}
    booked = await verbs.schedule_callback(ctx, VERB_ADAPTER.validate_python(body))
    cb_id = booked["callback_id"]

    def originates() -> list[str]:
        return [c for c in sandbox.sim.commands() if "originate" in c and "+442079460958" in c]

    await asyncio.sleep(0.5)
    assert originates() == []  # not before its time
    deadline = time.monotonic() + 8
    while True:
        _, cb = await api(sandbox, "GET", f"/api/v1/callbacks/{cb_id}")
        # "dialing" is the moment between the claim and the originate's answer: wait it out too.
        if cb["state"] not in ("scheduled", "dialing") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert cb["state"] == "dialed", cb
    assert datetime.fromisoformat(cb["dialed_at"]) >= datetime.fromisoformat(cb["scheduled_at"])
    [command] = originates()
    assert f"bridge_voice_agent_id={tier2.id}" in command
    assert f"origination_uuid={cb['result_call_id']}" in command
    meta2 = await agent_server.metadata(cb["result_call_id"])
    assert meta2["voice_agent_id"] == tier2.id and meta2["lead_metadata"] == {"plan": "gold"}
    _, listed = await api(sandbox, "GET", "/api/v1/callbacks?state=dialed")
    assert [c["id"] for c in listed["items"]] == [cb_id]
    await asyncio.sleep(0.3)
    assert len(originates()) == 1


async def test_two_bridges_on_one_redis_dial_each_callback_once(agent_server: AgentServer, sandbox, settings):
    from bridge.sandbox import Sandbox

    other = Sandbox(settings.with_(instance_id="bridge-b"), tenant_id="acme")
    await other.start()
    try:
        svc = sandbox.runtime.services
        agent = await svc.voice_agents.create(
            "acme", VoiceAgentCreate(name="cb", ws_url=agent_server.url, max_concurrent=50)
        )
        store = CallbackStore(svc.redis)
        due = datetime.now(UTC) + timedelta(seconds=0.5)
        booked = [
            (
                await store.create(
                    tenant_id="acme",
                    call_id=f"orig-{i}",
                    to=f"+1202555{i:04d}",
                    from_="+14155550000",
                    scheduled_at=due,
                    voice_agent_id=agent.id,
                )
            )[0]
            for i in range(10)
        ]

        async def all_settled() -> bool:
            states = [(await store.get(cb.id)).state for cb in booked]
            return all(s not in ("scheduled", "dialing") for s in states)

        deadline = time.monotonic() + 8
        while not await all_settled():
            assert time.monotonic() < deadline, "callbacks not dialed in time"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        sims = [sandbox.sim, other.sim]
        for cb in booked:
            stored = await store.get(cb.id)
            assert stored.state == "dialed" and stored.attempts == 1, stored
            hits = [c for sim in sims for c in sim.commands() if "originate" in c and f"/{cb.to} " in c]
            assert len(hits) == 1 and f"origination_uuid={stored.result_call_id}" in hits[0]
    finally:
        await other.stop()
