"""`/api/v1/ai-sessions`: read sessions, revoke a callback token."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.api.auth import Principal, authenticate, require_key
from bridge.api.errors import ApiError, read_json_object, validation_error
from bridge.services import services_of

CONTROL_ADMIN = "ai_sessions:control_admin"


async def _reader(request: web.Request) -> Principal:
    principal = await authenticate(request)
    if principal.kind != "api_key":
        raise ApiError(403, "api_key_required", "this route takes a tenant API key")
    if not (principal.has("ai_sessions:read") or principal.has(CONTROL_ADMIN)):
        raise ApiError(
            403, "missing_scope", "Scope 'ai_sessions:read' required", extra={"scope": "ai_sessions:read"}
        )
    return principal


async def list_sessions(request: web.Request) -> web.Response:
    principal = await _reader(request)
    q = request.query
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "invalid_limit", "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_limit", "limit must be between 1 and 1000")
    started_after: float | None = None
    if q.get("started_after"):
        try:
            started_after = datetime.fromisoformat(q["started_after"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ApiError(
                400, "invalid_started_after", "started_after must be an ISO-8601 timestamp"
            ) from None
    svc = services_of(request)
    sessions = await svc.sessions.list_for_tenant(
        principal.tenant_id, limit=limit, started_after=started_after, voice_agent_id=q.get("voice_agent_id")
    )
    items = [s.public(await svc.sessions.logs(s.call_id)) for s in sessions]
    return web.json_response({"items": items})


async def get_session(request: web.Request) -> web.Response:
    principal = await _reader(request)
    svc = services_of(request)
    session = await svc.sessions.get(request.match_info["call_id"])
    if session is None or session.tenant_id != principal.tenant_id:
        raise ApiError(404, "ai_session_not_found", "no such AI session in this tenant")
    return web.json_response(session.public(await svc.sessions.logs(session.call_id)))


class _RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)


async def revoke_token(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    if principal.kind == "callback_token":
        raise ApiError(403, "api_key_required", "a callback token cannot revoke tokens; use a tenant API key")
    principal = await require_key(request, CONTROL_ADMIN)
    body = await read_json_object(request)
    try:
        spec = _RevokeBody.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    svc = services_of(request)
    call_id = request.match_info["call_id"]
    session = await svc.sessions.get(call_id)
    if session is None or session.tenant_id != principal.tenant_id:
        raise ApiError(404, "ai_session_not_found", "no such AI session in this tenant")
    token = await svc.tokens.lookup(spec.token)
    if token is None or token.call_id != call_id or token.tenant_id != principal.tenant_id:
        raise ApiError(404, "token_not_found", "no such callback token for this call")
    revoked = await svc.tokens.revoke(spec.token)
    assert revoked is not None
    return web.json_response({"ok": True, "jti": revoked.jti, "revoked_until_ts": int(revoked.expires_at)})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/ai-sessions", list_sessions)
    app.router.add_get("/api/v1/ai-sessions/{call_id}", get_session)
    app.router.add_post("/api/v1/ai-sessions/{call_id}/revoke_token", revoke_token)
