"""`bridge demo-agent`: a small voice agent that closes the loop (docs/voice-agents.md, "Demo agent").

It is the WebSocket end of the bridge's audio fork (drachtio mod_audio_fork, subprotocol
audio.drachtio.org):

- reads the metadata frame (call_id, callback_token) and greets the caller with one
  mod_audio_fork `playAudio` frame: a prompt rendered by `espeak-ng` at start when it is on
  PATH, otherwise the WAV shipped beside this module, sent as 16 kHz mono L16;
- listens: the RMS of every incoming L16 frame; `barge_in_frames` frames in a row at or over
  `barge_in_rms` while the greeting is still playing send `{"type": "killAudio"}`, and each
  utterance (such a run of loud frames) is written to the call's log with the `log` verb;
- acts on the caller's keys, which the bridge passes on as `{"type": "dtmf", "digit"}` frames:
  1 puts the caller on hold for `hold_s` seconds (`hold`, then `unhold`), 2 transfers to the
  queue (`transfer`, `agent_queue`);
- after `max_call_s` logs what it heard (frames, loud frames, peak RMS) and hangs up (`hangup`).

Verbs go to POST /api/v1/ai-sessions/{call_id}/control with the call's callback token (plain
HTTP, so the bridge needs no SDK at run time); a `token_refresh` frame replaces the token.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import shutil
import subprocess
import sys
import time
import uuid
import wave
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import WSMsgType, web

log = structlog.get_logger(__name__)

SUBPROTOCOLS = ("audio.drachtio.org", "audio.jambonz.org")
PROMPT_RATE = 16000
GREETING = "Hello, this is the bridge demo agent. Press 1 to hold, or 2 for the queue."
SHIPPED_PROMPT = Path(__file__).with_name("greeting.wav")


# ---------------------------------------------------------------- audio


def rms(frame: bytes) -> float:
    """Root mean square of little-endian signed 16-bit samples (0 for an empty frame)."""
    samples = array("h")
    samples.frombytes(frame[: len(frame) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resampling of mono L16, good enough for a spoken prompt: linear interpolation going up,
    the mean of the input samples each output sample spans going down (a crude low-pass)."""
    if src_rate == dst_rate:
        return pcm
    src = array("h")
    src.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":
        src.byteswap()
    if len(src) < 2:
        return pcm
    count = len(src) * dst_rate // src_rate
    step = src_rate / dst_rate
    out = array("h", bytes(2 * count))
    last = len(src) - 1
    for i in range(count):
        pos = i * step
        j = int(pos)
        if step > 1:
            hi = min(len(src), max(j + 1, int(pos + step)))
            out[i] = sum(src[j:hi]) // (hi - j)
            continue
        if j >= last:
            out[i] = src[last]
            continue
        frac = pos - j
        out[i] = int(src[j] + (src[j + 1] - src[j]) * frac)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def wav_to_l16(data: bytes, rate: int = PROMPT_RATE) -> bytes:
    """A 16-bit PCM WAV (mono or stereo, any rate) as mono L16 at `rate`."""
    with wave.open(io.BytesIO(data)) as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("the prompt must be 16-bit PCM")
        frames = wav.readframes(wav.getnframes())
        if wav.getnchannels() == 2:
            both = array("h")
            both.frombytes(frames)
            frames = array("h", both[::2]).tobytes()  # the left channel
        return resample(frames, wav.getframerate(), rate)


