"""mod_audio_fork, as built by `make freeswitch` (Debian's libwebsockets), really streams a call's
audio: the metadata text frame first, then 640-byte binary frames (16 kHz mono, 20 ms), ~50 a second."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web

from tests.freeswitch.conftest import FreeSwitch
from tests.sim_helpers import RawEsl

pytestmark = pytest.mark.freeswitch

SUBPROTOCOL = "audio.drachtio.org"  # mod_audio_fork's default MOD_AUDIO_FORK_SUBPROTOCOL_NAME


class Agent:
    """A WebSocket endpoint that records what one fork sends."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.binary: list[tuple[float, int]] = []  # (arrival time, frame length)
        self.protocol: str | None = None
        self.headers: dict[str, str] = {}
        self.connected = asyncio.Event()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        self.protocol = ws.ws_protocol
        self.headers = dict(request.headers)
        self.connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.texts.append(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.binary.append((time.monotonic(), len(msg.data)))
        return ws


@pytest.fixture
async def agent() -> AsyncIterator[tuple[Agent, int]]:
    agent = Agent()
    app = web.Application()
    app.router.add_get("/fork", agent.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield agent, port
    finally:
        await runner.cleanup()


async def test_the_fork_sends_metadata_then_16k_mono_frames(
    freeswitch: FreeSwitch, fs_esl: RawEsl, agent: tuple[Agent, int]
):
    ws, port = agent
    before = len(freeswitch.log_text())
    # loopback-b answers and echoes (extension 9196); loopback-a plays a tone into it, so the
    # a-leg reads its own tone back: that read audio is what a mono fork streams.
    reply = await fs_esl.api(
        "originate loopback/9196/lab &playback(tone_stream://%(1000,0,440);loops=-1)", timeout=15
    )
    assert reply.startswith("+OK "), reply
    uuid = reply.split()[1]
    try:
        metadata = json.dumps({"call": "fork-check"}, separators=(",", ":"))
        started = await fs_esl.api(
            f"uuid_audio_fork {uuid} start ws://127.0.0.1:{port}/fork mono 16k {metadata}"
        )
        assert started.startswith("+OK"), started
        await asyncio.wait_for(ws.connected.wait(), 10)
        await asyncio.sleep(2.0)
        stopped = await fs_esl.api(f"uuid_audio_fork {uuid} stop")
        assert stopped.startswith("+OK"), stopped
    finally:
        await fs_esl.api(f"uuid_kill {uuid}")
    assert ws.protocol == SUBPROTOCOL
    assert "Authorization" not in ws.headers  # a stock mod_audio_fork sends none (freeswitch-conf/README.md)
    assert ws.texts[0] == metadata
    # 640-byte frames (20 ms of 16 kHz mono L16). On a loaded machine the module's send loop
    # sometimes finds two frames buffered and writes them as one message (1280 bytes, seen in a
    # CI-style run), so the rate is judged in audio, not in messages.
    sizes = [size for _, size in ws.binary]
    assert sizes and all(size % 640 == 0 for size in sizes), set(sizes)
    assert sizes.count(640) >= 0.9 * len(sizes), sizes
    times = [t for t, _ in ws.binary]
    rate = (sum(sizes[1:]) / 640) / (times[-1] - times[0])
    assert 40 <= rate <= 60, rate
    assert FreeSwitch.severe_lines(freeswitch.log_text()[before:]) == []
