"""Leads and campaigns in Redis: shapes the SDK accepts, the tenant fence, atomic field patches."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from yotel.models import Campaign, Lead

from bridge.store import keys
from bridge.store.crm import (
    MAX_CUSTOM_FIELDS,
    CampaignCreate,
    CampaignStore,
    LeadCreate,
    LeadNotFound,
    LeadStore,
    TooManyCustomFields,
    normalize_phone,
)
from bridge.store.redis import connect


async def _lead(redis: aioredis.Redis, tenant: str = "acme", **body: object) -> dict:
    campaign = await CampaignStore(redis).create(tenant, CampaignCreate(name="Renewals"))
    spec = LeadCreate.model_validate({"phone": "+14155550123", **body})
    return await LeadStore(redis).create(tenant, campaign["id"], spec)


def test_phone_accepts_e164_anywhere_and_yotel_indian_national_forms():
    assert normalize_phone("+14155550123") == "+14155550123"
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"
    assert normalize_phone("9876543210") == "+919876543210"
    assert normalize_phone("09876543210") == "+919876543210"
    assert normalize_phone("919876543210") == "+919876543210"
    for bad in ("12345", "4155550123", "+0123456789", "phone", "+1415555012345678"):
        with pytest.raises(ValueError):
            normalize_phone(bad)


async def test_campaign_and_lead_round_trip_as_the_sdk_models(redis):
    campaigns = CampaignStore(redis)
    campaign = await campaigns.create("acme", CampaignCreate(name="Renewals", voice_agent_id="va_1"))
    assert campaign["id"].startswith("cmp_") and campaign["status"] == "draft"
    assert campaign["dial_mode"] == "progressive"
    assert Campaign.model_validate(await campaigns.get(campaign["id"], "acme")).voice_agent_id == "va_1"
    assert await campaigns.get(campaign["id"], "other") is None
    assert [c["id"] for c in await campaigns.list("acme")] == [campaign["id"]]

    leads = LeadStore(redis)
    spec = LeadCreate(phone="98765 43210", name="Asha", email="asha@example.com", metadata={"plan": "gold"})
    lead = await leads.create("acme", campaign["id"], spec)
    stored = await leads.get(lead["id"], "acme")
    assert stored == lead
    parsed = Lead.model_validate(stored)
    assert parsed.phone == "+919876543210" and parsed.status == "pending" and parsed.attempts == 0
    assert stored["metadata"] == {"plan": "gold"} and stored["custom_fields"] == {}
    assert stored["status_set_by"] is None and stored["created_at"].endswith("Z")
    assert await leads.get(lead["id"], "other") is None
    assert await redis.sismember(keys.campaign_leads(campaign["id"]), lead["id"])


async def test_concurrent_patches_of_different_fields_all_survive(redis, redis_url):
    lead = await _lead(redis)
    # Separate connections, so the writes really interleave on the server.
    clients = [connect(redis_url) for _ in range(4)]
    try:
        stores = [LeadStore(c) for c in clients]
        await asyncio.gather(
            *(
                stores[i % 4].set_custom_field(lead["id"], "acme", f"field_{i}", {"n": i, "tags": []})
                for i in range(60)
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    stored = await LeadStore(redis).get(lead["id"], "acme")
    assert stored is not None
    assert stored["custom_fields"] == {f"field_{i}": {"n": i, "tags": []} for i in range(60)}


async def test_set_field_overwrites_keeps_json_types_and_fences_tenants(redis):
    lead = await _lead(redis, metadata={"big": 12345678901234567890, "empty": []})
    leads = LeadStore(redis)
    await leads.set_custom_field(lead["id"], "acme", "window", "weekday_evenings")
    await leads.set_custom_field(lead["id"], "acme", "window", None)
    await leads.set_custom_field(lead["id"], "acme", "score", 0.75)
    stored = await leads.get(lead["id"], "acme")
    assert stored["custom_fields"] == {"window": None, "score": 0.75}
    # Other fields are untouched by a patch (no JSON round trip through Lua's cjson).
    assert stored["metadata"] == {"big": 12345678901234567890, "empty": []}
    with pytest.raises(LeadNotFound):
        await leads.set_custom_field(lead["id"], "other", "x", 1)
    with pytest.raises(LeadNotFound):
        await leads.set_custom_field("lead_missing", "acme", "x", 1)
    assert (await leads.get(lead["id"], "acme"))["custom_fields"] == {"window": None, "score": 0.75}


async def test_custom_field_count_is_capped_but_existing_fields_stay_writable(redis):
    lead = await _lead(redis)
    await redis.hset(
        keys.lead_custom_fields(lead["id"]), mapping={f"f{i}": "1" for i in range(MAX_CUSTOM_FIELDS)}
    )
    leads = LeadStore(redis)
    with pytest.raises(TooManyCustomFields):
        await leads.set_custom_field(lead["id"], "acme", "one_more", 1)
    await leads.set_custom_field(lead["id"], "acme", "f0", 2)
    assert (await leads.get(lead["id"], "acme"))["custom_fields"]["f0"] == 2


async def test_status_and_attempts(redis):
    lead = await _lead(redis)
    leads = LeadStore(redis)
    assert await leads.set_status(lead["id"], "acme", "connected", set_by="ai") == "pending"
    assert await leads.set_status(lead["id"], "acme", "completed", set_by="ai") == "connected"
    with pytest.raises(LeadNotFound):
        await leads.set_status(lead["id"], "other", "failed", set_by="ai")
    with pytest.raises(ValueError):
        await leads.set_status(lead["id"], "acme", "qualified", set_by="ai")
    assert await leads.record_attempt(lead["id"], "acme") == 1
    assert await leads.record_attempt(lead["id"], "acme") == 2
    assert await leads.record_attempt(lead["id"], "other") is None
    stored = await leads.get(lead["id"], "acme")
    assert stored["status"] == "completed" and stored["status_set_by"] == "ai"
    assert stored["attempts"] == 2 and stored["last_attempted_at"].endswith("Z")
    Lead.model_validate(stored)


async def test_put_writes_a_whole_lead(redis):
    leads = LeadStore(redis)
    await leads.put(
        {
            "id": "lead_x",
            "tenant_id": "acme",
            "campaign_id": "cmp_1",
            "phone": "+14155550100",
            "metadata": {"tier": "vip"},
            "custom_fields": {"a": 1},
        }
    )
    stored = await leads.get("lead_x", "acme")
    assert stored["metadata"] == {"tier": "vip"} and stored["custom_fields"] == {"a": 1}
    assert stored["status"] == "pending"
    await leads.put({"id": "lead_x", "tenant_id": "acme", "phone": "+14155550100"})
    assert (await leads.get("lead_x", "acme"))["custom_fields"] == {}


def test_campaign_body_checks():
    with pytest.raises(ValueError):
        CampaignCreate(name="x", timezone="Mars/Olympus")
    with pytest.raises(ValueError):
        CampaignCreate(name="x", predictive_min_dial_ratio=2.0, predictive_max_dial_ratio=1.5)
    with pytest.raises(ValueError):
        CampaignCreate(name="x", predictive_target_abandon=0.05)
    assert CampaignCreate(name="x", caller_id="+14155550100").caller_id == "+14155550100"
