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
        except StoreUnavailable as exc:
            svc.metrics.redis_error("healthz", exc)
    boxes = list(svc.switches)
    owned = svc.calls.ownership.owned
    switches = {
        box.id: {"connected": box.connected, "handled_here": box.id in owned, "channels": len(box.channels)}
        for box in boxes
    }
    # Ready while Redis answers and at least one box is reachable (calls on a box that is down
    # cannot be controlled, the others can); `freeswitch` is true when every box is.
    status = 200 if redis_ok and any(box.connected for box in boxes) else 503
    body: dict[str, Any] = {
        "ok": status == 200,
        "redis": redis_ok,
        "freeswitch": all(box.connected for box in boxes),
        "switches": switches,
    }
    if embedded is not None:
        body["embedded_redis"] = embedded.status()
    return web.json_response(body, status=status)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", health)
