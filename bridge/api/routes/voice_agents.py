"""`/api/v1/voice-agents`: the SDK's `voice_agents` resource."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from bridge.api.auth import Principal, require_key
from bridge.api.errors import ApiError, read_json_object, validation_error
from bridge.calls.voice_agents import VoiceAgent, VoiceAgentCreate, VoiceAgentUpdate, agent_public
from bridge.services import services_of

READ = "voice_agents:read"
WRITE = "voice_agents:write"
ADMIN = "voice_agents:admin"


async def _reader(request: web.Request) -> Principal:
    """Reading needs voice_agents:read; a key that may write may also read."""
    try:
        return await require_key(request, READ)
    except ApiError:
        return await require_key(request, WRITE)


async def _agent(request: web.Request, principal: Principal) -> VoiceAgent:
    agent = await services_of(request).voice_agents.get(request.match_info["va_id"], principal.tenant_id)
    if agent is None:
        raise ApiError(404, "voice_agent_not_found", "no such voice agent in this tenant")
    return agent


async def create(request: web.Request) -> web.Response:
    principal = await require_key(request, WRITE)
    body = await read_json_object(request)
    try:
        spec = VoiceAgentCreate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    agent = await services_of(request).voice_agents.create(principal.tenant_id, spec)
    return web.json_response(agent_public(agent), status=201)


async def list_agents(request: web.Request) -> web.Response:
    principal = await _reader(request)
    status = request.query.get("status")
    if status is not None and status not in ("active", "paused", "archived"):
        raise ApiError(400, "invalid_status", "status must be active, paused or archived")
    agents = await services_of(request).voice_agents.list(principal.tenant_id, status)
    return web.json_response({"items": [agent_public(a) for a in agents]})


async def get(request: web.Request) -> web.Response:
    principal = await _reader(request)
    return web.json_response(agent_public(await _agent(request, principal)))


async def update(request: web.Request) -> web.Response:
    principal = await require_key(request, WRITE)
    agent = await _agent(request, principal)
    body = await read_json_object(request)
    try:
        patch = VoiceAgentUpdate.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    if agent.status == "archived":
        raise ApiError(409, "voice_agent_archived", "an archived voice agent cannot be changed")
    updated = await services_of(request).voice_agents.update(agent, patch)
    return web.json_response(agent_public(updated))


async def archive(request: web.Request) -> web.Response:
    principal = await require_key(request, WRITE)
    svc = services_of(request)
    agent = await _agent(request, principal)
    archived = await svc.voice_agents.save(agent.model_copy(update={"status": "archived"}))
    if await svc.voice_agents.get_default(principal.tenant_id) == agent.id:
        await svc.voice_agents.set_default(principal.tenant_id, None)
    return web.json_response(agent_public(archived))


async def delete(request: web.Request) -> web.Response:
    principal = await require_key(request, WRITE)
    svc = services_of(request)
    agent = await _agent(request, principal)
    active = await svc.voice_agents.active_calls(agent.id)
    if active:
        raise ApiError(
            409,
            "voice_agent_in_use",
            f"{len(active)} live AI session(s) use this voice agent; archive it instead",
        )
    await svc.voice_agents.delete(agent)
    if await svc.voice_agents.get_default(principal.tenant_id) == agent.id:
        await svc.voice_agents.set_default(principal.tenant_id, None)
    return web.Response(status=204)


class _DefaultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voice_agent_id: str | None


async def get_default(request: web.Request) -> web.Response:
    principal = await _reader(request)
    va_id = await services_of(request).voice_agents.get_default(principal.tenant_id)
    return web.json_response({"voice_agent_id": va_id})


async def set_default(request: web.Request) -> web.Response:
    principal = await require_key(request, ADMIN)
    svc = services_of(request)
    body = await read_json_object(request)
    try:
        spec = _DefaultBody.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    if spec.voice_agent_id is not None:
        agent = await svc.voice_agents.get(spec.voice_agent_id, principal.tenant_id)
        if agent is None:
            raise ApiError(404, "voice_agent_not_found", "no such voice agent in this tenant")
        if agent.status != "active":
            raise ApiError(409, "voice_agent_not_active", f"the voice agent is {agent.status}")
    await svc.voice_agents.set_default(principal.tenant_id, spec.voice_agent_id)
    return web.json_response({"voice_agent_id": spec.voice_agent_id})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/voice-agents", create)
    r.add_get("/api/v1/voice-agents", list_agents)
    # /default is not an id: without the lookahead, /{va_id} also matched it, so a 405 on /default
    # advertised {va_id}'s PATCH and DELETE in Allow, and DELETE /default was a delete of "default".
    agent = "/api/v1/voice-agents/{va_id:(?!default$)[^{}/]+}"
    r.add_get("/api/v1/voice-agents/default", get_default)
    r.add_post("/api/v1/voice-agents/default", set_default)
    r.add_get(agent, get)
    r.add_patch(agent, update)
    r.add_post(agent + "/archive", archive)
    r.add_delete(agent, delete)
