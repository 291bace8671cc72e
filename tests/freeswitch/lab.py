"""The lab the call scenarios run in: the bridge, a real Redis, a voice agent that records the
audio fork, and a switch with callers on it. Two switches, one interface:

- `FreeSwitchLab`: the tier's FreeSWITCH (tests/freeswitch/conftest.py), SIPp callers that dial
  the `lab` profile and send real RTP (a tone, PCMU), a SIPp UAS as the `pstn` gateway's far end.
- `SimLab`: the sandbox (bridge + switch simulator), callers placed with POST /sandbox/calls and
  made to talk with SwitchSimulator.speak().

Both look like the `sandbox` fixture to tests/helpers.py (`.info.base_url`, `.info.admin_key`,
`.runtime.services`), so `sdk(lab)`, `http(lab, ...)`, `events(lab, ...)` and
tests/webhook_receiver.subscribed(lab, ...) work on either. A scenario written against `Lab`
runs on both switches (the `lab` fixture, ids "sim" and "freeswitch").

    call = await lab.call()                       # a caller the AI is on: call_id, token, metadata
    await lab.ai(call, "mute", target="caller")   # a verb through the official SDK, callback token
    frames = await lab.agent.frames_between(call.call_id, t0, t1)
    await lab.hang_up(call)                       # the caller's BYE (SIPp) / the simulated hangup
    await lab.esl.wait_event(lambda e: e.name == "PLAYBACK_STOP")   # the switch's own events

FreeSwitchLab only: `lab.caller(call)` is the SippCaller (its SIP trace: `messages()`),
`lab.gateway("answer" | "busy" | "noanswer")` starts the `pstn` far end, `lab.switch` is the
FreeSwitch, `lab.fs_api("...")` an ESL api command on the switch.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yotel
from aiohttp import WSMsgType, web

from bridge.config import Settings
from bridge.esl.protocol import Event
from bridge.runtime import BridgeRuntime
from bridge.store.tenants import ALL_SCOPES
from tests.conftest import fast_settings, in_thread
from tests.sim_helpers import RawEsl

T = TypeVar("T")

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
SIPP = os.environ.get("SIPP") or shutil.which("sipp") or "/usr/bin/sipp"

CALLER = "+14155550100"
DIALED = "+14155550199"
LAB_TENANT = "lab"  # freeswitch-conf/vars.xml bridge_default_tenant: every lab call's tenant
SIM_TENANT = "acme"

FRAME_BYTES = 640  # mod_audio_fork: 20 ms of 16 kHz mono L16
TONE_HZ = 440.0
TONE_LEVEL = 0.3  # of full scale: RMS ~7000 at the fork after PCMU and resampling


# ---------------------------------------------------------------- audio


def tone_samples(seconds: float, rate: int, hz: float = TONE_HZ, level: float = TONE_LEVEL) -> list[int]:
    n = int(seconds * rate)
    return [int(level * 32767 * math.sin(2 * math.pi * hz * i / rate)) for i in range(n)]


def ulaw_byte(sample: int) -> int:
    """G.711 mu-law of one 16-bit sample (the classic Sun/CCITT encoder)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, clip) + bias
    exponent = max(0, min(7, (magnitude >> 7).bit_length() - 1))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_tone(seconds: float = 1.0, hz: float = TONE_HZ, level: float = TONE_LEVEL) -> bytes:
    """Headerless 8 kHz PCMU, what SIPp's rtp_stream plays (160 bytes a packet)."""
    return bytes(ulaw_byte(s) for s in tone_samples(seconds, 8000, hz, level))


def l16_tone(seconds: float, rate: int = 16000, hz: float = TONE_HZ, level: float = TONE_LEVEL) -> bytes:
    return array.array("h", tone_samples(seconds, rate, hz, level)).tobytes()


