"""campaigns.update, campaigns.delete and leads.bulk through the official SDK (issue 10), with the
tenant fence, the whole-campaign validation after a PATCH, and bulk's per-row results."""

from __future__ import annotations

import asyncio

import pytest
from yotel.errors import APIError, ConflictError, NotFoundError, PermissionError
from yotel.models import BulkLeadsResponse, Campaign, Lead

from bridge.calls.voice_agents import VoiceAgentCreate
from bridge.store import keys
from bridge.store.crm import CampaignStore
from tests.conftest import in_thread
from tests.test_leads_api import Api, api  # noqa: F401  (the fixture)


async def test_campaign_update_changes_only_what_is_sent(api: Api):  # noqa: F811
    client = await api.sdk()
    agent = await api.svc.voice_agents.create(
        "acme", VoiceAgentCreate(name="a", ws_url="ws://127.0.0.1:1/ws")
    )
    campaign = await in_thread(client.campaigns.create, name="Renewals", description="old", max_attempts=5)
    updated = await in_thread(
        client.campaigns.update,
        campaign.id,
        name="Renewals 2",
        voice_agent_id=agent.id,
        caller_id="9876543210",
    )
    assert isinstance(updated, Campaign)
    assert updated.name == "Renewals 2" and updated.voice_agent_id == agent.id
    assert updated.caller_id == "+919876543210"  # normalized like on create
    assert updated.description == "old" and updated.max_attempts == 5 and updated.status == "draft"
    assert updated.created_at == campaign.created_at
    assert await in_thread(client.campaigns.get, campaign.id) == updated
    # null clears a nullable field
    cleared = await in_thread(client.campaigns.update, campaign.id, description=None, voice_agent_id=None)
    assert cleared.description is None and cleared.voice_agent_id is None and cleared.name == "Renewals 2"
    # an empty patch changes nothing
    assert await in_thread(client.campaigns.update, campaign.id) == cleared


async def test_campaign_update_validates_the_patched_campaign_whole(api: Api):  # noqa: F811
    client = await api.sdk()
    campaign = await in_thread(client.campaigns.create, name="c", predictive_max_dial_ratio=2.0)
    for bad in (
        {"predictive_min_dial_ratio": 2.5},  # above the stored max: only the whole campaign shows it
        {"name": None},
        {"max_attempts": None},
        {"status": "running"},  # not a field a PATCH may set: there is no dialer
        {"timezone": "Mars/Olympus"},
        {"dial_mode": "robocall"},
    ):
        with pytest.raises(APIError) as err:
            await in_thread(client.campaigns.update, campaign.id, **bad)
        assert err.value.status_code == 400, bad
        assert err.value.detail["code"] == "validation_error"
    assert await in_thread(client.campaigns.get, campaign.id) == campaign


async def test_campaign_update_fences_the_agent_and_the_tenant(api: Api):  # noqa: F811
    client = await api.sdk()
    campaign = await in_thread(client.campaigns.create, name="c")
    theirs = await api.svc.voice_agents.create(
        "globex", VoiceAgentCreate(name="x", ws_url="ws://127.0.0.1:1/ws")
    )
    with pytest.raises(ConflictError) as conflict:
        await in_thread(client.campaigns.update, campaign.id, voice_agent_id=theirs.id)
    assert conflict.value.detail["code"] == "voice_agent_tenant_mismatch"
    with pytest.raises(NotFoundError):
        await in_thread(client.campaigns.update, campaign.id, voice_agent_id="va_unknown")
    with pytest.raises(APIError) as bad:
        await in_thread(client.campaigns.update, campaign.id, voice_agent_id="not an id")
    assert bad.value.status_code == 400

    other = await api.sdk("globex")
    with pytest.raises(NotFoundError):
        await in_thread(other.campaigns.update, campaign.id, name="mine now")
    with pytest.raises(NotFoundError):
        await in_thread(other.campaigns.delete, campaign.id)
    with pytest.raises(NotFoundError):
        await in_thread(other.leads.bulk, campaign_id=campaign.id, leads=[{"phone": "+14155550100"}])
    assert (await in_thread(client.campaigns.get, campaign.id)).name == "c"

    reader = await api.sdk(scopes=("campaigns:read", "leads:read"))
    with pytest.raises(PermissionError):
        await in_thread(reader.campaigns.update, campaign.id, name="x")
    with pytest.raises(PermissionError):
        await in_thread(reader.campaigns.delete, campaign.id)
    with pytest.raises(PermissionError):
        await in_thread(reader.leads.bulk, campaign_id=campaign.id, leads=[{"phone": "+14155550100"}])


async def test_concurrent_patches_keep_each_others_fields(api: Api):  # noqa: F811
    store = CampaignStore(api.svc.redis)
    client = await api.sdk()
    campaign = await in_thread(client.campaigns.create, name="c")
    await asyncio.gather(
        store.update(campaign.id, "acme", {"description": "from one"}),
        store.update(campaign.id, "acme", {"max_attempts": 7}),
        store.update(campaign.id, "acme", {"caller_id": "+14155550100"}),
        store.update(campaign.id, "acme", {"retry_delay_mins": 5}),
    )
    got = await in_thread(client.campaigns.get, campaign.id)
    assert (got.description, got.max_attempts, got.caller_id, got.retry_delay_mins) == (
        "from one",
        7,
        "+14155550100",
        5,
    )


