"""Liveness and readiness: is Redis answering, is the ESL connection up."""

from __future__ import annotations

from aiohttp import web

from bridge.services import services_of
from bridge.store.redis import StoreUnavailable, ping


async def health(request: web.Request) -> web.Response:
    svc = services_of(request)
    redis_ok = True
    try:
        await ping(svc.redis)
    except StoreUnavailable:
        redis_ok = False
    esl_ok = bool(svc.esl and svc.esl.connected)
    status = 200 if redis_ok and esl_ok else 503
    return web.json_response({"ok": status == 200, "redis": redis_ok, "freeswitch": esl_ok}, status=status)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", health)
