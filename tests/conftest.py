"""Shared fixtures: a real Redis (REDIS_URL, else a redis-server the tests start themselves)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from hypothesis import settings as hypothesis_settings

from bridge.config import Settings
from bridge.store.embedded import EmbeddedRedis
from bridge.store.redis import RedisClient, connect
from tests.sim_helpers import RawEsl

# CI runs the property tests derandomized (the same examples each run, nothing stored), so a red
# run is reproducible from its log; locally they explore, and keep what failed in .hypothesis/.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master Redis Cluster's URL (`redis+cluster://127.0.0.1:<port>`): REDIS_CLUSTER_URL
    if set, else one started for the session from the redis-server the other tests use
    (tests/redis_cluster.py). Tests that take it share it; use the `redis` fixture's flush, or
    keys of your own, for isolation (a cluster has database 0 only)."""
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    from tests.redis_cluster import redis_cluster

    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster.url


def on_cluster() -> bool:
    """BRIDGE_TEST_REDIS=cluster: the `redis_url` fixture (so `redis` and every sandbox) is the cluster."""
    return os.environ.get("BRIDGE_TEST_REDIS", "").strip().lower() == "cluster"


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if on_cluster():
        yield request.getfixturevalue("redis_cluster_url")
        return
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="bridge-test-redis-") as tmp:
        server = EmbeddedRedis(Path(tmp), persistent=False)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of the test Redis, emptied first (FLUSHDB; on a cluster, on every master)."""
    client = connect(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


# ---------------------------------------------------------------- sandbox: bridge + simulator + Redis


T = TypeVar("T")


def fast_settings(redis_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with every timer compressed so a test runs in seconds."""
    base = Settings().with_(
        redis_url=redis_url,
        http_host="127.0.0.1",
        http_port=0,
        data_dir=tmp_path,
        recordings_dir=str(tmp_path / "recordings"),
        webhook_retry_schedule_s=(0.2, 0.4, 0.6, 0.8, 1.0, 1.2),
        webhook_timeout_s=2.0,
        webhook_allow_loopback_http=True,
        esl_command_timeout_s=5.0,
        scheduler_interval_s=0.1,
    )
    return base.with_(**overrides)


@pytest.fixture
def settings(redis_url: str, redis: aioredis.Redis, tmp_path: Path) -> Settings:
    return fast_settings(redis_url, tmp_path)


@pytest.fixture
async def sandbox(settings: Settings) -> AsyncIterator[Any]:
    from bridge.sandbox import Sandbox

    box = Sandbox(settings, tenant_id="acme")
    await box.start()
    try:
        yield box
    finally:
        await box.stop()


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The official SDK is synchronous: run it off the event loop that serves the bridge."""
    return await asyncio.to_thread(fn, *args, **kwargs)


class AgentServer:
    """A voice AI's WebSocket endpoint: records what the audio fork sends it."""

    def __init__(
        self, *, subprotocols: tuple[str, ...] = ("audio.drachtio.org", "audio.jambonz.org")
    ) -> None:
        self.subprotocols = subprotocols
        self.connections: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        # Close the forks' sockets first: aiohttp's cleanup otherwise waits out its shutdown
        # timeout (60 s) for handlers still reading from a call that was never hung up. A fork
        # still in its handshake now is not listed yet: it closes itself once it is (_handle),
        # which is what hung a teardown whose calls were still being answered.
        self._stopping = True
        for conn in self.connections:
            if not conn["closed"]:
                await conn["ws"].close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=self.subprotocols)
        await ws.prepare(request)
        conn: dict[str, Any] = {
            "ws": ws,
            "headers": dict(request.headers),
            "protocol": ws.ws_protocol,
            "texts": [],
            "binary_frames": 0,
            "closed": False,
        }
        self.connections.append(conn)
        if self._stopping:
            await ws.close()
        async with self._changed:
            self._changed.notify_all()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                conn["texts"].append(json.loads(msg.data))
                async with self._changed:
                    self._changed.notify_all()
            elif msg.type == WSMsgType.BINARY:
                conn["binary_frames"] += 1
                async with self._changed:
                    self._changed.notify_all()
        conn["closed"] = True
        async with self._changed:
            self._changed.notify_all()
        return ws

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        async def _wait() -> T:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(_wait(), timeout)

    async def metadata(self, call_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The first text frame of the connection for `call_id`."""

        def find() -> dict[str, Any] | None:
            for conn in self.connections:
                if conn["texts"] and conn["texts"][0].get("call_id") == call_id:
                    return conn["texts"][0]
            return None

        return await self.wait_for(find, timeout)

    def connection(self, call_id: str) -> dict[str, Any]:
        for conn in self.connections:
            if conn["texts"] and conn["texts"][0].get("call_id") == call_id:
                return conn
        raise KeyError(call_id)


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    """A customer's webhook endpoint (tests/webhook_receiver.Receiver), not subscribed to anything;
    modules that want one subscribed through the API define their own `receiver`."""
    from tests.webhook_receiver import Receiver  # it imports tests.helpers, which imports this module

    rec = Receiver()
    await rec.start()
    try:
        yield rec
    finally:
        await rec.stop()


@pytest.fixture
async def agent_server() -> AsyncIterator[AgentServer]:
    server = AgentServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def esl(sim: Any) -> AsyncIterator[RawEsl]:
    """A raw ESL connection to the module's `sim` fixture (the simulator tests define `sim`)."""
    client = await RawEsl.connect(sim.port)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def sims() -> AsyncIterator[Any]:
    """Two simulated FreeSWITCH boxes, `a` and `b`, each a real ESL server (docs/scaling.md)."""
    from bridge.sim.server import SwitchSimulator

    boxes = {name: SwitchSimulator(switchname=f"box-{name}") for name in ("a", "b")}
    for sim in boxes.values():
        await sim.start()
    try:
        yield boxes
    finally:
        for sim in boxes.values():
            await sim.stop()
