"""A customer's webhook endpoint for the tests: a real HTTP server on 127.0.0.1 that checks every
request with the official SDK's verifier as it arrives."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yotel.webhook import InvalidSignature, verify

from tests.helpers import http


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    # What the SDK said at the moment the request arrived (the replay window is checked against now).
    verified_with: dict[str, bool] = field(default_factory=dict)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


Behaviour = Callable[[int, Received], Awaitable[web.StreamResponse]]


async def ok(_n: int, _r: Received) -> web.StreamResponse:
    return web.Response(status=200, text="ok")


def statuses(*codes: int) -> Behaviour:
    """Answer the n-th request with codes[n], then 200 for ever."""

    async def answer(n: int, _r: Received) -> web.StreamResponse:
        return web.Response(status=codes[n] if n < len(codes) else 200, text="x")

    return answer


class Receiver:
    def __init__(self, behaviour: Behaviour = ok) -> None:
        self.behaviour = behaviour
        self.requests: list[Received] = []
        self.secrets: dict[str, str] = {}  # name -> secret to try the SDK verifier with on arrival
        self.in_flight = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = Received(dict(request.headers), await request.read(), time.monotonic())
        for name, secret in self.secrets.items():
            try:
                verify(raw_body=rec.body, headers=rec.headers, signing_secret=secret)
                rec.verified_with[name] = True
            except InvalidSignature:
                rec.verified_with[name] = False
        n = len(self.requests)
        self.requests.append(rec)
        self.in_flight += 1
        try:
            return await self.behaviour(n, rec)
        finally:
            self.in_flight -= 1

    def event_ids(self) -> list[str]:
        return [r.json["event_id"] for r in self.requests]

    def of(self, event_type: str, call_id: str) -> list[dict[str, Any]]:
        """The `data` of every `event_type` event about `call_id`, each checked to be signed with
        the subscription's current secret."""
        found = [
            r
            for r in self.requests
            if r.json["event_type"] == event_type and r.json["data"].get("call_id") == call_id
        ]
        for r in found:
            assert r.verified_with.get("current") is True, r.headers
        return [r.json["data"] for r in found]


@asynccontextmanager
async def subscribed(sandbox: Any, event_types: list[str]) -> AsyncIterator[Receiver]:
    """A running receiver subscribed to `event_types` through the webhooks API."""
    rec = Receiver()
    await rec.start()
    try:
        reply = await http(sandbox, "POST", "/api/v1/webhooks", {"url": rec.url, "event_types": event_types})
        assert reply.status == 201, reply.body
        rec.secrets["current"] = reply.body["signing_secret"]
        yield rec
    finally:
        await rec.stop()
