"""`bridge demo-agent` against the sandbox: the bridge forks a simulated call's audio to the demo
agent, which greets with playAudio (played by the bridge with uuid_broadcast), barges in with
killAudio when the simulated caller speaks, and drives verbs with the metadata frame's token."""

from __future__ import annotations

import base64
import json
import math
import shutil
import tempfile
import wave
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import build_parser
from bridge.demo.agent import (
    GREETING,
    PROMPT_RATE,
    SHIPPED_PROMPT,
    AgentConfig,
    Conversation,
    DemoAgent,
    load_prompt,
    play_audio_message,
    render_with_espeak,
    resample,
    rms,
)
from tests.conftest import in_thread
from tests.helpers import commands, place_call, sdk, snapshot, wait_until

PROMPT = load_prompt(use_espeak=False)  # the shipped WAV: the same audio with or without espeak-ng


def tone(ms: int, amplitude: int, rate: int = PROMPT_RATE, hz: int = 440) -> bytes:
    """A sine of `amplitude` (RMS = amplitude / sqrt 2) as mono L16 (little-endian, as on x86)."""
    count = rate * ms // 1000
    step = 2 * math.pi * hz / rate
    return array("h", (int(amplitude * math.sin(step * i)) for i in range(count))).tobytes()


async def start_demo(sandbox: Any, **config: Any) -> DemoAgent:
    cfg = {"base_url": sandbox.info.base_url, "hold_s": 0.3, "max_call_s": 60.0, **config}
    agent = DemoAgent(AgentConfig(**cfg), PROMPT)
    await agent.start("127.0.0.1", 0)
    client = sdk(sandbox)
    va = await in_thread(client.voice_agents.create, name="demo", ws_url=agent.url)
    await in_thread(client.voice_agents.set_as_default, va.id)
    return agent


@pytest.fixture
async def demo(sandbox: Any) -> AsyncIterator[DemoAgent]:
    agent = await start_demo(sandbox)
    try:
        yield agent
    finally:
        await agent.stop()


async def conversation(agent: DemoAgent, call_id: str) -> Conversation:
    async def found() -> Conversation | None:
        return agent.calls.get(call_id)

    return await wait_until(found)


async def broadcast(sandbox: Any, call_id: str) -> str:
    async def sent() -> str | None:
        return next(iter(commands(sandbox, call_id, f"uuid_broadcast {call_id} playback::")), None)

    return await wait_until(sent)


async def logged(sandbox: Any, call_id: str, demo_kind: str) -> list[dict[str, Any]]:
    async def entries() -> list[dict[str, Any]]:
        found = await sandbox.runtime.services.sessions.logs(call_id)
        return [e for e in found if e.get("demo") == demo_kind]

    return await wait_until(entries)


# ---------------------------------------------------------------- against the sandbox


async def test_the_demo_agent_greets_the_caller_and_the_bridge_plays_it(sandbox, demo: DemoAgent):
    call_id = await place_call(sandbox)
    conv = await conversation(demo, call_id)
    assert conv.token.startswith("yt_cb_")  # from the metadata frame
    assert conv.sent[0] == {
        "type": "playAudio",
        "data": {"audioContentType": "raw", "sampleRate": 16000, "textContent": GREETING},
    }
    # mod_audio_fork wrote the audio to a .r16 temp file; the bridge plays that to the caller.
    played = await broadcast(sandbox, call_id)
    path = played.split("playback::", 1)[1].removesuffix(" aleg")
    assert played == f"uuid_broadcast {call_id} playback::{path} aleg" and path.endswith(".tmp.r16")
    assert await in_thread(Path(path).read_bytes) == PROMPT.pcm
    # The caller's audio arrives (the simulator's silence): heard, nothing loud.
    await wait_until(lambda: _true(conv.frames >= 10))
    assert conv.peak_rms == 0 and conv.barge_ins == 0 and conv.utterances == 0