async def test_campaign_delete_removes_it_and_its_leads(api: Api):  # noqa: F811
    client = await api.sdk()
    campaign = await in_thread(client.campaigns.create, name="c")
    kept = await in_thread(client.campaigns.create, name="kept")
    lead = await in_thread(client.leads.create, campaign_id=campaign.id, phone="+14155550100")
    other_lead = await in_thread(client.leads.create, campaign_id=kept.id, phone="+14155550100")
    assert await in_thread(client.campaigns.delete, campaign.id) is None
    with pytest.raises(NotFoundError):
        await in_thread(client.campaigns.get, campaign.id)
    with pytest.raises(NotFoundError):
        await in_thread(client._request, "GET", f"/api/v1/leads/{lead.id}")
    with pytest.raises(NotFoundError):
        await in_thread(client.campaigns.delete, campaign.id)
    with pytest.raises(NotFoundError):
        await in_thread(client.campaigns.update, campaign.id, name="back")
    assert [c.id for c in await in_thread(client.campaigns.list)] == [kept.id]
    assert (await in_thread(client._request, "GET", f"/api/v1/leads/{other_lead.id}"))["id"] == other_lead.id
    redis = api.svc.redis
    for key in (
        keys.campaign(campaign.id),
        keys.campaign_leads(campaign.id),
        keys.campaign_phones(campaign.id),
        keys.lead(lead.id),
        keys.lead_custom_fields(lead.id),
    ):
        assert not await redis.exists(key), key


async def test_bulk_adds_valid_rows_and_reports_each_rejected_one(api: Api):  # noqa: F811
    client = await api.sdk()
    campaign = await in_thread(client.campaigns.create, name="c")
    existing = await in_thread(client.leads.create, campaign_id=campaign.id, phone="+14155550100")
    answer = await in_thread(
        client.leads.bulk,
        campaign_id=campaign.id,
        leads=[
            {"phone": "+14155550101", "name": "Ada", "metadata": {"plan": "gold"}},
            {"phone": "12345"},  # invalid
            {"phone": "9876543210", "email": "not-an-email"},  # invalid email
            {"phone": "+1 415 555 0101"},  # the first row's phone again
            {"phone": "+14155550100"},  # already in the campaign
            {"phone": "09876543210", "email": "b@example.com"},
        ],
    )
    assert isinstance(answer, BulkLeadsResponse)
    assert (answer.total, answer.valid, answer.invalid, answer.duplicates) == (6, 2, 2, 2)
    rows = answer.results
    assert [r["status"] for r in rows] == ["added", "invalid", "invalid", "duplicate", "duplicate", "added"]
    assert [r["index"] for r in rows] == list(range(6))
    assert rows[1]["phone"] == "12345" and rows[1]["reason"].startswith("phone:") and rows[1]["id"] is None
    assert rows[2]["reason"].startswith("email:")
    assert rows[3]["reason"] == "duplicate_in_request" and rows[3]["duplicate_of"] == rows[0]["id"]
    assert rows[4]["reason"] == "already_in_campaign" and rows[4]["duplicate_of"] == existing.id
    assert rows[3]["id"] is None and rows[4]["id"] is None
    assert rows[5]["phone"] == "+919876543210" and rows[0]["reason"] is None
    for row in (rows[0], rows[5]):
        raw = await in_thread(client._request, "GET", f"/api/v1/leads/{row['id']}")
        lead = Lead.model_validate(raw)
        assert lead.campaign_id == campaign.id and lead.phone == row["phone"] and lead.status == "pending"
    ada = await in_thread(client._request, "GET", f"/api/v1/leads/{rows[0]['id']}")
    assert ada["name"] == "Ada" and ada["metadata"] == {"plan": "gold"} and ada["tenant_id"] == "acme"
    members = await api.svc.redis.smembers(keys.campaign_leads(campaign.id))
    assert members == {existing.id, rows[0]["id"], rows[5]["id"]}


async def test_bulk_envelope_is_all_or_nothing(api: Api):  # noqa: F811
    key = await api.key()
    campaign = (await api.call("POST", "/api/v1/campaigns", key, {"name": "c"}))[1]
    path = f"/api/v1/campaigns/{campaign['id']}/leads:bulk"
    many = [{"phone": f"+1415555{i:04d}"} for i in range(501)]
    for body in (
        {},
        {"leads": []},
        {"leads": many},
        {"leads": "x"},
        {"leads": [{"phone": "+14155550100"}], "x": 1},
    ):
        status, err = await api.call("POST", path, key, body)
        assert status == 400 and err["detail"]["code"] == "validation_error", body
    assert await api.svc.redis.scard(keys.campaign_leads(campaign["id"])) == 0
    status, err = await api.call("POST", "/api/v1/campaigns/cmp_missing/leads:bulk", key, {"leads": many[:1]})
    assert status == 404 and err["detail"]["code"] == "campaign_not_found"
    # A row that is not an object is one invalid row, not a failed request.
    status, answer = await api.call("POST", path, key, {"leads": ["+14155550100", {"phone": "+14155550100"}]})
    assert status == 200 and [r["status"] for r in answer["results"]] == ["invalid", "added"]
    assert answer["results"][0]["phone"] is None


async def test_bulk_takes_500_and_two_batches_at_once_add_a_phone_once(api: Api):  # noqa: F811
    client = await api.sdk()
    campaign = await in_thread(client.campaigns.create, name="c")
    leads = [{"phone": f"+1415555{i:04d}", "name": f"row {i}"} for i in range(500)]
    first, second = await asyncio.gather(
        in_thread(client.leads.bulk, campaign_id=campaign.id, leads=leads),
        in_thread(client.leads.bulk, campaign_id=campaign.id, leads=leads),
    )
    assert first.total == second.total == 500
    assert first.valid + second.valid == 500 and first.duplicates + second.duplicates == 500
    assert await api.svc.redis.scard(keys.campaign_leads(campaign.id)) == 500
