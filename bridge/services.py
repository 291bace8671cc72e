"""The long-lived parts of one bridge process, built once and shared by every handler.

Components are plain attributes; anything with a background loop registers it with
`spawn()` so shutdown cancels it. Optional parts (the ESL client, the simulator) are None
until set up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from ulid import ULID

from bridge.config import Settings
from bridge.media.tokens import TokenStore
from bridge.metrics import BridgeMetrics
from bridge.store.redis import RedisClient
from bridge.store.tenants import TenantStore
from bridge.tasks import cancel_and_wait
from bridge.webhooks.outbox import Outbox

if TYPE_CHECKING:
    from bridge.calls.conferences import ConferenceStore
    from bridge.calls.manager import CallManager
    from bridge.calls.monitors import Monitors
    from bridge.calls.pool import SwitchPool
    from bridge.calls.sessions import SessionStore
    from bridge.calls.supervisors import SupervisionHub, SupervisorStore
    from bridge.calls.voice_agents import VoiceAgentStore
    from bridge.sim.server import SwitchSimulator
    from bridge.store.embedded import EmbeddedRedis
    from bridge.webhooks.service import WebhookService

log = structlog.get_logger(__name__)

SERVICES_KEY: web.AppKey[Services] = web.AppKey("services")


class Services:
    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self.tenants = TenantStore(redis)
        self.tokens = TokenStore(redis)
        self.outbox = Outbox(redis)
        # This process's Prometheus metrics, on a registry of their own (GET /metrics, docs/metrics.md).
        self.metrics = BridgeMetrics()
        self.sim: SwitchSimulator | None = None
        # Unique per process start: who holds a box's lease (bridge.calls.ownership).
        self.holder_id = f"{settings.instance_id}:{ULID()}"
        self.switches: SwitchPool = None  # type: ignore[assignment]
        # Set by bridge.runtime.build_services; typed here so every handler sees one shape.
        self.sessions: SessionStore = None  # type: ignore[assignment]
        self.voice_agents: VoiceAgentStore = None  # type: ignore[assignment]
        self.calls: CallManager = None  # type: ignore[assignment]
        self.conferences: ConferenceStore = None  # type: ignore[assignment]
        self.monitors: Monitors = None  # type: ignore[assignment]
        self.supervisors: SupervisorStore = None  # type: ignore[assignment]
        self.supervision: SupervisionHub | None = None
        self.webhooks: WebhookService | None = None
        # The redis-server this process runs itself (no REDIS_URL); /healthz reports its state.
        self.embedded_redis: EmbeddedRedis | None = None
        # Where clients reach this bridge (BRIDGE_PUBLIC_BASE_URL); bridge.runtime sets the bound
        # base URL when the setting is empty. Recording URLs carry it.
        self.public_base_url = (
            settings.public_base_url.rstrip("/") or f"http://{settings.http_host}:{settings.http_port}"
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run a background loop for the life of the process; a crash is logged, not lost."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_crashed", task=task.get_name(), exc_info=task.exception())

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def close(self) -> None:
        # Bounded: a task that will not stop is logged and left behind (bridge.tasks).
        await cancel_and_wait(set(self._tasks), what="background")
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                log.exception("close_failed")
        await self.outbox.aclose()  # an emit whose caller was cancelled is still written
        await self.redis.aclose()


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES_KEY]
