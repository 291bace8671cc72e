"""Sandbox-only routes: place and end simulated calls on the built-in switch simulator.

A sandbox call enters through the same door a real one does: the simulator parks a channel
with the dialplan's variables and the bridge picks it up from CHANNEL_PARK over ESL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.api.auth import Principal, require_key
from bridge.api.errors import ApiError, read_json_object, validation_error
from bridge.calls.manager import VAR_CAMPAIGN, VAR_LEAD, VAR_TENANT, VAR_VOICE_AGENT
from bridge.calls.originate import require_references
from bridge.calls.sessions import Session
from bridge.ids import CampaignId, LeadId, VoiceAgentId
from bridge.services import Services, services_of

if TYPE_CHECKING:
    from bridge.sim.server import SwitchSimulator

SCOPE = "sandbox:admin"
NUMBER = r"^\+?[0-9*#]{1,32}$"
SETTLE_S = 5.0


class SandboxCall(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", pattern=NUMBER)
    to: str = Field(pattern=NUMBER)
    voice_agent_id: VoiceAgentId | None = None
    lead_id: LeadId | None = None
    campaign_id: CampaignId | None = None


def _sim(svc: Services) -> SwitchSimulator:
    if svc.sim is None:
        raise ApiError(404, "not_sandbox", "this bridge is not running in sandbox mode")
    return svc.sim


async def _wait_for(svc: Services, call_id: str, settled: Callable[[Session], bool]) -> Session | None:
    deadline = time.monotonic() + SETTLE_S
    while True:
        session = await svc.sessions.get(call_id)
        if session is not None and settled(session):
            return session
        if time.monotonic() > deadline:
            return session
        await asyncio.sleep(0.01)


async def place_call(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    svc = services_of(request)
    sim = _sim(svc)
    body = await read_json_object(request)
    try:
        spec = SandboxCall.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    await require_references(
        svc,
        principal.tenant_id,
        voice_agent_id=spec.voice_agent_id,
        campaign_id=spec.campaign_id,
        lead_id=spec.lead_id,
    )
    variables = {VAR_TENANT: principal.tenant_id}
    for var, value in (
        (VAR_VOICE_AGENT, spec.voice_agent_id),
        (VAR_LEAD, spec.lead_id),
        (VAR_CAMPAIGN, spec.campaign_id),
    ):
        if value:
            variables[var] = value
    call_id = await sim.place_inbound_call(spec.from_, spec.to, variables)
    session = await _wait_for(svc, call_id, lambda s: s.state != "ringing" or s.terminal)
    if session is None:
        raise ApiError(504, "call_not_picked_up", "the bridge did not pick the simulated call up in time")
    return web.json_response(
        {"call_id": call_id, "state": session.state, "outcome": session.outcome, "reason": session.reason},
        status=201,
    )


async def _own_call(request: web.Request, principal: Principal) -> str:
    svc = services_of(request)
    call_id = request.match_info["call_id"]
    session = await svc.sessions.get(call_id)
    if session is not None and session.tenant_id != principal.tenant_id:
        raise ApiError(404, "call_not_found", "no such sandbox call")
    if _sim(svc).channel(call_id) is None and session is None:
        raise ApiError(404, "call_not_found", "no such sandbox call")
    return call_id


async def end_call(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    svc = services_of(request)
    call_id = await _own_call(request, principal)
    sim = _sim(svc)
    channel = sim.channel(call_id)
    if channel is not None and sim.snapshot(call_id).get("state") not in ("CS_HANGUP", "CS_DESTROY"):
        await sim.hangup(call_id, request.query.get("cause", "NORMAL_CLEARING"))
    session = await _wait_for(svc, call_id, lambda s: s.terminal and bool(s.extra.get("call_ended_at")))
    return web.json_response(
        {
            "call_id": call_id,
            "state": session.state if session else "ended",
            "outcome": session.outcome if session else None,
        }
    )


async def show_call(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    svc = services_of(request)
    call_id = await _own_call(request, principal)
    snapshot = _sim(svc).snapshot(call_id)
    if snapshot is None:
        raise ApiError(404, "call_not_found", "the simulated channel is gone")
    return web.json_response(snapshot)


def setup(app: web.Application) -> None:
    app.router.add_post("/sandbox/calls", place_call)
    app.router.add_get("/sandbox/calls/{call_id}", show_call)
    app.router.add_delete("/sandbox/calls/{call_id}", end_call)
