"""`/api/v1/callbacks`: the callbacks `schedule_callback` booked, their state, and cancelling one."""

from __future__ import annotations

from aiohttp import web

from bridge.api.auth import Principal, require_key
from bridge.api.errors import ApiError
from bridge.services import services_of
from bridge.store.callbacks import CALLBACK_STATES, CallbackStore

READ = "callbacks:read"
WRITE = "callbacks:write"


async def _reader(request: web.Request) -> Principal:
    try:
        return await require_key(request, READ)
    except ApiError:
        return await require_key(request, WRITE)


def _store(request: web.Request) -> CallbackStore:
    return CallbackStore(services_of(request).redis)


async def list_callbacks(request: web.Request) -> web.Response:
    principal = await _reader(request)
    q = request.query
    state = q.get("state") or None
    if state is not None and state not in CALLBACK_STATES:
        raise ApiError(400, "invalid_state", f"state must be one of {', '.join(CALLBACK_STATES)}")
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "invalid_limit", "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_limit", "limit must be between 1 and 1000")
    callbacks = await _store(request).list(
        principal.tenant_id, state=state, call_id=q.get("call_id") or None, limit=limit
    )
    return web.json_response({"items": [cb.public() for cb in callbacks]})


async def get_callback(request: web.Request) -> web.Response:
    principal = await _reader(request)
    cb = await _store(request).get(request.match_info["callback_id"], principal.tenant_id)
    if cb is None:
        raise ApiError(404, "callback_not_found", "no such callback in this tenant")
    return web.json_response(cb.public())


async def cancel_callback(request: web.Request) -> web.Response:
    principal = await require_key(request, WRITE)
    store = _store(request)
    callback_id = request.match_info["callback_id"]
    state = await store.cancel(callback_id, principal.tenant_id)
    if state is None:
        raise ApiError(404, "callback_not_found", "no such callback in this tenant")
    if state != "cancelled":
        raise ApiError(
            409,
            "callback_not_cancellable",
            f"the callback is already {state}; only a scheduled callback can be cancelled",
            extra={"state": state},
        )
    cb = await store.get(callback_id, principal.tenant_id)
    assert cb is not None
    return web.json_response(cb.public())


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/callbacks", list_callbacks)
    r.add_get("/api/v1/callbacks/{callback_id}", get_callback)
    r.add_delete("/api/v1/callbacks/{callback_id}", cancel_callback)
