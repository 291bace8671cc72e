"""`/api/v1/calls`: place an outbound AI call."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.api.auth import require_key
from bridge.api.errors import ApiError, read_json_object, validation_error
from bridge.calls.originate import originate_ai_call
from bridge.ids import CampaignId, LeadId, VoiceAgentId
from bridge.services import services_of

E164 = r"^\+[1-9][0-9]{1,14}$"


class CallCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(pattern=E164)
    from_: str = Field(alias="from", pattern=E164)
    voice_agent_id: VoiceAgentId | None = None
    campaign_id: CampaignId | None = None
    lead_id: LeadId | None = None


async def create_call(request: web.Request) -> web.Response:
    principal = await require_key(request, "calls:write")
    body = await read_json_object(request)
    try:
        spec = CallCreate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    call_id = await originate_ai_call(
        services_of(request),
        tenant_id=principal.tenant_id,
        to=spec.to,
        from_=spec.from_,
        voice_agent_id=spec.voice_agent_id,
        campaign_id=spec.campaign_id,
        lead_id=spec.lead_id,
    )
    return web.json_response({"call_id": call_id}, status=201)


async def get_call(request: web.Request) -> web.Response:
    principal = await require_key(request, "calls:read")
    svc = services_of(request)
    session = await svc.sessions.get(request.match_info["call_id"])
    if session is None or session.tenant_id != principal.tenant_id:
        raise ApiError(404, "call_not_found", "no such call in this tenant")
    return web.json_response(
        {
            "id": session.call_id,
            "fs_uuid": session.call_id,
            "direction": session.direction,
            "from": session.from_,
            "to": session.to,
            "campaign_id": session.campaign_id,
            "lead_id": session.lead_id,
            "status": "completed" if session.extra.get("call_ended_at") else session.state,
            "hangup_cause": session.hangup_cause,
            "disposition": session.disposition,
            "notes": session.notes,
            "has_recording": bool(session.recording_path),
            "recording_url": svc.calls.recording_url(session),
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/calls", create_call)
    app.router.add_get("/api/v1/calls/{call_id}", get_call)
