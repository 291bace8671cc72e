"""Arbitrary unicode in every API field that can reach FreeSWITCH (issue 13): the bridge answers
4xx, or the command the simulated switch receives parses back (with FreeSWITCH's own splitting,
bridge.sim.arguments) to exactly the value sent. Never a 5xx, never a second argument.

Hypothesis drives a synchronous test, so the sandbox (bridge, simulator, agent WebSocket) runs on
an event loop of its own in a thread, and requests go over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from bridge.sim.arguments import parse_originate, parse_var_block, separate_string, split_command
from tests.conftest import AgentServer, fast_settings
from tests.strategies import hostile_text

T = TypeVar("T")
CALLER = "+14155550100"
HOSTILE = hostile_text(max_size=30)
FIELDS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class ThreadedSandbox:
    """A sandbox on its own loop in a thread; `run` executes a coroutine there."""

    def __init__(self, redis_url: str, tmp_path: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.redis_url, self.tmp_path = redis_url, tmp_path

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        from bridge.sandbox import Sandbox

        self.thread.start()
        self.box = Sandbox(
            fast_settings(self.redis_url, self.tmp_path, rate_limit_per_s=100_000), tenant_id="acme"
        )
        self.agents = AgentServer()
        self.run(self.box.start())
        self.run(self.agents.start())
        self.http = httpx.Client(
            base_url=self.box.info.base_url,
            headers={"Authorization": f"Bearer {self.box.info.admin_key}"},
            timeout=15,
        )

    def stop(self) -> None:
        self.http.close()
        self.run(self.agents.stop())
        self.run(self.box.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        """JSON with \\u escapes (lone surrogates included: they must reach the server)."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        return self.http.post(path, content=json.dumps(body), headers=sent)

    def commands_since(self, mark: int) -> list[str]:
        return self.box.sim.commands()[mark:]

    def agent(self, **fields: Any) -> httpx.Response:
        body = {"name": "bot", "ws_url": self.agents.url, **fields}
        return self.post("/api/v1/voice-agents", body)

    def live_call(self) -> tuple[str, str]:
        """A call the AI is on (through a fresh agent, so each call has its own slot)."""
        reply = self.agent()
        assert reply.status_code == 201, reply.text
        body = {"from": CALLER, "to": "+14155550199", "voice_agent_id": reply.json()["id"]}
        placed = self.post("/sandbox/calls", body)
        assert placed.status_code == 201, placed.text
        call_id = placed.json()["call_id"]
        meta = self.run(self.agents.metadata(call_id))
        return call_id, meta["callback_token"]

    def control(self, call_id: str, token: str, body: dict[str, Any]) -> httpx.Response:
        return self.post(
            f"/api/v1/ai-sessions/{call_id}/control",
            body,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
        )


@pytest.fixture(scope="module")
def box(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedSandbox]:
    sandbox = ThreadedSandbox(redis_url, tmp_path_factory.mktemp("fields"))
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def call(box: ThreadedSandbox) -> tuple[str, str]:
    return box.live_call()


def _refused_or_ok(reply: httpx.Response) -> bool:
    assert reply.status_code < 500, (reply.status_code, reply.text)
    if reply.status_code >= 400:
        body = reply.json()
        assert set(body["detail"]) >= {"code", "message"}, body
        return False
    return True


def _argv(cmd: str, max_args: int = 16) -> list[str]:
    return separate_string(split_command(cmd)[1], " ", max_args)


@FIELDS
@given(HOSTILE)
def test_play_audio_url(box: ThreadedSandbox, call: tuple[str, str], tail: str):
    call_id, token = call
    audio_url = f"https://media.example/{tail}"
    accepted = audio_url.strip()  # verb bodies are trimmed (str_strip_whitespace)
    mark = len(box.box.sim.commands())
    if not _refused_or_ok(box.control(call_id, token, {"event": "play_audio", "audio_url": audio_url})):
        assert box.commands_since(mark) == []
        return
    [sent] = [c for c in box.commands_since(mark) if c.startswith("uuid_broadcast")]
    target, path, leg = _argv(sent)
    variables, source = parse_var_block(path.removeprefix("playback::"))
    assert (target, leg, source) == (call_id, "aleg", f"http_cache://{accepted}")
    assert list(variables) == ["playback_id"]


