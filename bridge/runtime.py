"""Assembling a bridge process: Redis, the ESL link, the call layer, webhooks, HTTP.

`BridgeRuntime` is used by the CLI (`bridge run`, `bridge sandbox`), by the tests and by the
benchmarks, so all three run exactly the same wiring.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from bridge.api.app import create_app
from bridge.api.server import AppRunner
from bridge.calls.conferences import ConferenceStore
from bridge.calls.manager import CallManager
from bridge.calls.monitors import Monitors
from bridge.calls.pool import SwitchBox, SwitchPool
from bridge.calls.sessions import SessionStore
from bridge.calls.supervisors import SupervisorStore
from bridge.calls.switch import Switch
from bridge.calls.voice_agents import VoiceAgentStore
from bridge.config import Settings
from bridge.esl.client import EslClient
from bridge.services import Services
from bridge.store.embedded import EmbeddedRedis
from bridge.store.migrate import migrate_key_names
from bridge.store.redis import connect, ping
from bridge.tasks import cancel_and_wait

log = structlog.get_logger(__name__)


@dataclass
class Endpoint:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class BridgeRuntime:
    """One bridge instance. `start()` brings everything up; `stop()` takes it down in reverse."""

    def __init__(self, settings: Settings, *, sandbox: bool = False) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.services: Services | None = None
        self.embedded_redis: EmbeddedRedis | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.endpoint: Endpoint | None = None

    async def start(self, *, serve_http: bool = True, esl_wait: float | None = 10.0) -> Services:
        """Bring everything up; if any step fails (or start is cancelled), take down what came up,
        the embedded Redis included, before the exception goes on."""
        try:
            return await self._start(serve_http=serve_http, esl_wait=esl_wait)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, *, serve_http: bool, esl_wait: float | None) -> Services:
        settings = self.settings
        redis_url = settings.redis_url
        cluster = settings.redis_cluster and bool(redis_url)  # the embedded one is a single server
        if not redis_url:
            self.embedded_redis = EmbeddedRedis(Path(settings.data_dir) / "redis")
            # Returns once Redis has loaded its data (not at its first LOADING answer).
            redis_url = await self.embedded_redis.astart()
            self._supervisor = asyncio.create_task(self.embedded_redis.supervise(), name="embedded-redis")
        redis = connect(redis_url, cluster=cluster)
        try:
            await ping(redis)
            await migrate_key_names(redis)  # a Redis an older bridge wrote: once
        except BaseException:
            await redis.aclose()
            raise
        svc = Services(settings, redis)
        svc.embedded_redis = self.embedded_redis
        self.services = svc
        svc.sessions = SessionStore(redis)
        svc.voice_agents = VoiceAgentStore(redis)
        svc.conferences = ConferenceStore(redis)
        svc.supervisors = SupervisorStore(redis)
        timeout = settings.esl_command_timeout_s
        boxes = []
        for target in settings.switches:
            esl = EslClient(target.host, target.port, target.password, command_timeout=timeout)
            switch = Switch(esl, command_timeout=timeout, box=target.box, metrics=svc.metrics)
            boxes.append(SwitchBox(target.box, esl, switch))
            svc.metrics.watch_switch(target.box, esl)
        svc.switches = SwitchPool(boxes)
        svc.calls = CallManager(svc)
        svc.monitors = Monitors(svc)
        await svc.calls.start()
        await _start_optional(svc)
        for box in boxes:
            svc.on_close(box.esl.close)
        # Every box's link comes up in the background; start-up waits for all of them (a bridge
        # that cannot reach one of its boxes says so, as with one box).
        await asyncio.gather(*(box.esl.start(wait=esl_wait) for box in boxes))
        if serve_http:
            app = create_app(svc, sandbox=self.sandbox)
            self._runner = AppRunner(app, access_log=None)  # aiohttp's own errors in the envelope
            await self._runner.setup()
            site = web.TCPSite(self._runner, settings.http_host, settings.http_port)
            await site.start()
            port = settings.http_port
            if port == 0:
                server = site._server
                assert server is not None and server.sockets  # type: ignore[union-attr]
                port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.endpoint = Endpoint(settings.http_host, port)
            if not settings.public_base_url:
                svc.public_base_url = self.endpoint.base_url
            log.info("http_listening", base_url=self.endpoint.base_url)
        return svc

    async def stop(self) -> None:
        """Take down whatever is up, in reverse; safe to call again. The embedded Redis is stopped
        last and whatever happened before."""
        try:
            if self._runner is not None:
                runner, self._runner = self._runner, None
                await runner.cleanup()
            if self.services is not None:
                services, self.services = self.services, None
                await services.close()
        finally:
            if self._supervisor is not None:
                supervisor, self._supervisor = self._supervisor, None
                await cancel_and_wait({supervisor}, what="embedded-redis")
            if self.embedded_redis is not None:
                embedded, self.embedded_redis = self.embedded_redis, None
                await embedded.astop()


async def _start_optional(svc: Services) -> None:
    """Components that live in their own packages start here once they exist."""
    from bridge.media.refresh import TokenRefresher

    await TokenRefresher(svc).start()
    from bridge.calls.dtmf import DtmfRelay

    await DtmfRelay(svc).start()
    from bridge.calls.scheduler import start_scheduler

    await start_scheduler(svc)
    from bridge.calls.supervisors import SupervisionHub

    svc.supervision = SupervisionHub(svc)
    await svc.supervision.start()
    try:
        from bridge.webhooks.service import WebhookService
    except ModuleNotFoundError:
        return
    svc.webhooks = WebhookService(svc)
    await svc.webhooks.start()
    svc.on_close(svc.webhooks.stop)
