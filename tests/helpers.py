"""Helpers for end-to-end tests against the `sandbox` fixture (bridge + switch simulator + Redis).

Typical use:

    call = await start_call(sandbox, agent_server)          # a live AI call and its callback token
    client = sdk(sandbox)                                   # the official SDK, admin key
    await in_thread(client.ai_sessions.mute, call.call_id, callback_token=call.token)
    assert commands(sandbox, call.call_id, "uuid_audio") == [...]

Everything here is generic: no verb-specific knowledge, so other test modules can reuse it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yotel
from multidict import CIMultiDict

from tests.conftest import AgentServer, fast_settings, in_thread

T = TypeVar("T")

CALLER = "+14155550100"
DIALED = "+14155550199"


def sdk(sandbox: Any, key: str | None = None, **options: Any) -> yotel.Client:
    """The official SDK on the sandbox; the admin key (every scope) unless `key` is given.
    One attempt by default, so a 429 surfaces instead of being slept through."""
    options.setdefault("max_retries", 1)
    return yotel.Client(api_key=key or sandbox.info.admin_key, base_url=sandbox.info.base_url, **options)


@dataclass
class HttpReply:
    status: int
    body: Any
    headers: CIMultiDict[str]  # case-insensitive, as HTTP headers are

    @property
    def code(self) -> str | None:
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        return detail.get("code") if isinstance(detail, dict) else None


async def http(
    sandbox: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> HttpReply:
    """One raw request (no SDK): `auth` is the bearer credential (default: the admin key)."""
    sent = {"Authorization": f"Bearer {auth or sandbox.info.admin_key}", **(headers or {})}
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            f"{sandbox.info.base_url}{path}",
            json=body if raw is None else None,
            data=raw,
            headers=sent,
        ) as resp:
            text = await resp.text()
            try:
                parsed: Any = await resp.json(content_type=None) if text else None
            except ValueError:
                parsed = text
            return HttpReply(resp.status, parsed, CIMultiDict(resp.headers))


async def control(
    sandbox: Any,
    call_id: str,
    body: Any,
    *,
    auth: str | None = None,
    idempotency_key: str | None = None,
    raw: bytes | None = None,
) -> HttpReply:
    """POST the control endpoint directly (for what the SDK cannot send: raw bytes, no key...)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return await http(
        sandbox, "POST", f"/api/v1/ai-sessions/{call_id}/control", body, auth=auth, headers=headers, raw=raw
    )


async def ensure_default_agent(sandbox: Any, agent_server: AgentServer, name: str = "bot") -> Any:
    """A voice agent pointing at `agent_server`, made the tenant default (once per sandbox)."""
    client = sdk(sandbox)
    existing = await in_thread(client.voice_agents.get_default)
    if existing:
        return await in_thread(client.voice_agents.get, existing)
    agent = await in_thread(client.voice_agents.create, name=name, ws_url=agent_server.url)
    await in_thread(client.voice_agents.set_as_default, agent.id)
    return agent


async def place_call(sandbox: Any, **body: Any) -> str:
    """A simulated inbound call through POST /sandbox/calls; returns its call_id."""
    reply = await http(sandbox, "POST", "/sandbox/calls", {"from": CALLER, "to": DIALED, **body})
    assert reply.status == 201, reply.body
    return reply.body["call_id"]


@dataclass
class LiveCall:
    call_id: str
    token: str
    metadata: dict[str, Any]


async def start_call(sandbox: Any, agent_server: AgentServer, **body: Any) -> LiveCall:
    """A call the AI is on: default agent ensured, call placed, metadata frame received."""
    await ensure_default_agent(sandbox, agent_server)
    call_id = await place_call(sandbox, **body)
    meta = await agent_server.metadata(call_id)
    return LiveCall(call_id, meta["callback_token"], meta)


async def end_call(sandbox: Any, call_id: str, cause: str = "NORMAL_CLEARING") -> None:
    """The caller hangs up (the simulator sends the hangup events)."""
    reply = await http(sandbox, "DELETE", f"/sandbox/calls/{call_id}?cause={cause}")
    assert reply.status == 200, reply.body


def snapshot(sandbox: Any, call_id: str) -> dict[str, Any]:
    snap = sandbox.sim.snapshot(call_id)
    assert snap is not None, f"the simulator has no channel {call_id}"
    return snap


def commands(sandbox: Any, call_id: str, prefix: str = "") -> list[str]:
    """API commands the simulated switch received for the call, optionally only those starting
    with `prefix` (e.g. "uuid_hold")."""
    return [c for c in snapshot(sandbox, call_id)["commands"] if c.startswith(prefix)]


async def events(sandbox: Any, call_id: str, event_type: str | None = None) -> list[Any]:
    """Domain events (the outbox) about the call, oldest first."""
    found = await sandbox.runtime.services.outbox.read_all()
    return [
        e
        for e in found
        if e.data.get("call_id") == call_id and (event_type is None or e.event_type == event_type)
    ]


async def wait_until(probe: Callable[[], Awaitable[T]], timeout: float = 5.0, interval: float = 0.02) -> T:
    """Poll an async probe until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@asynccontextmanager
async def sandbox_with(redis_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Any]:
    """A sandbox like the `sandbox` fixture, with settings changed, e.g. a higher rate limit for
    tests that drive many verbs on one call:

        @pytest.fixture
        async def sandbox(redis_url, redis, tmp_path):
            async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000) as box:
                yield box
    """
    from bridge.sandbox import Sandbox

    box = Sandbox(fast_settings(redis_url, tmp_path, **overrides), tenant_id="acme")
    await box.start()
    try:
        yield box
    finally:
        await box.stop()
