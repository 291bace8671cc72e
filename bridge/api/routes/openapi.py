"""`GET /openapi.json`: the API's OpenAPI 3.1 document (bridge/api/openapi.py), no credential needed.

Built once, on the first request, from the routes this app serves (so a bridge outside sandbox mode
does not list /sandbox), then served from memory.
"""

from __future__ import annotations

import json

from aiohttp import web

from bridge.api.openapi import build_document

# Filled on the first request (the router is complete by then); a dict, as the app is frozen.
CACHE_KEY: web.AppKey[dict[str, bytes]] = web.AppKey("openapi_document", dict)


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the app's router holds; HEAD is aiohttp's, implied by GET."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if path and route.method != "HEAD":
            found.add((route.method, path))
    return found


async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[CACHE_KEY]
    if "body" not in cache:
        document = build_document(served_routes(request.app))
        cache["body"] = json.dumps(document, separators=(",", ":")).encode()
    return web.Response(body=cache["body"], content_type="application/json")


def setup(app: web.Application) -> None:
    app[CACHE_KEY] = {}
    app.router.add_get("/openapi.json", openapi_json)
