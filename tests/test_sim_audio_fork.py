"""mod_audio_fork emulation against a real aiohttp WebSocket server."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import RawEsl, named, running_sim


class AgentWs:
    """A WebSocket server standing in for the voice AI: records everything it receives."""

    def __init__(self, protocols: tuple[str, ...] = ("audio.drachtio.org", "audio.jambonz.org")) -> None:
        self.protocols = protocols
        self.conns: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for conn in self.conns:
            if not conn["ws"].closed:
                await conn["ws"].close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=self.protocols)
        await ws.prepare(request)
        conn: dict[str, Any] = {
            "ws": ws,
            "protocol": ws.ws_protocol,
            "headers": dict(request.headers),
            "path": request.path,
            "messages": [],  # ("text", str) | ("binary", bytes length)
            "binary_at": [],
            "closed": False,
        }
        self.conns.append(conn)
        self.changed.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                conn["messages"].append(("text", msg.data))
            elif msg.type == WSMsgType.BINARY:
                conn["messages"].append(("binary", len(msg.data)))
                conn["binary_at"].append(time.monotonic())
            self.changed.set()
        conn["closed"] = True
        self.changed.set()
        return ws

    async def wait(self, predicate: Any, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError("agent server condition not met")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass

    def texts(self, i: int = 0) -> list[str]:
        return [m for kind, m in self.conns[i]["messages"] if kind == "text"]

    def binaries(self, i: int = 0) -> list[int]:
        return [m for kind, m in self.conns[i]["messages"] if kind == "binary"]


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    async with running_sim(answer_delay_s=0.01, audio_frame_ms=20) as switch:
        yield switch


@pytest.fixture
async def agent() -> AsyncIterator[AgentWs]:
    server = AgentWs()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def call(sim: SwitchSimulator, esl: RawEsl) -> str:
    uuid = await sim.place_inbound_call("+15550001", "+15559999")
    await esl.api(f"uuid_answer {uuid}")
    return uuid


def start_cmd(
    uuid: str, url: str, meta: dict[str, Any] | None, bug: str = "ai_fork", rate: str = "16k"
) -> str:
    parts = [uuid, "start", url, "mono", rate, bug]
    if meta is not None:
        parts.append(json.dumps(meta))
    return "uuid_audio_fork ^^|" + "|".join(parts)


async def test_fork_connects_with_subprotocol_and_token_sends_metadata_first_then_paced_audio(
    sim, esl, agent
):
    uuid = await call(sim, esl)
    await esl.api(f"uuid_setvar {uuid} mod_audio_fork_subprotocol audio.jambonz.org")
    await esl.api(f"uuid_setvar {uuid} mod_audio_fork_auth_token s3cret")
    meta = {"call_id": uuid, "note": "two words", "nested": {"a": [1, 2]}}
    assert await esl.api(start_cmd(uuid, agent.url, meta)) == "+OK Success\n"

    await esl.wait_event(named("mod_audio_fork::connect"))
    bug = next(e for e in esl.of(uuid) if e.name == "MEDIA_BUG_START")
    assert bug.get("Media-Bug-Function") == "ai_fork"
    conn = await agent.wait(lambda: agent.conns and agent.conns[0])
    assert conn["protocol"] == "audio.jambonz.org"
    assert conn["headers"].get("Authorization") == "Bearer s3cret"
    assert conn["path"] == "/stream"
    await agent.wait(lambda: len(agent.binaries()) >= 15)
    kind, first = conn["messages"][0]
    assert kind == "text" and json.loads(first) == meta
    assert set(agent.binaries()) == {640}  # 20 ms of 16 kHz 16-bit mono silence
    gaps = [b - a for a, b in zip(conn["binary_at"], conn["binary_at"][1:], strict=False)]
    assert 0.012 < statistics.mean(gaps) < 0.03
    snap = sim.snapshot(uuid)["audio_fork"]
    assert snap["connected"] is True and snap["url"] == agent.url and snap["bugname"] == "ai_fork"
    assert snap["frames_sent"] >= 15


async def test_default_subprotocol_no_token_and_8k_frames(sim, esl, agent):
    uuid = await call(sim, esl)
    assert await esl.api(start_cmd(uuid, agent.url, None, bug="b2", rate="8k")) == "+OK Success\n"
    await agent.wait(lambda: agent.conns and len(agent.binaries()) >= 3)
    assert agent.conns[0]["protocol"] == "audio.drachtio.org"
    assert "Authorization" not in agent.conns[0]["headers"]
    assert agent.conns[0]["messages"][0] == ("binary", 320)  # no metadata: audio straight away


async def test_send_text_reaches_the_server_and_needs_a_fork(sim, esl, agent):
    uuid = await call(sim, esl)
    fail = f"uuid_audio_fork ^^|{uuid}|send_text|ai_fork|" + '{"type":"dtmf"}'
    assert await esl.api(fail) == "-ERR Operation Failed\n"
    await esl.api(start_cmd(uuid, agent.url, {"m": 1}))
    await esl.wait_event(named("mod_audio_fork::connect"))
    payload = json.dumps({"type": "dtmf", "digit": "5", "note": "a b"})
    assert await esl.api(f"uuid_audio_fork ^^|{uuid}|send_text|ai_fork|{payload}") == "+OK Success\n"
    await agent.wait(lambda: payload in agent.texts())


async def test_server_messages_become_mod_audio_fork_events(sim, esl, agent):
    uuid = await call(sim, esl)
    await esl.api(start_cmd(uuid, agent.url, None))
    await esl.wait_event(named("mod_audio_fork::connect"))
    ws = (await agent.wait(lambda: agent.conns and agent.conns[0]))["ws"]
    await ws.send_str(json.dumps({"type": "transcription", "data": {"text": "hi there", "final": True}}))
    await ws.send_str(json.dumps({"type": "json", "data": {"x": 1}}))
    await ws.send_str(json.dumps({"type": "transfer", "data": {"to": "sales"}}))
    await ws.send_str("not json")
    await ws.send_str(json.dumps({"type": "error", "data": {"code": 7}}))
    transcription = await esl.wait_event(named("mod_audio_fork::transcription"))
    assert transcription.unique_id == uuid
    assert transcription.body == '{"text":"hi there","final":true}'
    assert (await esl.wait_event(named("mod_audio_fork::json"))).body == '{"type":"json","data":{"x":1}}'
    assert (await esl.wait_event(named("mod_audio_fork::transfer"))).body == '{"to":"sales"}'
    assert (await esl.wait_event(named("mod_audio_fork::error"))).body == '{"code":7}'
    # a "disconnect" message is only an event: the call and the socket stay up
    await ws.send_str(json.dumps({"type": "disconnect", "data": {"reason": "done"}}))
    assert (await esl.wait_event(named("mod_audio_fork::disconnect"))).body == '{"reason":"done"}'
    assert sim.snapshot(uuid)["audio_fork"]["connected"] is True


async def test_kill_audio_breaks_the_current_playback(sim, esl, agent):
    uuid = await call(sim, esl)
    await esl.api(start_cmd(uuid, agent.url, None))
    await esl.wait_event(named("mod_audio_fork::connect"))
    await esl.api(f"uuid_broadcast {uuid} endless_playback::local_stream://moh aleg")
    await esl.wait_event(named("PLAYBACK_START"))
    ws = agent.conns[0]["ws"]
    await ws.send_str(json.dumps({"type": "killAudio"}))
    await esl.wait_event(named("mod_audio_fork::kill_audio"))
    assert (await esl.wait_event(named("PLAYBACK_STOP"))).get("Playback-Status") == "break"


async def test_play_audio_writes_a_file_and_reports_its_path(sim, esl, agent):
    uuid = await call(sim, esl)
    await esl.api(start_cmd(uuid, agent.url, None))
    await esl.wait_event(named("mod_audio_fork::connect"))
    data = {"audioContentType": "raw", "sampleRate": 8000, "audioContent": "AAAAAA=="}
    await agent.conns[0]["ws"].send_str(json.dumps({"type": "playAudio", "data": data}))
    event = await esl.wait_event(named("mod_audio_fork::play_audio"))
    body = json.loads(event.body)
    assert "audioContent" not in body and body["file"].endswith(".tmp.r8")
    content = await asyncio.to_thread(Path(body["file"]).read_bytes)
    assert content == b"\x00\x00\x00\x00"


async def test_server_close_fires_disconnect_without_a_body(sim, esl, agent):
    uuid = await call(sim, esl)
    await esl.api(start_cmd(uuid, agent.url, None))
    await esl.wait_event(named("mod_audio_fork::connect"))
    await agent.conns[0]["ws"].close()
    event = await esl.wait_event(named("mod_audio_fork::disconnect"))
    assert event.body is None and event.unique_id == uuid
    assert sim.snapshot(uuid)["audio_fork"]["connected"] is False
    assert sim.snapshot(uuid)["hangup_cause"] is None  # the call is not hung up


async def test_stop_closes_gracefully_without_a_disconnect_event(sim, esl, agent):
    uuid = await call(sim, esl)
    await esl.api(start_cmd(uuid, agent.url, None))
    await esl.wait_event(named("mod_audio_fork::connect"))
    assert await esl.api(f"uuid_audio_fork {uuid} stop ai_fork") == "+OK Success\n"
    await agent.wait(lambda: agent.conns[0]["closed"])
    stop = await esl.wait_event(named("MEDIA_BUG_STOP"))
    assert stop.get("Media-Bug-Function") == "ai_fork"
    await esl.settle(0.1)
    assert "mod_audio_fork::disconnect" not in esl.names(uuid)
    assert sim.snapshot(uuid)["audio_fork"] is None
    assert await esl.api(f"uuid_audio_fork {uuid} stop ai_fork") == "-ERR Operation Failed\n"


async def test_connect_failed_on_a_dead_url(sim, esl):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    uuid = await call(sim, esl)
    assert await esl.api(start_cmd(uuid, f"ws://127.0.0.1:{dead}/x", {"a": 1})) == "+OK Success\n"
    event = await esl.wait_event(named("mod_audio_fork::connect_failed"))
    assert event.unique_id == uuid
    assert event.body == '{"reason":"Unable to connect"}'  # what the real 1.10.12 + lws sent
    assert sim.snapshot(uuid)["audio_fork"]["state"] == "failed"
    # the bug stays attached until stopped, so the same bugname cannot start again
    assert await esl.api(start_cmd(uuid, f"ws://127.0.0.1:{dead}/x", None)) == "-ERR Operation Failed\n"


async def test_second_start_with_the_same_bugname_fails_another_bugname_works(sim, esl, agent):
    uuid = await call(sim, esl)
    assert await esl.api(start_cmd(uuid, agent.url, None)) == "+OK Success\n"
    assert await esl.api(start_cmd(uuid, agent.url, None)) == "-ERR Operation Failed\n"
    assert await esl.api(start_cmd(uuid, agent.url, None, bug="second")) == "+OK Success\n"
    await agent.wait(lambda: len(agent.conns) == 2)
    assert [f["bugname"] for f in sim.snapshot(uuid)["audio_forks"]] == ["ai_fork", "second"]


async def test_pause_stops_audio_and_resume_restarts_it(sim, esl, agent):
    uuid = await call(sim, esl)
    await esl.api(start_cmd(uuid, agent.url, None))
    await agent.wait(lambda: agent.conns and len(agent.binaries()) >= 3)
    assert await esl.api(f"uuid_audio_fork {uuid} pause ai_fork") == "+OK Success\n"
    await asyncio.sleep(0.05)
    paused_at = len(agent.binaries())
    await asyncio.sleep(0.15)
    assert len(agent.binaries()) <= paused_at + 1
    assert await esl.api(f"uuid_audio_fork {uuid} resume ai_fork") == "+OK Success\n"
    await agent.wait(lambda: len(agent.binaries()) >= paused_at + 4)
    assert await esl.api(f"uuid_audio_fork {uuid} pause nope") == "-ERR Operation Failed\n"


async def test_hangup_closes_the_websocket(sim, esl, agent):
    uuid = await call(sim, esl)
    await esl.api(start_cmd(uuid, agent.url, None))
    await esl.wait_event(named("mod_audio_fork::connect"))
    await sim.hangup(uuid)
    await agent.wait(lambda: agent.conns[0]["closed"])
    await esl.wait_event(named("CHANNEL_DESTROY"))
    assert "mod_audio_fork::disconnect" not in esl.names(uuid)
    assert "MEDIA_BUG_STOP" in esl.names(uuid)


async def test_usage_and_failure_replies(sim, esl):
    uuid = await call(sim, esl)
    assert (await esl.api(f"uuid_audio_fork {uuid} start ws://x")).startswith("-USAGE: <uuid> [start | stop")
    assert (await esl.api(f"uuid_audio_fork {uuid}")).startswith("-USAGE:")
    missing = "uuid_audio_fork 00000000-0000-0000-0000-000000000000 start ws://127.0.0.1:1/ mono 16k"
    assert await esl.api(missing) == "-ERR Operation Failed\n"


async def test_space_split_metadata_without_bugname_is_misassigned_like_the_real_module(sim, esl, agent):
    uuid = await call(sim, esl)
    reply = await esl.api(f'uuid_audio_fork {uuid} start {agent.url} mono 16k {{"a": "b c"}}')
    assert reply == "+OK Success\n"
    await agent.wait(lambda: agent.conns and agent.conns[0]["messages"])
    assert agent.conns[0]["messages"][0] == ("text", '"b c"}')
    assert sim.snapshot(uuid)["audio_fork"]["bugname"] == '{"a":'