@FIELDS
@given(HOSTILE)
def test_send_dtmf_digits(box: ThreadedSandbox, call: tuple[str, str], digits: str):
    call_id, token = call
    mark = len(box.box.sim.commands())
    if not _refused_or_ok(box.control(call_id, token, {"event": "send_dtmf", "digits": digits})):
        assert box.commands_since(mark) == []
        return
    [sent] = [c for c in box.commands_since(mark) if c.startswith("uuid_send_dtmf")]
    assert _argv(sent) == [call_id, digits.strip()]


@FIELDS
@given(HOSTILE)
def test_hold_music_url(box: ThreadedSandbox, call: tuple[str, str], tail: str):
    call_id, token = call
    moh_url = f"http://moh.example/{tail}"
    accepted = moh_url.strip()
    mark = len(box.box.sim.commands())
    if not _refused_or_ok(box.control(call_id, token, {"event": "hold", "moh_url": moh_url})):
        assert box.commands_since(mark) == []
        return
    [displace] = [c for c in box.commands_since(mark) if c.startswith("uuid_displace")]
    assert _argv(displace) == [call_id, "start", f"http_cache://{accepted}", "0", "lm"]
    assert box.control(call_id, token, {"event": "unhold"}).status_code == 200
    [stop] = [c for c in box.commands_since(mark) if c.startswith("uuid_displace") and " stop " in c]
    assert _argv(stop) == [call_id, "stop", f"http_cache://{accepted}"]


@FIELDS
@given(HOSTILE, HOSTILE, HOSTILE)
def test_outbound_call_ids_and_numbers(box: ThreadedSandbox, campaign: str, lead: str, to: str):
    mark = len(box.box.sim.commands())
    body = {"to": to, "from": CALLER, "campaign_id": campaign, "lead_id": lead}
    assert not _refused_or_ok(box.post("/api/v1/calls", body))
    assert [c for c in box.commands_since(mark) if c.startswith("originate")] == []


@FIELDS
@given(HOSTILE)
def test_outbound_to_number(box: ThreadedSandbox, digits: str):
    to = "+1" + digits
    mark = len(box.box.sim.commands())
    agent = box.agent().json()["id"]
    body = {"to": to, "from": CALLER, "voice_agent_id": agent}
    if not _refused_or_ok(box.post("/api/v1/calls", body)):
        return
    [originate] = box.run(_wait_for_originate(box, mark))
    parsed = parse_originate(split_command(originate)[1])
    assert parsed is not None and parsed.endpoint.rsplit("/", 1)[1] == to
    assert parsed.variables["bridge_voice_agent_id"] == agent


async def _wait_for_originate(box: ThreadedSandbox, mark: int) -> list[str]:
    for _ in range(200):
        found = [c for c in box.commands_since(mark) if c.startswith("originate")]
        if found:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError("no originate")


@FIELDS
@given(HOSTILE, HOSTILE)
def test_voice_agent_ws_url_and_auth_token_on_a_call(box: ThreadedSandbox, path: str, token: str):
    ws_url = f"{box.agents.url}?x={path}"
    reply = box.agent(ws_url=ws_url, auth_token=token)
    if not _refused_or_ok(reply):
        return
    agent = reply.json()["id"]
    mark = len(box.box.sim.commands())
    body = {"from": CALLER, "to": "+14155550199", "voice_agent_id": agent}
    placed = box.post("/sandbox/calls", body)
    assert placed.status_code == 201, placed.text
    call_id = placed.json()["call_id"]
    box.run(box.agents.metadata(call_id))  # the fork is the last command of the call's setup
    sent = box.commands_since(mark)
    setvars = [c for c in sent if c.startswith("uuid_setvar") and "mod_audio_fork_auth_token" in c]
    expected = [[call_id, "mod_audio_fork_auth_token", token]] if token else []
    assert [_argv(c, 3) for c in setvars] == expected
    [fork] = [c for c in sent if c.startswith("uuid_audio_fork") and "start" in c]
    argv = _argv(fork, 7)
    assert argv[:3] == [call_id, "start", ws_url]
    box.http.delete(f"/sandbox/calls/{call_id}")
