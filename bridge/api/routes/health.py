"""Liveness and readiness: is Redis answering, is the ESL connection up; and, when the bridge runs
its own redis-server (no REDIS_URL), what its supervisor says (docs/operations.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.services import services_of
from bridge.store.redis import StoreUnavailable, ping


async def health(request: web.Request) -> web.Response:
    svc = services_of(request)
    embedded = svc.embedded_redis
    redis_ok = False
    # While the embedded redis-server is being restarted there is nothing to ask.
    if embedded is None or embedded.state == "running":
        try:
            await ping(svc.redis)
            redis_ok = True
        except StoreUnavailable:
            pass
    esl_ok = bool(svc.esl and svc.esl.connected)
    status = 200 if redis_ok and esl_ok else 503
    body: dict[str, Any] = {"ok": status == 200, "redis": redis_ok, "freeswitch": esl_ok}
    if embedded is not None:
        body["embedded_redis"] = embedded.status()
    return web.json_response(body, status=status)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", health)