async def test_loud_caller_audio_while_the_greeting_plays_sends_kill_audio(sandbox, demo: DemoAgent):
    sandbox.sim.set_playback_outcome(tempfile.gettempdir(), duration_s=None)  # plays until broken
    call_id = await place_call(sandbox)
    conv = await conversation(demo, call_id)
    await broadcast(sandbox, call_id)
    await wait_until(lambda: _true((snapshot(sandbox, call_id)["playing"] or "").endswith(".tmp.r16")))

    start = conv.frames
    sandbox.sim.speak(call_id, tone(300, amplitude=200))  # quiet: RMS 141, under the threshold
    await wait_until(lambda: _true(conv.frames >= start + 20))
    assert conv.barge_ins == 0 and conv.loud_frames == 0 and 100 < conv.peak_rms < 200

    assert sandbox.sim.speak(call_id, tone(300, amplitude=8000)) == 15  # 15 frames of 20 ms
    await wait_until(lambda: _true(conv.barge_ins == 1))
    assert conv.sent[-1] == {"type": "killAudio"}
    # The simulated mod_audio_fork breaks the playback on killAudio, as the real one does.
    await wait_until(lambda: _true(snapshot(sandbox, call_id)["playing"] is None))
    [barge] = await logged(sandbox, call_id, "barge_in")
    assert barge["rms"] > 5000
    [heard] = await logged(sandbox, call_id, "heard")
    assert heard["ms"] == 300 and 5600 < heard["peak_rms"] <= 8000

    # Loud again, with nothing playing any more: heard and logged, no second killAudio.
    sandbox.sim.speak(call_id, tone(200, amplitude=8000))
    await wait_until(lambda: _true(conv.utterances == 2))
    assert conv.barge_ins == 1 and [f["type"] for f in conv.sent] == ["playAudio", "killAudio"]


async def test_digit_1_puts_the_caller_on_hold_and_back(sandbox, demo: DemoAgent):
    call_id = await place_call(sandbox)
    conv = await conversation(demo, call_id)
    await sandbox.sim.press_digits(call_id, "1")
    await wait_until(lambda: _true(len(commands(sandbox, call_id, "uuid_hold")) == 2), timeout=5)
    assert commands(sandbox, call_id, "uuid_hold") == [f"uuid_hold {call_id}", f"uuid_hold off {call_id}"]
    verbs = [("hold", 200), ("unhold", 200)]
    await wait_until(lambda: _true([v for v in answered(conv) if v[0] != "log"] == verbs))
    assert conv.digits == "1"
    [entry] = await logged(sandbox, call_id, "dtmf")
    assert entry["digit"] == "1"
    assert snapshot(sandbox, call_id)["held"] is False


async def test_digit_2_transfers_the_caller_to_the_queue(sandbox, demo: DemoAgent):
    call_id = await place_call(sandbox)
    conv = await conversation(demo, call_id)
    await sandbox.sim.press_digits(call_id, "2")

    async def transferred() -> bool:
        session = await sandbox.runtime.services.sessions.get(call_id)
        return session.outcome == "transferred_agent_queue"

    await wait_until(transferred)
    await wait_until(lambda: _true(("transfer", 200) in answered(conv)))
    assert any("callcenter:support@default" in c for c in commands(sandbox, call_id, "uuid_transfer"))
    await wait_until(lambda: _true(conv.closed))  # the bridge stopped the fork before the transfer


async def test_the_demo_agent_logs_what_it_heard_and_hangs_up_after_max_call_s(sandbox):
    agent = await start_demo(sandbox, max_call_s=0.6)
    try:
        call_id = await place_call(sandbox)
        conv = await conversation(agent, call_id)

        async def hung_up() -> bool:
            session = await sandbox.runtime.services.sessions.get(call_id)
            return session.outcome == "hangup"

        await wait_until(hung_up)
        [summary] = await logged(sandbox, call_id, "summary")
        assert summary["frames"] >= 10 and summary["loud_frames"] == 0 and summary["peak_rms"] == 0
        await wait_until(lambda: _true(answered(conv)[-2:] == [("log", 200), ("hangup", 200)]))
        assert commands(sandbox, call_id, "uuid_kill") == [f"uuid_kill {call_id} NORMAL_CLEARING"]
    finally:
        await agent.stop()


