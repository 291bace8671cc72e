"""`/api/v1/campaigns` and `/api/v1/leads`: the SDK's campaigns resource (create, list, get,
update, delete) and leads resource (create, bulk), plus GET of a lead. A campaign pins a voice
agent (flow > campaign > tenant default); a lead is what set_lead_field / set_lead_status /
schedule_callback write to (docs/leads-and-callbacks.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.api.auth import Principal, require_key
from bridge.api.errors import ApiError, read_json_object, validation_error
from bridge.services import services_of
from bridge.store.crm import (
    MAX_BULK_LEADS,
    CampaignCreate,
    CampaignNotFound,
    CampaignStore,
    CampaignUpdate,
    LeadCreate,
    LeadStore,
)


class LeadBulkCreate(BaseModel):
    """The body of `POST /api/v1/campaigns/{id}/leads:bulk`: 1 to 500 leads, each a LeadCreate.
    The envelope is checked whole (400); each lead is checked on its own (its row says why)."""

    model_config = ConfigDict(extra="forbid")

    leads: list[LeadCreate] = Field(min_length=1, max_length=MAX_BULK_LEADS)


class _BulkEnvelope(BaseModel):
    """What the route validates up front: the rows themselves are LeadCreate'd one by one."""

    model_config = ConfigDict(extra="forbid")

    leads: list[Any] = Field(min_length=1, max_length=MAX_BULK_LEADS)


async def _reader(request: web.Request, resource: str) -> Principal:
    """`<resource>:read`; a key that may write may also read, as for voice agents."""
    try:
        return await require_key(request, f"{resource}:read")
    except ApiError:
        return await require_key(request, f"{resource}:write")


def _campaigns(request: web.Request) -> CampaignStore:
    svc = services_of(request)
    return svc.calls.campaigns if svc.calls is not None else CampaignStore(svc.redis)


def _leads(request: web.Request) -> LeadStore:
    svc = services_of(request)
    return svc.calls.leads if svc.calls is not None else LeadStore(svc.redis)


async def _check_agent(request: web.Request, principal: Principal, voice_agent_id: str | None) -> None:
    """The voice agent a campaign pins: the tenant's own, and not archived."""
    if not voice_agent_id:
        return
    agent = await services_of(request).voice_agents.get(voice_agent_id)
    if agent is None:
        raise ApiError(404, "voice_agent_not_found", "no such voice agent")
    if agent.tenant_id != principal.tenant_id:
        # 409, not 404: the SDK documents the campaign tenant fence as a conflict.
        raise ApiError(409, "voice_agent_tenant_mismatch", "the voice agent belongs to another tenant")
    if agent.status == "archived":
        raise ApiError(409, "voice_agent_archived", "an archived voice agent cannot be pinned")


def _not_found() -> ApiError:
    return ApiError(404, "campaign_not_found", "no such campaign in this tenant")


async def create_campaign(request: web.Request) -> web.Response:
    principal = await require_key(request, "campaigns:write")
    body = await read_json_object(request)
    try:
        spec = CampaignCreate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    await _check_agent(request, principal, spec.voice_agent_id)
    doc = await _campaigns(request).create(principal.tenant_id, spec)
    return web.json_response(doc, status=201)


async def update_campaign(request: web.Request) -> web.Response:
    """PATCH: only the fields sent change; the patched campaign is validated whole."""
    principal = await require_key(request, "campaigns:write")
    campaign_id = request.match_info["campaign_id"]
    store = _campaigns(request)
    if await store.get(campaign_id, principal.tenant_id) is None:
        raise _not_found()
    body = await read_json_object(request)
    try:
        patch = CampaignUpdate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    changes = patch.model_dump(include=patch.model_fields_set)
    if "voice_agent_id" in changes:
        await _check_agent(request, principal, changes["voice_agent_id"])
    try:
        doc = await store.update(campaign_id, principal.tenant_id, changes)
    except CampaignNotFound:
        raise _not_found() from None
    except ValidationError as exc:
        raise validation_error(exc) from exc
    return web.json_response(doc)


async def delete_campaign(request: web.Request) -> web.Response:
    """DELETE: the campaign and its leads; 204. Campaigns never run here (no dialer), so Yotel's
    409 for a running campaign cannot happen."""
    principal = await require_key(request, "campaigns:write")
    if not await _campaigns(request).delete(request.match_info["campaign_id"], principal.tenant_id):
        raise _not_found()
    return web.Response(status=204)


async def list_campaigns(request: web.Request) -> web.Response:
    principal = await _reader(request, "campaigns")
    # A bare list: the SDK's campaigns.list() validates each element of the body.
    return web.json_response(await _campaigns(request).list(principal.tenant_id))


async def get_campaign(request: web.Request) -> web.Response:
    principal = await _reader(request, "campaigns")
    doc = await _campaigns(request).get(request.match_info["campaign_id"], principal.tenant_id)
    if doc is None:
        raise _not_found()
    return web.json_response(doc)


async def create_lead(request: web.Request) -> web.Response:
    principal = await require_key(request, "leads:write")
    campaign_id = request.match_info["campaign_id"]
    campaign = await _campaigns(request).get(campaign_id, principal.tenant_id)
    if campaign is None:
        raise _not_found()
    body = await read_json_object(request)
    try:
        spec = LeadCreate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    lead = await _leads(request).create(principal.tenant_id, campaign_id, spec)
    return web.json_response(lead, status=201)


async def bulk_create_leads(request: web.Request) -> web.Response:
    """Up to 500 leads: 200 with the SDK's BulkLeadsResponse. A bad envelope (no `leads`, none,
    more than 500, other keys) is a 400 for the whole request; a bad lead is rejected on its own
    row (`invalid`, with the reason), a phone the campaign already has is `duplicate`, and the rest
    are added, in one atomic write."""
    principal = await require_key(request, "leads:write")
    campaign_id = request.match_info["campaign_id"]
    if await _campaigns(request).get(campaign_id, principal.tenant_id) is None:
        raise _not_found()
    body = await read_json_object(request)
    try:
        envelope = _BulkEnvelope.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    answer = await _leads(request).bulk_create(principal.tenant_id, campaign_id, envelope.leads)
    if answer is None:  # deleted while the rows were being checked
        raise _not_found()
    return web.json_response(answer)


async def get_lead(request: web.Request) -> web.Response:
    principal = await _reader(request, "leads")
    lead = await _leads(request).get(request.match_info["lead_id"], principal.tenant_id)
    if lead is None:
        raise ApiError(404, "lead_not_found", "no such lead in this tenant")
    return web.json_response(lead)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/campaigns", create_campaign)
    r.add_get("/api/v1/campaigns", list_campaigns)
    r.add_get("/api/v1/campaigns/{campaign_id}", get_campaign)
    r.add_patch("/api/v1/campaigns/{campaign_id}", update_campaign)
    r.add_delete("/api/v1/campaigns/{campaign_id}", delete_campaign)
    r.add_post("/api/v1/campaigns/{campaign_id}/leads", create_lead)
    r.add_post("/api/v1/campaigns/{campaign_id}/leads:bulk", bulk_create_leads)
    r.add_get("/api/v1/leads/{lead_id}", get_lead)