def l16_to_wav(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buf.getvalue()


@dataclass(frozen=True)
class Prompt:
    pcm: bytes  # mono L16 at PROMPT_RATE
    text: str
    source: str  # "espeak-ng" or the shipped file's path

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (2 * PROMPT_RATE)


def render_with_espeak(text: str, timeout_s: float = 20.0) -> bytes | None:
    """`text` spoken by espeak-ng as mono L16 at PROMPT_RATE, or None without espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--stdout", "-s", "165", text], capture_output=True, check=True, timeout=timeout_s
        ).stdout
        return wav_to_l16(out)
    except (OSError, subprocess.SubprocessError, wave.Error, EOFError, ValueError) as exc:
        log.warning("espeak_failed", error=str(exc))
        return None


def load_prompt(text: str = GREETING, *, use_espeak: bool = True) -> Prompt:
    """The greeting: rendered now with espeak-ng when it is installed, else the shipped WAV
    (which says GREETING whatever `text` is)."""
    pcm = render_with_espeak(text) if use_espeak else None
    if pcm:
        return Prompt(pcm, text, "espeak-ng")
    return Prompt(wav_to_l16(SHIPPED_PROMPT.read_bytes()), GREETING, str(SHIPPED_PROMPT))


def play_audio_message(prompt: Prompt) -> dict[str, Any]:
    """mod_audio_fork's playAudio (lws_glue.cpp processIncomingMessage): raw L16 + sampleRate
    becomes a .r16 temp file, reported in mod_audio_fork::play_audio, which the bridge plays.
    audioContentType must be there: the module strcmp()s it unchecked."""
    return {
        "type": "playAudio",
        "data": {
            "audioContentType": "raw",
            "sampleRate": PROMPT_RATE,
            "audioContent": base64.b64encode(prompt.pcm).decode("ascii"),
            "textContent": prompt.text,
        },
    }


KILL_AUDIO: dict[str, Any] = {"type": "killAudio"}
KEEP_CALLS = 100  # conversations kept in DemoAgent.calls after they end


# ---------------------------------------------------------------- the agent


@dataclass(frozen=True)
class AgentConfig:
    base_url: str = "http://127.0.0.1:8080"
    barge_in_rms: float = 1000.0  # about -30 dBFS; the fork's silence is 0, speech is thousands
    barge_in_frames: int = 5  # in a row: 100 ms of 20 ms frames
    max_call_s: float = 120.0
    hold_s: float = 10.0
    queue: str = "support"
    request_timeout_s: float = 10.0


@dataclass
class Conversation:
    """One call as the agent sees it; kept after the call for whoever wants to look (tests)."""

    call_id: str
    token: str
    sample_rate: int
    started: float = field(default_factory=time.monotonic)
    speaking_until: float = 0.0  # monotonic time the greeting is expected to end
    frames: int = 0
    loud_frames: int = 0
    peak_rms: float = 0.0
    loud_run: int = 0  # consecutive loud frames now
    run_peak: float = 0.0
    utterances: int = 0
    barge_ins: int = 0
    digits: str = ""
    held: bool = False
    sent: list[dict[str, Any]] = field(default_factory=list)  # text frames the agent sent
    verbs: list[tuple[str, int, Any]] = field(default_factory=list)  # (event, status, answer)
    closed: bool = False

    @property
    def speaking(self) -> bool:
        return time.monotonic() < self.speaking_until

    def heard(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "loud_frames": self.loud_frames,
            "peak_rms": round(self.peak_rms),
            "utterances": self.utterances,
            "barge_ins": self.barge_ins,
            "digits": self.digits,
        }


class DemoAgent:
    def __init__(self, config: AgentConfig | None = None, prompt: Prompt | None = None) -> None:
        self.config = config or AgentConfig()
        self.prompt = prompt or load_prompt()
        self.calls: dict[str, Conversation] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sockets: set[web.WebSocketResponse] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 9000) -> str:
        """Serve the fork on ws://host:port/<any path>; returns the URL with /ws (port 0: any)."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s))
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://{host}:{bound}/ws"
        return self.url

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ the fork

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=SUBPROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        conv: Conversation | None = None
        timers: list[asyncio.Task[Any]] = []
        try:
            first = await ws.receive(timeout=10.0)
            meta = json.loads(first.data) if first.type == WSMsgType.TEXT else {}
            if not isinstance(meta, dict) or not meta.get("call_id") or not meta.get("callback_token"):
                log.warning("demo_agent_no_metadata", frame_type=str(first.type))
                return ws
            audio_format = meta.get("audio_format") or {}
            conv = Conversation(
                call_id=str(meta["call_id"]),
                token=str(meta["callback_token"]),
                sample_rate=int(audio_format.get("sample_rate_hz") or PROMPT_RATE),
            )
            self.calls[conv.call_id] = conv
            while len(self.calls) > KEEP_CALLS:
                del self.calls[next(iter(self.calls))]
            log.info("demo_agent_call", call_id=conv.call_id, caller=meta.get("from"), to=meta.get("to"))
            await self._say(ws, conv)
            timers.append(self._spawn(self._hang_up_later(conv)))
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await self._hear(ws, conv, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._on_text(conv, msg.data, timers)
        except (TimeoutError, ValueError, ConnectionError) as exc:
            log.info("demo_agent_fork_error", error=str(exc))
        finally:
            self._sockets.discard(ws)
            for timer in timers:
                timer.cancel()
            if conv is not None:
                conv.closed = True
                log.info("demo_agent_call_over", call_id=conv.call_id, **conv.heard())
        return ws

    async def _send(self, ws: web.WebSocketResponse, conv: Conversation, message: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(message))
        if isinstance(message.get("data"), dict):  # keep the record small: no base64
            message = {**message, "data": {k: v for k, v in message["data"].items() if k != "audioContent"}}
        conv.sent.append(message)

    async def _say(self, ws: web.WebSocketResponse, conv: Conversation) -> None:
        await self._send(ws, conv, play_audio_message(self.prompt))
        conv.speaking_until = time.monotonic() + self.prompt.duration_s

    async def _hear(self, ws: web.WebSocketResponse, conv: Conversation, frame: bytes) -> None:
        cfg = self.config
        level = rms(frame)
        conv.frames += 1
        conv.peak_rms = max(conv.peak_rms, level)
        if level >= cfg.barge_in_rms:
            conv.loud_frames += 1
            conv.loud_run += 1
            conv.run_peak = max(conv.run_peak, level)
            if conv.loud_run == cfg.barge_in_frames and conv.speaking:
                conv.speaking_until = 0.0
                conv.barge_ins += 1
                await self._send(ws, conv, KILL_AUDIO)
                self._verb(conv, {"event": "log", "metadata": {"demo": "barge_in", "rms": round(level)}})
            return
        if conv.loud_run >= cfg.barge_in_frames:
            conv.utterances += 1
            frame_ms = len(frame) * 1000 // (2 * conv.sample_rate) or 20
            heard = {"demo": "heard", "ms": conv.loud_run * frame_ms, "peak_rms": round(conv.run_peak)}
            self._verb(conv, {"event": "log", "metadata": heard})
        conv.loud_run = 0
        conv.run_peak = 0.0

    def _on_text(self, conv: Conversation, text: str, timers: list[asyncio.Task[Any]]) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "token_refresh" and isinstance(msg.get("callback_token"), str):
            conv.token = msg["callback_token"]
        elif kind == "dtmf" and isinstance(msg.get("digit"), str):
            digit = msg["digit"]
            conv.digits += digit
            self._verb(conv, {"event": "log", "metadata": {"demo": "dtmf", "digit": digit}})
            if digit == "1" and not conv.held:
                conv.held = True
                timers.append(self._spawn(self._hold(conv)))
            elif digit == "2":
                dest = {"destination_type": "agent_queue", "destination": self.config.queue}
                self._verb(conv, {"event": "transfer", **dest})

    # ------------------------------------------------------------ verbs

    def _verb(self, conv: Conversation, body: dict[str, Any]) -> asyncio.Task[Any]:
        return self._spawn(self.control(conv, body))

    async def control(self, conv: Conversation, body: dict[str, Any]) -> tuple[int, Any]:
        """One verb with the call's callback token; (status, answer), (0, error) if unreachable."""
        assert self._http is not None
        url = f"{self.config.base_url.rstrip('/')}/api/v1/ai-sessions/{conv.call_id}/control"
        headers = {"Authorization": f"Bearer {conv.token}", "Idempotency-Key": str(uuid.uuid4())}
        try:
            async with self._http.post(url, json=body, headers=headers) as resp:
                status = resp.status
                answer: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            status, answer = 0, str(exc)
        conv.verbs.append((body["event"], status, answer))
        level = "info" if status == 200 else "warning"
        getattr(log, level)("demo_agent_verb", call_id=conv.call_id, verb=body["event"], status=status)
        return status, answer

    async def _hold(self, conv: Conversation) -> None:
        try:
            status, _ = await self.control(conv, {"event": "hold"})
            if status == 200:
                await asyncio.sleep(self.config.hold_s)
                await self.control(conv, {"event": "unhold"})
        finally:
            conv.held = False

    async def _hang_up_later(self, conv: Conversation) -> None:
        await asyncio.sleep(self.config.max_call_s)
        # Not in the call's timers: the hangup closes the fork before the bridge answers it.
        self._spawn(self._hang_up(conv))

    async def _hang_up(self, conv: Conversation) -> None:
        await self.control(conv, {"event": "log", "metadata": {"demo": "summary", **conv.heard()}})
        await self.control(conv, {"event": "hangup", "metadata": {"reason": "demo max_call_s reached"}})


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = AgentConfig()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--base-url", default=defaults.base_url, help="the bridge's HTTP API")
    parser.add_argument("--greeting", default=GREETING, help="what espeak-ng says (if installed)")
    parser.add_argument("--barge-in-rms", type=float, default=defaults.barge_in_rms)
    parser.add_argument("--barge-in-frames", type=int, default=defaults.barge_in_frames)
    parser.add_argument("--max-call-s", type=float, default=defaults.max_call_s, help="then hang up")
    parser.add_argument("--hold-s", type=float, default=defaults.hold_s, help="how long digit 1 holds")
    parser.add_argument("--queue", default=defaults.queue, help="where digit 2 transfers to")


async def run(args: argparse.Namespace, stop: Callable[[], Awaitable[None]]) -> int:
    """`bridge demo-agent`: serve until `stop()` returns (the CLI's SIGINT/SIGTERM)."""
    config = AgentConfig(
        base_url=args.base_url,
        barge_in_rms=args.barge_in_rms,
        barge_in_frames=args.barge_in_frames,
        max_call_s=args.max_call_s,
        hold_s=args.hold_s,
        queue=args.queue,
    )
    prompt = load_prompt(args.greeting)
    agent = DemoAgent(config, prompt)
    url = await agent.start(args.host, args.port)
    print(
        "bridge demo agent is up\n"
        f"  ws_url     : {url}\n"
        f"  bridge     : {config.base_url}\n"
        f"  greeting   : {prompt.duration_s:.1f} s from {prompt.source}\n"
        f"  keys       : 1 = hold {config.hold_s:g} s, 2 = transfer to queue {config.queue!r}\n"
        f"  hangs up   : after {config.max_call_s:g} s",
        flush=True,
    )
    try:
        await stop()
    finally:
        await agent.stop()
    return 0
