"""Campaigns, leads and callbacks over HTTP, driven by the official SDK where it has a method."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import yotel
from aiohttp.test_utils import TestClient, TestServer
from yotel.errors import APIError, ConflictError, NotFoundError, PermissionError
from yotel.models import Campaign, Lead

from bridge.api.app import create_app
from bridge.calls.sessions import SessionStore
from bridge.calls.voice_agents import VoiceAgentCreate, VoiceAgentStore
from bridge.config import Settings
from bridge.services import Services
from bridge.store.callbacks import CallbackStore
from bridge.store.tenants import ALL_SCOPES
from tests.conftest import in_thread


class Api:
    def __init__(self, client: TestClient, svc: Services) -> None:
        self.client = client
        self.svc = svc
        self.base_url = str(client.make_url("")).rstrip("/")

    async def key(self, tenant: str = "acme", scopes: tuple[str, ...] = ALL_SCOPES) -> str:
        clear, _ = await self.svc.tenants.create_key(tenant, list(scopes))
        return clear

    async def sdk(self, tenant: str = "acme", scopes: tuple[str, ...] = ALL_SCOPES) -> yotel.Client:
        return yotel.Client(api_key=await self.key(tenant, scopes), base_url=self.base_url, max_retries=1)

    async def call(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
        return resp.status, await resp.json()


@pytest.fixture
async def api(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[Api]:
    svc = Services(settings, redis)
    svc.sessions = SessionStore(redis)
    svc.voice_agents = VoiceAgentStore(redis)
    client = TestClient(TestServer(create_app(svc)))
    await client.start_server()
    try:
        yield Api(client, svc)
    finally:
        await client.close()


async def test_campaign_create_get_list_with_the_sdk(api: Api):
    client = await api.sdk()
    agent = await api.svc.voice_agents.create(
        "acme", VoiceAgentCreate(name="a", ws_url="ws://127.0.0.1:1/ws")
    )
    campaign = await in_thread(client.campaigns.create, name="Renewals", voice_agent_id=agent.id)
    assert isinstance(campaign, Campaign)
    assert campaign.status == "draft" and campaign.dial_mode == "progressive"
    assert campaign.voice_agent_id == agent.id and campaign.tenant_id == "acme"
    fetched = await in_thread(client.campaigns.get, campaign.id)
    assert fetched == campaign
    assert [c.id for c in await in_thread(client.campaigns.list)] == [campaign.id]
    plain = await in_thread(client.campaigns.create, name="No agent", dial_mode="preview")
    assert plain.voice_agent_id is None and plain.dial_mode == "preview"

    other = await api.sdk("globex")
    with pytest.raises(NotFoundError):
        await in_thread(other.campaigns.get, campaign.id)


async def test_campaign_voice_agent_is_tenant_fenced(api: Api):
    client = await api.sdk()
    theirs = await api.svc.voice_agents.create(
        "globex", VoiceAgentCreate(name="x", ws_url="ws://127.0.0.1:1/ws")
    )
    with pytest.raises(ConflictError) as conflict:
        await in_thread(client.campaigns.create, name="c", voice_agent_id=theirs.id)
    assert conflict.value.detail["code"] == "voice_agent_tenant_mismatch"
    with pytest.raises(NotFoundError):
        await in_thread(client.campaigns.create, name="c", voice_agent_id="va_unknown")
    status, err = await api.call(
        "POST", "/api/v1/campaigns", await api.key(), {"name": "c", "dial_mode": "x"}
    )
    assert status == 400 and err["detail"]["code"] == "validation_error"


async def test_lead_create_and_get_validate_as_the_sdk_lead(api: Api):
    client = await api.sdk()
    campaign = await in_thread(client.campaigns.create, name="Renewals")
    lead = await in_thread(
        client.leads.create,
        campaign_id=campaign.id,
        phone="+44 20 7946 0958",
        name="Ada",
        email="ada@example.com",
        metadata={"plan": "gold", "renewal_date": "2026-06-01"},
    )
    assert isinstance(lead, Lead)
    assert lead.phone == "+442079460958" and lead.status == "pending" and lead.campaign_id == campaign.id
    assert lead.metadata == {"plan": "gold", "renewal_date": "2026-06-01"}
    raw = await in_thread(client._request, "GET", f"/api/v1/leads/{lead.id}")
    assert Lead.model_validate(raw) == lead
    assert raw["custom_fields"] == {} and raw["status_set_by"] is None and raw["tenant_id"] == "acme"
    indian = await in_thread(client.leads.create, campaign_id=campaign.id, phone="09876543210")
    assert indian.phone == "+919876543210"

    with pytest.raises(APIError) as bad:
        await in_thread(client.leads.create, campaign_id=campaign.id, phone="12345")
    assert bad.value.status_code == 400 and "phone" in bad.value.detail["message"]
    with pytest.raises(NotFoundError):
        await in_thread(client.leads.create, campaign_id="cmp_missing", phone="+14155550100")
    other = await api.sdk("globex")
    with pytest.raises(NotFoundError):
        await in_thread(other._request, "GET", f"/api/v1/leads/{lead.id}")
    with pytest.raises(NotFoundError):
        await in_thread(other.leads.create, campaign_id=campaign.id, phone="+14155550100")


async def test_lead_and_campaign_scopes(api: Api):
    reader = await api.sdk(scopes=("leads:read", "campaigns:read"))
    writer = await api.sdk()
    campaign = await in_thread(writer.campaigns.create, name="c")
    with pytest.raises(PermissionError):
        await in_thread(reader.campaigns.create, name="c")
    with pytest.raises(PermissionError):
        await in_thread(reader.leads.create, campaign_id=campaign.id, phone="+14155550100")
    lead = await in_thread(writer.leads.create, campaign_id=campaign.id, phone="+14155550100")
    assert (await in_thread(reader._request, "GET", f"/api/v1/leads/{lead.id}"))["id"] == lead.id
    assert (await in_thread(reader.campaigns.get, campaign.id)).id == campaign.id


async def test_callbacks_list_get_and_cancel(api: Api):
    store = CallbackStore(api.svc.redis)
    at = datetime.now(UTC) + timedelta(hours=1)
    common = dict(tenant_id="acme", to="+14155550100", from_="+14155550000", scheduled_at=at)
    first, _ = await store.create(call_id="call-a", **common)
    second, _ = await store.create(call_id="call-b", **common)
    theirs, _ = await store.create(call_id="call-c", **{**common, "tenant_id": "globex"})
    key = await api.key()
    reader = await api.key(scopes=("callbacks:read",))

    status, listed = await api.call("GET", "/api/v1/callbacks", reader)
    assert status == 200 and [c["id"] for c in listed["items"]] == [first.id, second.id]
    assert listed["items"][0]["state"] == "scheduled" and listed["items"][0]["to"] == "+14155550100"
    status, listed = await api.call("GET", "/api/v1/callbacks?call_id=call-b", reader)
    assert [c["id"] for c in listed["items"]] == [second.id]
    status, one = await api.call("GET", f"/api/v1/callbacks/{first.id}", reader)
    assert status == 200 and one == first.public()
    status, err = await api.call("GET", f"/api/v1/callbacks/{theirs.id}", reader)
    assert status == 404 and err["detail"]["code"] == "callback_not_found"
    status, err = await api.call("GET", "/api/v1/callbacks?state=pending", reader)
    assert status == 400 and err["detail"]["code"] == "invalid_state"

    status, err = await api.call("DELETE", f"/api/v1/callbacks/{first.id}", reader)
    assert status == 403
    status, cancelled = await api.call("DELETE", f"/api/v1/callbacks/{first.id}", key)
    assert status == 200 and cancelled["state"] == "cancelled"
    status, listed = await api.call("GET", "/api/v1/callbacks?state=cancelled", key)
    assert [c["id"] for c in listed["items"]] == [first.id]

    await store.claim(second.id, "someone", int(time.time() * 1000) + 60_000)
    status, err = await api.call("DELETE", f"/api/v1/callbacks/{second.id}", key)
    assert status == 409 and err["detail"]["code"] == "callback_not_cancellable"
    assert err["detail"]["state"] == "dialing"
    status, err = await api.call("DELETE", f"/api/v1/callbacks/{theirs.id}", key)
    assert status == 404
