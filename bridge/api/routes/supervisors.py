"""Supervisors: the WebSocket that pushes escalations, the escalations API, and the console page.

- `GET /api/v1/supervisors/ws`: a supervisor's socket. Browsers cannot set Authorization on a
  WebSocket, so the first text frame authenticates (`hello` with a tenant key holding
  `supervisors:act`); an Authorization header is accepted too. See docs/supervision.md.
- `GET /api/v1/supervisors`: the tenant's supervisors and whether they are on duty.
- `GET /api/v1/escalations`, `GET /api/v1/escalations/{id}`, `POST /api/v1/escalations/{id}/claim`.
- `GET /console`: the supervisor console (bridge/api/static/).

Another tenant's escalation is a 404, never a 403, so ids cannot be probed across tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ulid import ULID

from bridge.api.auth import Principal, credential_key, principal_from, require_key
from bridge.api.errors import ApiError, read_json_object, validation_error
from bridge.calls.supervisors import Escalation, SupervisionHub, SupervisorConn
from bridge.services import SERVICES_KEY, Services, services_of
from bridge.store import keys
from bridge.verbs.common import PENDING

log = structlog.get_logger(__name__)

SCOPE = "supervisors:act"
HELLO_TIMEOUT_S = 10.0
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATUSES = ("pending", "claimed", "closed")

# WebSocket close codes (4000-4999 are the application's): the close reason is the error code.
CLOSE_BAD_HELLO = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TIMEOUT = 4408
CLOSE_UNAVAILABLE = 1011

SUPERVISOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$"
# A dial string conference_add can put after `originate`: one endpoint, no spaces, no `,` (that
# would ring several), no `{}`/`[]` (channel variables), no `^` or `'` (dialplan syntax).
CONTACT_PATTERN = r"^[A-Za-z0-9_.@:/+=%-]{1,200}$"


class _Hello(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    api_key: str | None = Field(default=None, max_length=200)
    supervisor_id: str = Field(pattern=SUPERVISOR_ID_PATTERN)
    name: str | None = Field(default=None, max_length=100)
    contact: str | None = Field(default=None, pattern=CONTACT_PATTERN)


class _Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    supervisor_id: str = Field(pattern=SUPERVISOR_ID_PATTERN)


def _hub(svc: Services) -> SupervisionHub:
    if svc.supervision is None:
        raise ApiError(503, "supervision_unavailable", "supervision is not running on this bridge")
    return svc.supervision


# ---------------------------------------------------------------- the WebSocket


async def _judge(svc: Services, secret: str) -> Principal:
    """The same judgement every route makes: a live tenant key holding supervisors:act."""
    principal = principal_from(secret, await svc.redis.hgetall(credential_key(secret)))
    if principal.kind != "api_key":
        raise ApiError(403, "api_key_required", "supervisors authenticate with a tenant API key")
    if not principal.has(SCOPE):
        raise ApiError(403, "missing_scope", f"Scope '{SCOPE}' required", extra={"scope": SCOPE})
    return principal


async def _refuse(
    ws: web.WebSocketResponse, close_code: int, code: str, message: str
) -> web.WebSocketResponse:
    with contextlib.suppress(Exception):
        await ws.send_json({"type": "error", "code": code, "message": message})
        await ws.close(code=close_code, message=code.encode())
    return ws


async def supervisor_ws(request: web.Request) -> web.StreamResponse:
    svc = services_of(request)
    hub = _hub(svc)
    header_principal: Principal | None = None
    if request.headers.get("Authorization"):
        # A client that can send the header is judged before the upgrade: a plain HTTP 401/403.
        header_principal = await require_key(request, SCOPE)

    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    try:
        first = await ws.receive(timeout=HELLO_TIMEOUT_S)
    except TimeoutError:
        return await _refuse(ws, CLOSE_TIMEOUT, "hello_timeout", "send a hello frame first")
    if first.type != WSMsgType.TEXT:
        return await _refuse(ws, CLOSE_BAD_HELLO, "invalid_hello", "the first frame must be a JSON hello")
    try:
        raw = json.loads(first.data)
        if not isinstance(raw, dict) or raw.get("type") != "hello":
            raise ValueError("not a hello")
        hello = _Hello.model_validate(raw)
    except ValidationError as exc:
        # Field names and reasons only: the frame's values (the key among them) are not echoed.
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return await _refuse(ws, CLOSE_BAD_HELLO, "invalid_hello", f"bad hello frame: {problems}"[:300])
    except ValueError:
        return await _refuse(ws, CLOSE_BAD_HELLO, "invalid_hello", "the first frame must be a JSON hello")

    principal = header_principal
    if principal is None:
        if not hello.api_key:
            return await _refuse(ws, CLOSE_UNAUTHORIZED, "missing_credentials", "hello must carry api_key")
        try:
            principal = await _judge(svc, hello.api_key)
        except ApiError as exc:
            close = CLOSE_UNAUTHORIZED if exc.status == 401 else CLOSE_FORBIDDEN
            return await _refuse(ws, close, exc.code, exc.message)

    conn = SupervisorConn(
        conn_id=f"{svc.settings.instance_id}:{ULID()}",
        tenant_id=principal.tenant_id,
        supervisor_id=hello.supervisor_id,
        ws=ws,
    )
    # Registered locally before the welcome is built: an escalation raised in between is pushed,
    # never lost (the console dedupes on escalation_id).
    hub.add(conn)
    try:
        try:
            await svc.supervisors.connect(
                conn.tenant_id, conn.supervisor_id, conn.conn_id, name=hello.name, contact=hello.contact
            )
            supervisor = await svc.supervisors.get(conn.tenant_id, conn.supervisor_id)
            welcome = {
                "type": "welcome",
                "supervisor": supervisor.public() if supervisor else None,
                "on_duty": True,
                "escalations": await hub.open_escalations(conn.tenant_id),
            }
        except Exception as exc:
            log.warning("supervisor_connect_failed", supervisor_id=conn.supervisor_id, error=str(exc))
            return await _refuse(ws, CLOSE_UNAVAILABLE, "store_unavailable", "Redis is not reachable")
        await conn.open(welcome)
        log.info("supervisor_connected", tenant_id=conn.tenant_id, supervisor_id=conn.supervisor_id)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                await _on_frame(svc, hub, conn, msg.data)
            except Exception as exc:
                # Redis trouble must not kill the socket (nor reach the HTTP error middleware).
                log.warning("supervisor_frame_failed", supervisor_id=conn.supervisor_id, error=str(exc))
                await conn.send({"type": "error", "code": "store_unavailable", "message": "try again"})
    finally:
        hub.remove(conn)
        with contextlib.suppress(Exception):
            await svc.supervisors.disconnect(conn.tenant_id, conn.supervisor_id, conn.conn_id)
        log.info("supervisor_disconnected", tenant_id=conn.tenant_id, supervisor_id=conn.supervisor_id)
    return ws


async def _on_frame(svc: Services, hub: SupervisionHub, conn: SupervisorConn, data: str) -> None:
    try:
        frame = json.loads(data)
    except ValueError:
        await conn.send({"type": "error", "code": "invalid_json", "message": "frames are JSON objects"})
        return
    kind = frame.get("type") if isinstance(frame, dict) else None
    if kind == "duty" and isinstance(frame.get("on_duty"), bool):
        on_duty = frame["on_duty"]
        conn.on_duty = on_duty
        await svc.supervisors.set_duty(conn.tenant_id, conn.supervisor_id, conn.conn_id, on_duty)
        reply: dict[str, Any] = {"type": "duty", "on_duty": on_duty}
        if on_duty:
            # What was raised while this console was off duty.
            reply["escalations"] = await hub.open_escalations(conn.tenant_id)
        await conn.send(reply)
    elif kind == "ping":
        await conn.send({"type": "pong"})
    else:
        await conn.send(
            {"type": "error", "code": "unknown_frame", "message": "expected duty {on_duty: bool} or ping"}
        )


# ---------------------------------------------------------------- supervisors and escalations


async def list_supervisors(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    found = await services_of(request).supervisors.list(principal.tenant_id)
    return web.json_response({"items": [s.public() for s in found]})


async def _call_state(svc: Services, esc: Escalation) -> dict[str, Any] | None:
    session = await svc.sessions.get(esc.call_id)
    if session is None:
        return None
    # As get_call_state answers it: in a conference, who FreeSWITCH says is in the room.
    conf_id = session.conference_id
    if not conf_id or conf_id == PENDING or session.terminal or svc.conferences is None:
        state = session.call_state()
        if conf_id == PENDING:
            state["conference_id"] = None  # a conference_start still under way
    else:
        state = session.call_state([p.type for p in await svc.conferences.participants(conf_id)])
    return {"call_id": esc.call_id, **state}


async def _escalation(request: web.Request, principal: Principal) -> Escalation:
    esc = await _hub(services_of(request)).escalations.get(request.match_info["esc_id"], principal.tenant_id)
    if esc is None:
        raise ApiError(404, "escalation_not_found", "no such escalation in this tenant")
    return esc


async def list_escalations(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    wanted: tuple[str, ...] | None = None
    if request.query.get("status"):
        wanted = tuple(s.strip() for s in request.query["status"].split(",") if s.strip())
        unknown = sorted(set(wanted) - set(STATUSES))
        if unknown:
            raise ApiError(
                400,
                "invalid_status",
                f"status must be among {', '.join(STATUSES)}",
                extra={"unknown": unknown},
            )
    found = await _hub(services_of(request)).escalations.list(principal.tenant_id, wanted)
    return web.json_response({"items": [e.public() for e in found]})


async def get_escalation(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    esc = await _escalation(request, principal)
    return web.json_response({**esc.public(), "call_state": await _call_state(services_of(request), esc)})


async def claim_escalation(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    svc = services_of(request)
    hub = _hub(svc)
    try:
        spec = _Claim.model_validate(await read_json_object(request))
    except ValidationError as exc:
        raise validation_error(exc) from exc
    esc = await _escalation(request, principal)
    if await svc.supervisors.get(principal.tenant_id, spec.supervisor_id) is None:
        raise ApiError(
            404,
            "supervisor_not_found",
            "no such supervisor in this tenant (connect to the supervisors WS first)",
        )
    session = await svc.sessions.get(esc.call_id)
    if esc.open and (session is None or session.terminal):
        # Its session ended without this instance closing it yet: close it now.
        await hub.session_ended(esc.call_id)
    result, claimed_at = await hub.escalations.claim(esc, spec.supervisor_id)
    if result.code == -1:
        raise ApiError(404, "escalation_not_found", "no such escalation in this tenant")
    if result.code == 0:
        raise ApiError(
            409,
            "escalation_already_claimed",
            "another supervisor claimed this escalation first",
            extra={"supervisor_id": result.detail},
        )
    if result.code == -2:
        raise ApiError(409, "escalation_closed", "the escalation is closed: its AI session has ended")
    claimed = await hub.escalations.get(esc.escalation_id)
    assert claimed is not None
    await hub.publish("escalation.claimed", claimed)
    await svc.outbox.emit("ai_session.escalated", claimed.tenant_id, claimed.webhook())
    entry = {
        "ts": claimed_at,
        "event": "supervisor_claimed",
        "escalation_id": claimed.escalation_id,
        "supervisor_id": claimed.supervisor_id,
    }
    await svc.redis.rpush(keys.session_logs(claimed.call_id), json.dumps(entry))
    return web.json_response({**claimed.public(), "call_state": await _call_state(svc, claimed)})


# ---------------------------------------------------------------- the console


async def console(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "console.html", headers={"Cache-Control": "no-store"})


# The files the console page loads; anything else under /console/assets is a 404 in the envelope
# (aiohttp's static route answers a missing file with an empty application/octet-stream 404).
ASSETS = frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in (".css", ".js"))


async def console_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["filename"]
    if name not in ASSETS:
        raise ApiError(404, "not_found", "no such console asset")
    return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})


async def _close_sockets(app: web.Application) -> None:
    """On shutdown: close supervisor sockets so the runner does not wait out its timeout."""
    hub = app[SERVICES_KEY].supervision if SERVICES_KEY in app else None
    if hub is None:
        return
    conns = hub.connections()
    await asyncio.gather(
        *(c.ws.close(code=1001, message=b"bridge shutting down") for c in conns), return_exceptions=True
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/supervisors/ws", supervisor_ws)
    app.router.add_get("/api/v1/supervisors", list_supervisors)
    app.router.add_get("/api/v1/escalations", list_escalations)
    app.router.add_get("/api/v1/escalations/{esc_id}", get_escalation)
    app.router.add_post("/api/v1/escalations/{esc_id}/claim", claim_escalation)
    app.router.add_get("/console", console)
    app.router.add_get("/console/assets/{filename}", console_asset)
    app.on_shutdown.append(_close_sockets)
