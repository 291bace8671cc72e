"""The aiohttp application: middlewares, then each route module's `setup(app)`."""

from __future__ import annotations

from aiohttp import web

from bridge.api import errors
from bridge.api.body import MAX_BODY_BYTES
from bridge.services import SERVICES_KEY, Services

__all__ = ["MAX_BODY_BYTES", "create_app"]


def create_app(services: Services, *, sandbox: bool = False) -> web.Application:
    app = web.Application(middlewares=[errors.error_middleware], client_max_size=MAX_BODY_BYTES)
    app[SERVICES_KEY] = services
    setup_routes(app, sandbox=sandbox)
    return app


def setup_routes(app: web.Application, *, sandbox: bool) -> None:
    from bridge.api.routes import health, metrics, openapi

    health.setup(app)
    metrics.setup(app)
    openapi.setup(app)
    _setup_optional(app, sandbox=sandbox)


def _setup_optional(app: web.Application, *, sandbox: bool) -> None:
    """Route modules are added here as they land; each exposes `setup(app)`."""
    import importlib

    modules = [
        "bridge.api.routes.voice_agents",
        "bridge.api.routes.calls",
        "bridge.api.routes.recordings",
        "bridge.api.routes.ai_sessions",
        "bridge.api.routes.control",
        "bridge.api.routes.webhooks",
        "bridge.api.routes.leads",
        "bridge.api.routes.callbacks",
        "bridge.api.routes.supervisors",
    ]
    if sandbox:
        modules.append("bridge.api.routes.sandbox")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.setup(app)
