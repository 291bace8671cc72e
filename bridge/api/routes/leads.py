"""`/api/v1/campaigns` and `/api/v1/leads`: the slice of the SDK's campaigns and leads resources
that AI calls need. A campaign pins a voice agent (flow > campaign > tenant default); a lead is
what set_lead_field / set_lead_status / schedule_callback write to."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from bridge.api.auth import Principal, require_key
from bridge.api.errors import ApiError, read_json_object, validation_error
from bridge.services import services_of
from bridge.store.crm import CampaignCreate, CampaignStore, LeadCreate, LeadStore


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


async def create_campaign(request: web.Request) -> web.Response:
    principal = await require_key(request, "campaigns:write")
    body = await read_json_object(request)
    try:
        spec = CampaignCreate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    if spec.voice_agent_id:
        agent = await services_of(request).voice_agents.get(spec.voice_agent_id)
        if agent is None:
            raise ApiError(404, "voice_agent_not_found", "no such voice agent")
        if agent.tenant_id != principal.tenant_id:
            # 409, not 404: the SDK documents the campaign tenant fence as a conflict.
            raise ApiError(409, "voice_agent_tenant_mismatch", "the voice agent belongs to another tenant")
        if agent.status == "archived":
            raise ApiError(409, "voice_agent_archived", "an archived voice agent cannot be pinned")
    doc = await _campaigns(request).create(principal.tenant_id, spec)
    return web.json_response(doc, status=201)


async def list_campaigns(request: web.Request) -> web.Response:
    principal = await _reader(request, "campaigns")
    # A bare list: the SDK's campaigns.list() validates each element of the body.
    return web.json_response(await _campaigns(request).list(principal.tenant_id))


async def get_campaign(request: web.Request) -> web.Response:
    principal = await _reader(request, "campaigns")
    doc = await _campaigns(request).get(request.match_info["campaign_id"], principal.tenant_id)
    if doc is None:
        raise ApiError(404, "campaign_not_found", "no such campaign in this tenant")
    return web.json_response(doc)


async def create_lead(request: web.Request) -> web.Response:
    principal = await require_key(request, "leads:write")
    campaign_id = request.match_info["campaign_id"]
    campaign = await _campaigns(request).get(campaign_id, principal.tenant_id)
    if campaign is None:
        raise ApiError(404, "campaign_not_found", "no such campaign in this tenant")
    body = await read_json_object(request)
    try:
        spec = LeadCreate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    lead = await _leads(request).create(principal.tenant_id, campaign_id, spec)
    return web.json_response(lead, status=201)


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
    r.add_post("/api/v1/campaigns/{campaign_id}/leads", create_lead)
    r.add_get("/api/v1/leads/{lead_id}", get_lead)