def rms(frame: bytes) -> float:
    """Root mean square of little-endian L16 samples (0 for digital silence)."""
    samples = array.array("h")
    samples.frombytes(frame[: len(frame) // 2 * 2])
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def wav_file(path: Path, pcm: bytes, rate: int = 8000) -> Path:
    """A mono 16-bit PCM WAV (what play_audio's URL serves)."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


# ---------------------------------------------------------------- ports


def free_udp_port(span: int = 1, low: int = 40000, high: int = 60000) -> int:
    """An even UDP port on 127.0.0.1 with `span` ports free from it (SIPp's media socket also
    binds port+2 for video)."""
    for _ in range(200):
        port = random_even(low, high - span)
        socks: list[socket.socket] = []
        try:
            for p in range(port, port + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP ports on 127.0.0.1")


def random_even(low: int, high: int) -> int:
    import random

    return random.randrange(low, high, 2)


# ---------------------------------------------------------------- SIPp


@dataclass
class SipMessage:
    """One message from a SIPp -trace_msg log."""

    direction: str  # "sent" or "received"
    at: float  # the log's timestamp (epoch seconds)
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def method(self) -> str:
        """The request method ("" for a response)."""
        word = self.first_line.split(" ", 1)[0]
        return "" if word.startswith("SIP/") else word

    @property
    def status(self) -> int:
        parts = self.first_line.split(" ")
        return int(parts[1]) if parts[0].startswith("SIP/") and len(parts) > 1 else 0

    @property
    def request_user(self) -> str:
        """The user part of a request's Request-URI."""
        m = re.match(r"\S+ sips?:([^@;> ]+)@", self.first_line)
        return m.group(1) if m else ""

    def header(self, name: str) -> str:
        for line in self.text.split("\n")[1:]:
            if not line.strip():
                break
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return ""

    @property
    def cseq_method(self) -> str:
        return self.header("CSeq").rpartition(" ")[2]

    @property
    def body(self) -> str:
        _, sep, body = self.text.replace("\r\n", "\n").partition("\n\n")
        return body if sep else ""

    @property
    def sdp_direction(self) -> str:
        """The audio direction the message's SDP offers or answers (sendrecv if none given)."""
        found = re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", self.body, re.M)
        return found[-1] if found else ("sendrecv" if "m=audio" in self.body else "")


_TRACE_RULE = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d(?:\.\d+)?)\s*$", re.M)


def parse_trace(text: str) -> list[SipMessage]:
    """SIPp's -trace_msg log: blocks opened by a dashed line with a timestamp, then
    "UDP message sent (N bytes):" or "UDP message received [N] bytes :", a blank line, the message."""
    out: list[SipMessage] = []
    marks = list(_TRACE_RULE.finditer(text))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        block = text[mark.end() : end].lstrip("\n")
        head, _, message = block.partition("\n")
        if " message sent" in head:
            direction = "sent"
        elif " message received" in head:
            direction = "received"
        else:
            continue
        stamp = mark.group(1)
        try:
            at = time.mktime(time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S"))
            at += float("0." + stamp.split(".")[1]) if "." in stamp else 0.0
        except ValueError:
            at = 0.0
        message = message.lstrip("\n").replace("\r\n", "\n").rstrip("\n")
        if message:
            out.append(SipMessage(direction, at, message + "\n"))
    return out


class Sipp:
    """One SIPp process (one call), run in `workdir` with its SIP trace in `<name>.messages.log`."""

    def __init__(self, name: str, workdir: Path, scenario: str, args: list[str]) -> None:
        self.name = name
        self.workdir = workdir
        self.scenario = SIPP_DIR / scenario
        self.sip_port = free_udp_port()
        self.media_port = free_udp_port(span=4)
        self.trace = workdir / f"{name}.messages.log"
        self.errors = workdir / f"{name}.errors.log"
        self.output = workdir / f"{name}.out"
        self.argv = [
            SIPP,
            *args,
            "-sf", str(self.scenario),
            "-i", "127.0.0.1", "-p", str(self.sip_port),
            "-mi", "127.0.0.1", "-mp", str(self.media_port),
            "-m", "1", "-l", "1",
            "-aa", "-nostdin",
            "-trace_msg", "-message_file", str(self.trace),
            "-trace_err", "-error_file", str(self.errors),
        ]  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    async def start(self) -> None:
        if not os.access(SIPP, os.X_OK):
            raise RuntimeError(f"no SIPp at {SIPP}: apt-get install sip-tester")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.output.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.workdir, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.started_at = time.time()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait(self, timeout: float = 10.0) -> int:
        """SIPp's exit status: 0 when its call went through the scenario, 1 when it failed."""
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            report = self.report()
            raise AssertionError(f"{self.name}: SIPp still running after {timeout}s\n{report}") from None

    async def stop(self) -> None:
        if not self.running:
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    def messages(self) -> list[SipMessage]:
        try:
            return parse_trace(self.trace.read_text(errors="replace"))
        except FileNotFoundError:
            return []

    def received(self, method: str = "", status: int = 0) -> list[SipMessage]:
        return [
            m
            for m in self.messages()
            if m.direction == "received"
            and (not method or m.method == method)
            and (not status or m.status == status)
        ]

    async def wait_for_message(
        self, match: Callable[[SipMessage], bool], timeout: float = 10.0
    ) -> SipMessage:
        deadline = time.monotonic() + timeout
        while True:
            found = next((m for m in self.messages() if match(m)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no such SIP message within {timeout}s\n{self.report()}")
            await asyncio.sleep(0.05)

    def report(self) -> str:
        parts = [f"$ {' '.join(self.argv)}"]
        for path in (self.output, self.errors):
            with contextlib.suppress(FileNotFoundError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        parts.append("--- SIP: " + " | ".join(f"{m.direction} {m.first_line}" for m in self.messages()))
        return "\n".join(parts)


class SippCaller(Sipp):
    """A caller (tests/freeswitch/sipp/uac.xml) dialing `dialed` on the switch's `lab` profile,
    sending a tone as PCMU for the whole call; `hang_up()` makes it send BYE."""

    def __init__(
        self,
        workdir: Path,
        *,
        switch_sip_port: int,
        dialed: str = DIALED,
        caller: str = CALLER,
        audio: bytes | None = None,
        max_idle_s: float = 60.0,
        name: str = "caller",
    ) -> None:
        self.sip_call_id = f"bridge-lab-{uuidlib.uuid4().hex[:16]}@127.0.0.1"
        self.audio = ulaw_tone() if audio is None else audio
        super().__init__(
            name,
            workdir,
            "uac.xml",
            [
                f"127.0.0.1:{switch_sip_port}",
                "-s", dialed,
                "-key", "caller", caller,
                "-cid_str", self.sip_call_id,
                "-recv_timeout", str(int(max_idle_s * 1000)),
            ],
        )  # fmt: skip
        self.caller = caller
        self.dialed = dialed

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "caller.ulaw").write_bytes(self.audio)
        await super().start()

    async def hang_up(self) -> None:
        """An in-dialog MESSAGE to SIPp: its scenario answers it by sending BYE to the switch."""
        message = (
            f"MESSAGE sip:{self.caller}@127.0.0.1:{self.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuidlib.uuid4().hex[:12]}\r\n"
            f"From: <sip:test@127.0.0.1>;tag=lab-test\r\n"
            f"To: <sip:{self.caller}@127.0.0.1>\r\n"
            f"Call-ID: {self.sip_call_id}\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(message, ("127.0.0.1", self.sip_port))

    def reinvites(self) -> list[SipMessage]:
        """The re-INVITEs the switch sent the caller (hold, unhold), oldest first."""
        return [m for m in self.received("INVITE")]


class SippGateway(Sipp):
    """The `pstn` gateway's far end on the switch's FREESWITCH_PSTN_PROXY port: one call, answered
    (uas_answer.xml, PCMU tone back), refused busy (uas_busy.xml) or left ringing (uas_noanswer.xml)."""

    MODES = {"answer": "uas_answer.xml", "busy": "uas_busy.xml", "noanswer": "uas_noanswer.xml"}

    def __init__(self, workdir: Path, *, port: int, mode: str = "answer", max_idle_s: float = 30.0) -> None:
        super().__init__(
            f"pstn-{mode}",
            workdir,
            self.MODES[mode],
            ["-recv_timeout", str(int(max_idle_s * 1000))],
        )
        self.sip_port = port
        self.argv[self.argv.index("-p") + 1] = str(port)
        self.mode = mode

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "callee.ulaw").write_bytes(ulaw_tone(hz=660.0))
        await super().start()
        await asyncio.sleep(0.2)  # let it bind before the switch dials

    async def invite(self, timeout: float = 10.0) -> SipMessage:
        """The first INVITE the switch sent through the gateway."""
        return await self.wait_for_message(
            lambda m: m.direction == "received" and m.method == "INVITE", timeout
        )


# ---------------------------------------------------------------- the voice agent


@dataclass
class Fork:
    """One audio fork connection the agent accepted."""

    ws: web.WebSocketResponse
    headers: dict[str, str]
    protocol: str | None
    texts: list[dict[str, Any]] = field(default_factory=list)
    frames: list[tuple[float, bytes]] = field(default_factory=list)  # (monotonic arrival, payload)
    closed: bool = False

    @property
    def call_id(self) -> str:
        return self.texts[0].get("call_id", "") if self.texts else ""

    @property
    def binary_frames(self) -> int:
        return len(self.frames)

    def between(self, start: float, end: float) -> list[bytes]:
        return [data for t, data in self.frames if start <= t < end]


class ListeningAgent:
    """A voice AI's WebSocket endpoint that keeps everything the fork sends: the metadata frame,
    every binary frame with its arrival time. Same interface as tests/conftest.py's AgentServer
    (`url`, `metadata()`, `connection()`, `wait_for()`), plus the audio."""

    def __init__(self, subprotocols: tuple[str, ...] = ("audio.drachtio.org", "audio.jambonz.org")) -> None:
        self.subprotocols = subprotocols
        self.forks: list[Fork] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        for fork in self.forks:
            if not fork.closed:
                with contextlib.suppress(Exception):
                    await fork.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=self.subprotocols, max_msg_size=0)
        await ws.prepare(request)
        fork = Fork(ws, dict(request.headers), ws.ws_protocol)
        self.forks.append(fork)
        await self._notify()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                with contextlib.suppress(ValueError):
                    fork.texts.append(json.loads(msg.data))
                await self._notify()
            elif msg.type == WSMsgType.BINARY:
                fork.frames.append((time.monotonic(), msg.data))
                if len(fork.frames) % 10 == 1:
                    await self._notify()
        fork.closed = True
        await self._notify()
        return ws

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        async def _wait() -> T:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(_wait(), timeout)

    def connection(self, call_id: str) -> Fork:
        """The call's first fork (the AI's main one)."""
        for fork in self.forks:
            if fork.call_id == call_id:
                return fork
        raise KeyError(call_id)

    def forks_of(self, call_id: str) -> list[Fork]:
        return [f for f in self.forks if f.call_id == call_id]

    async def metadata(self, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
        fork = await self.wait_for(
            lambda: next((f for f in self.forks if f.call_id == call_id), None), timeout
        )
        return fork.texts[0]

    async def frames(self, call_id: str, seconds: float) -> list[bytes]:
        """The frames the call's fork delivers during the next `seconds`."""
        start = time.monotonic()
        await asyncio.sleep(seconds)
        return self.connection(call_id).between(start, time.monotonic())


# ---------------------------------------------------------------- the lab


@dataclass
class LabInfo:
    """What tests/helpers.py reads from a sandbox."""

    base_url: str
    tenant_id: str
    admin_key: str
    esl_url: str


@dataclass
class LabCall:
    call_id: str
    token: str
    metadata: dict[str, Any]
    caller: SippCaller | None = None  # FreeSwitchLab only


class Lab:
    """The bridge + Redis + a voice agent + one switch. Subclasses say how a caller is made."""

    switch_name = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.agent = ListeningAgent()
        self.runtime: Any = None
        self.info: LabInfo | None = None
        self.esl: RawEsl | None = None  # every event of the switch (event plain ALL)
        self._voice_agent: Any = None
        self._files: dict[str, bytes] = {}
        self._file_runner: web.AppRunner | None = None
        self._file_base = ""
        self.file_requests: list[str] = []  # paths the file server was asked for

    @property
    def services(self) -> Any:
        return self.runtime.services

    def client(self, **options: Any) -> yotel.Client:
        assert self.info is not None
        options.setdefault("max_retries", 1)
        return yotel.Client(api_key=self.info.admin_key, base_url=self.info.base_url, **options)

    async def ai(self, call: LabCall, verb: str, **kwargs: Any) -> dict[str, Any]:
        """One control verb through the official SDK with the call's callback token."""
        method = getattr(self.client().ai_sessions, verb)
        return await in_thread(method, call.call_id, callback_token=call.token, **kwargs)

    async def voice_agent(self) -> Any:
        """The tenant's default voice agent, pointing at `self.agent` (made once)."""
        if self._voice_agent is None:
            client = self.client()
            agent = await in_thread(client.voice_agents.create, name="lab-agent", ws_url=self.agent.url)
            await in_thread(client.voice_agents.set_as_default, agent.id)
            self._voice_agent = agent
        return self._voice_agent

    async def session(self, call: LabCall) -> Any:
        return await self.services.sessions.get(call.call_id)

    async def outbox(self, call_id: str, event_type: str | None = None) -> list[Any]:
        found = await self.services.outbox.read_all()
        return [
            e
            for e in found
            if e.data.get("call_id") == call_id and (event_type is None or e.event_type == event_type)
        ]

    async def wait_event(self, match: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        assert self.esl is not None
        return await self.esl.wait_event(match, timeout)

    def events_of(self, call_id: str, name: str = "") -> list[Event]:
        """The switch's events about the channel so far (by Event-Name or CUSTOM subclass)."""
        assert self.esl is not None
        return [e for e in self.esl.of(call_id) if not name or e.key == name]

    async def serve(self, name: str, data: bytes) -> str:
        """An http://127.0.0.1 URL serving `data` (play_audio, hold moh_url: the verbs take http(s))."""
        self._files[name] = data
        if self._file_runner is None:
            app = web.Application()
            app.router.add_get("/{name}", self._serve_file)
            self._file_runner = web.AppRunner(app, shutdown_timeout=0.5)
            await self._file_runner.setup()
            site = web.TCPSite(self._file_runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._file_base = f"http://127.0.0.1:{port}"
        return f"{self._file_base}/{name}"

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.file_requests.append(name)
        if name not in self._files:
            return web.Response(status=404)
        content_type = "audio/wav" if name.endswith(".wav") else "application/octet-stream"
        return web.Response(body=self._files[name], content_type=content_type)

    async def _stop_files(self) -> None:
        if self._file_runner is not None:
            await self._file_runner.cleanup()

    # subclasses
    async def call(self, **kwargs: Any) -> LabCall:
        raise NotImplementedError

    async def hang_up(self, call: LabCall) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


class FreeSwitchLab(Lab):
    switch_name = "freeswitch"

    def __init__(self, settings: Settings, switch: Any, workdir: Path) -> None:
        super().__init__(settings)
        self.switch = switch
        self.workdir = workdir
        self.callers: list[SippCaller] = []
        self.gateways: list[SippGateway] = []
        self._numbers = itertools.count(1)

    @classmethod
    def settings_for(cls, switch: Any, redis_url: str, tmp_path: Path, **overrides: Any) -> Settings:
        return fast_settings(
            redis_url,
            tmp_path,
            esl_url=f"esl://:{switch.esl_password}@127.0.0.1:{switch.esl_port}",
            recordings_dir=str(switch.recordings_dir),
            rate_limit_per_s=1000,
            **overrides,
        )

    async def start(self) -> None:
        if not os.access(SIPP, os.X_OK):
            from tests.freeswitch.conftest import no_switch

            no_switch(f"no SIPp at {SIPP} (Debian sip-tester, which `make freeswitch` installs)")
        await self.agent.start()
        await self._clear_switch()
        self.esl = await RawEsl.connect(self.switch.esl_port, self.switch.esl_password, subscribe="plain ALL")
        self.runtime = BridgeRuntime(self.settings)
        svc = await self.runtime.start()
        key, _ = await svc.tenants.create_key(LAB_TENANT, ALL_SCOPES)
        assert self.runtime.endpoint is not None
        self.info = LabInfo(self.runtime.endpoint.base_url, LAB_TENANT, key, self.settings.esl_url)

    async def stop(self) -> None:
        try:
            await self._clear_switch()
            for sipp in [*self.callers, *self.gateways]:
                if sipp.running:
                    with contextlib.suppress(AssertionError):
                        await sipp.wait(5)
                await sipp.stop()
        finally:
            if self.runtime is not None:
                await self.runtime.stop()
            if self.esl is not None:
                with contextlib.suppress(Exception):
                    await self.esl.close()
            await self.agent.stop()
            await self._stop_files()

    async def fs_api(self, command: str, timeout: float = 10.0) -> str:
        esl = await self.switch.esl()
        try:
            return await esl.api(command, timeout=timeout)
        finally:
            await esl.close()

    async def _clear_switch(self) -> None:
        """No channel of an earlier test stays on the shared switch."""
        await self.fs_api("hupall NORMAL_CLEARING")
        deadline = time.monotonic() + 10
        while True:
            reply = await self.fs_api("show channels count")
            if reply.strip().startswith("0 total"):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"channels left on the switch: {reply}")
            await asyncio.sleep(0.1)

    def caller(self, call: LabCall) -> SippCaller:
        assert call.caller is not None
        return call.caller

    async def dial(self, *, dialed: str = DIALED, caller: str = CALLER, **kwargs: Any) -> SippCaller:
        """A SIPp caller on its way into the lab profile (nothing waited for)."""
        sipp = SippCaller(
            self.workdir / f"call{next(self._numbers)}",
            switch_sip_port=self.switch.sip_port,
            dialed=dialed,
            caller=caller,
            **kwargs,
        )
        self.callers.append(sipp)
        await sipp.start()
        return sipp

    async def channel_of(self, sipp: SippCaller, event: str = "CHANNEL_PARK", timeout: float = 10.0) -> Event:
        """The switch's `event` for the channel of this SIPp call (matched by its SIP Call-ID)."""
        try:
            return await self.wait_event(
                lambda e: e.name == event and e.var("sip_call_id") == sipp.sip_call_id, timeout
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{sipp.report()}\n{self.switch.tail()}") from None

    async def call(self, *, talk: bool = True, **kwargs: Any) -> LabCall:
        """A SIPp caller the AI is on: dialed, parked, answered by the bridge, fork connected."""
        await self.voice_agent()
        audio = None if talk else bytes([0xFF]) * 8000  # mu-law 0xFF: digital silence
        sipp = await self.dial(audio=audio, **kwargs)
        park = await self.channel_of(sipp)
        call_id = park.unique_id
        meta = await self.agent.metadata(call_id, timeout=10)
        return LabCall(call_id, meta["callback_token"], meta, sipp)

    async def hang_up(self, call: LabCall) -> None:
        await self.caller(call).hang_up()

    def gateway(self, mode: str = "answer", **kwargs: Any) -> SippGateway:
        sipp = SippGateway(
            self.workdir / f"pstn{next(self._numbers)}", port=self.switch.pstn_port, mode=mode, **kwargs
        )
        self.gateways.append(sipp)
        return sipp


class SimLab(Lab):
    """The sandbox: the bridge against the switch simulator."""

    switch_name = "sim"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sandbox: Any = None

    async def start(self) -> None:
        from bridge.sandbox import Sandbox

        await self.agent.start()
        self.sandbox = Sandbox(self.settings, tenant_id=SIM_TENANT)
        info = await self.sandbox.start()
        self.runtime = self.sandbox.runtime
        self.info = LabInfo(info.base_url, info.tenant_id, info.admin_key, info.esl_url)
        self.esl = await RawEsl.connect(self.sandbox.sim.port, subscribe="plain ALL")

    async def stop(self) -> None:
        try:
            if self.esl is not None:
                await self.esl.close()
            if self.sandbox is not None:
                await self.sandbox.stop()
        finally:
            await self.agent.stop()
            await self._stop_files()

    @property
    def sim(self) -> Any:
        return self.sandbox.sim

    async def call(self, *, talk: bool = True, caller: str = CALLER, dialed: str = DIALED) -> LabCall:
        from tests.helpers import http

        await self.voice_agent()
        reply = await http(self, "POST", "/sandbox/calls", {"from": caller, "to": dialed})
        assert reply.status == 201, reply.body
        call_id = reply.body["call_id"]
        meta = await self.agent.metadata(call_id)
        if talk:
            self.sim.speak(call_id, l16_tone(30.0))
        return LabCall(call_id, meta["callback_token"], meta)

    async def hang_up(self, call: LabCall) -> None:
        from tests.helpers import http

        reply = await http(self, "DELETE", f"/sandbox/calls/{call.call_id}?cause=NORMAL_CLEARING")
        assert reply.status == 200, reply.body