async def test_a_muted_caller_is_silence_on_the_fork(sandbox, demo: DemoAgent):
    call_id = await place_call(sandbox)
    conv = await conversation(demo, call_id)
    await in_thread(sdk(sandbox).ai_sessions.mute, call_id, callback_token=conv.token, target="caller")
    sandbox.sim.speak(call_id, tone(200, amplitude=8000))
    start = conv.frames
    await wait_until(lambda: _true(conv.frames >= start + 15))
    assert conv.loud_frames == 0 and conv.peak_rms == 0


# ---------------------------------------------------------------- units


def test_rms_and_resampling():
    assert rms(b"") == 0.0 and rms(bytes(640)) == 0.0
    assert rms(array("h", [1000, -1000] * 160).tobytes()) == 1000.0
    assert 5600 < rms(tone(20, amplitude=8000)) < 5700
    one_s = tone(1000, amplitude=8000, rate=22050)
    assert len(resample(one_s, 22050, 16000)) == 2 * 16000
    assert len(resample(one_s, 22050, 8000)) == 2 * 8000
    assert len(resample(tone(1000, 8000, rate=8000), 8000, 16000)) == 2 * 16000
    # Going down averages: a full-scale alternation at the source's Nyquist comes out near silent.
    assert rms(resample(array("h", [8000, -8000] * 8000).tobytes(), 16000, 8000)) < 1


def test_the_shipped_greeting_is_small_and_loads_as_16_khz_l16():
    assert SHIPPED_PROMPT.stat().st_size <= 100_000
    with wave.open(str(SHIPPED_PROMPT)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
    assert PROMPT.source == str(SHIPPED_PROMPT) and PROMPT.text == GREETING
    assert 3.0 < PROMPT.duration_s < 6.0 and len(PROMPT.pcm) % 2 == 0
    assert rms(PROMPT.pcm) > 500  # speech, not silence


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make espeak)")
def test_espeak_renders_the_greeting_at_start():
    pcm = render_with_espeak("Press 1 to hold.")
    assert pcm and rms(pcm) > 500 and 0.5 < len(pcm) / (2 * PROMPT_RATE) < 3.0
    prompt = load_prompt("Press 2 for the queue.")
    assert prompt.source == "espeak-ng" and prompt.text == "Press 2 for the queue."


def test_play_audio_frame_is_what_mod_audio_fork_reads():
    frame = play_audio_message(PROMPT)
    assert frame["type"] == "playAudio"
    data = frame["data"]
    assert (data["audioContentType"], data["sampleRate"], data["textContent"]) == ("raw", 16000, GREETING)
    assert base64.b64decode(data["audioContent"]) == PROMPT.pcm
    assert len(json.dumps(frame)) < 650 * 1024  # audio_pipe.cpp MAX_RECV_BUF_SIZE: longer is dropped


def test_the_cli_has_a_demo_agent_command():
    args = build_parser().parse_args(["demo-agent"])
    assert (args.host, args.port, args.base_url) == ("127.0.0.1", 9000, "http://127.0.0.1:8080")
    args = build_parser().parse_args(
        ["demo-agent", "--port", "9100", "--max-call-s", "30", "--queue", "sales"]
    )
    assert (args.port, args.max_call_s, args.queue) == (9100, 30.0, "sales")


def answered(conv: Conversation) -> list[tuple[str, int]]:
    """The verbs the agent sent and the bridge's status for each, in the order answered."""
    return [(verb, status) for verb, status, _ in conv.verbs]


async def _true(value: bool) -> bool:
    return value

