"""`POST /api/v1/ai-sessions/{call_id}/control`: the one endpoint a voice AI drives its call with.

The route is thin on purpose; the pipeline (auth, rate limit, validation, idempotency, state
machine, dispatch) is bridge.api.pipeline, and each verb lives in bridge.verbs.
"""

from __future__ import annotations

from aiohttp import web

from bridge.api.pipeline import ControlPipeline
from bridge.services import SERVICES_KEY

PIPELINE_KEY: web.AppKey[ControlPipeline] = web.AppKey("control_pipeline")


async def control(request: web.Request) -> web.Response:
    return await request.app[PIPELINE_KEY].handle(request)


async def _warm(app: web.Application) -> None:
    await app[PIPELINE_KEY].warm()


def setup(app: web.Application) -> None:
    app[PIPELINE_KEY] = ControlPipeline(app[SERVICES_KEY])
    app.on_startup.append(_warm)
    app.router.add_post("/api/v1/ai-sessions/{call_id}/control", control)
