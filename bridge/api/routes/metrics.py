"""`GET /metrics`: the Prometheus text format of this process's metrics (bridge.metrics, docs/metrics.md).

Unauthenticated by default, like /healthz: a Prometheus scrape carries no API key, and what it
reads is counts and latencies (label values are verb and command names, codes, the box's name and
voice agent ids; no call, tenant or caller). With BRIDGE_METRICS_TOKEN set, the scrape must send
`Authorization: Bearer <token>` (Prometheus: `authorization: {credentials: ...}`), else 401.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from bridge.errors import ApiError
from bridge.metrics import CONTENT_TYPE_LATEST
from bridge.services import services_of


async def metrics(request: web.Request) -> web.Response:
    svc = services_of(request)
    token = svc.settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), token.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "GET /metrics needs Authorization: Bearer <BRIDGE_METRICS_TOKEN>",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    return web.Response(body=svc.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
