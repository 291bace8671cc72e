"""mod_audio_fork (drachtio), emulated with a real WebSocket client (freeswitch.md §3).

`uuid_audio_fork <uuid> start <url> <mix> <rate> [bugname] [metadata]` answers "+OK Success"
before anything is connected; the connection is made in the background and reported as
mod_audio_fork::connect or ::connect_failed. Once connected the metadata goes first as a text
frame, then L16 silence is streamed one frame per `audio_frame_ms`, paced in real time. Text
frames from the server become mod_audio_fork::<type> events. The subprotocol and bearer token
come from the channel variables `mod_audio_fork_subprotocol` / `mod_audio_fork_auth_token`
(a sandbox convenience: the real module reads MOD_AUDIO_FORK_SUBPROTOCOL_NAME from its env).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
from collections import deque
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from bridge.sim.arguments import separate_string

if TYPE_CHECKING:
    from bridge.sim.channels import Channel
    from bridge.sim.core import SwitchCore

log = structlog.get_logger(__name__)

DEFAULT_BUG = "audio_fork"
USAGE = (
    "-USAGE: <uuid> [start | stop | send_text | pause | resume | graceful-shutdown ] [wss-url | path] "
    "[mono | mixed | stereo] [8000 | 16000 | 24000 | 32000 | 64000] [bugname] [metadata]\n"
)
OK = "+OK Success\n"
FAILED = "-ERR Operation Failed\n"
CONNECT_TIMEOUT_S = 5.0


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _lws_connect_error(exc: BaseException) -> str:
    """The text libwebsockets hands LWS_CALLBACK_CLIENT_CONNECTION_ERROR, which mod_audio_fork
    puts in the connect_failed body. "Unable to connect" (no TCP connection) was seen on the real
    1.10.12; the handshake ones are lws's client-http.c texts for a 401 and any other non-101
    (a 101 with bad headers, which lws words per header, is not told apart here)."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        if exc.status == 401:
            return "HS: ws upgrade unauthorized"
        if exc.status != 101:
            return "HS: ws upgrade response not 101"
    return "Unable to connect"


def _looks_like_json(arg: str) -> bool:
    return arg[:1] in ("{", "[")


class AudioFork:
    def __init__(
        self,
        core: SwitchCore,
        ch: Channel,
        *,
        bugname: str,
        url: str,
        mix: str,
        rate: int,
        metadata: str | None,
    ) -> None:
        self.core = core
        self.ch = ch
        self.bugname = bugname
        self.url = url
        self.mix = mix
        self.rate = rate
        self.metadata = metadata
        self.subprotocol = ch.var("mod_audio_fork_subprotocol") or core.settings.fork_subprotocol
        self.token = ch.var("mod_audio_fork_auth_token") or None
        self.state = "connecting"
        self.failure: str | None = None
        self.negotiated: str | None = None
        self.paused = False
        self.frames_sent = 0
        self.texts_sent: list[str] = []
        self.messages_received = 0
        self._closing = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._files: list[str] = []
        self._caller_audio: deque[bytes] = deque()  # frames `speak` queued, sent before silence

    def speak(self, pcm: bytes) -> int:
        """Queue the caller's audio (L16 mono at the fork's rate): it goes out one frame per tick
        in place of silence; in stereo the caller is the left channel. Returns the frame count."""
        frame_bytes = self.rate * self.core.settings.audio_frame_ms // 1000 * 2
        pcm = pcm[: len(pcm) // 2 * 2]
        for start in range(0, len(pcm), frame_bytes):
            chunk = pcm[start : start + frame_bytes].ljust(frame_bytes, b"\0")
            if self.mix == "stereo":
                chunk = b"".join(chunk[i : i + 2] + b"\0\0" for i in range(0, len(chunk), 2))
            self._caller_audio.append(chunk)
        return -(-len(pcm) // frame_bytes)

    def snapshot(self) -> dict[str, Any]:
        return {
            "bugname": self.bugname,
            "url": self.url,
            "mix": self.mix,
            "rate": self.rate,
            "state": self.state,
            "connected": self.state == "connected",
            "paused": self.paused,
            "subprotocol": self.subprotocol,
            "metadata": self.metadata,
            "frames_sent": self.frames_sent,
            "texts_sent": list(self.texts_sent),
            "failure": self.failure,
        }

    def start(self) -> None:
        self._task = self.core.spawn(self._run(), name=f"audio_fork:{self.ch.uuid}:{self.bugname}")

    # ------------------------------------------------------------ connection

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            self._ws = await self._session.ws_connect(
                self.url,
                protocols=(self.subprotocol,),
                headers=headers,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                autoping=True,
                max_msg_size=0,
            )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            await self._session.close()
            self._session = None
            if self._closing:
                return
            self.state = "failed"
            self.failure = str(exc) or exc.__class__.__name__
            reason = _lws_connect_error(exc)
            log.info(
                "sim_fork_connect_failed", uuid=self.ch.uuid, url=self.url, reason=reason, error=self.failure
            )
            # lws_glue.cpp: json << "{\"reason\":\"" << message << "\"}" (no escaping).
            self._event("connect_failed", '{"reason":"' + reason + '"}')
            return
        if self._closing:
            await self._shutdown()
            return
        self.negotiated = self._ws.protocol
        self.state = "connected"
        self._event("connect", None)
        try:
            if self.metadata:
                await self._ws.send_str(self.metadata)
            self._sender = self.core.spawn(self._stream_audio(), name=f"audio_fork_tx:{self.ch.uuid}")
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.messages_received += 1
                    self._on_text(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.messages_received += 1
                else:
                    break
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            log.info("sim_fork_connection_lost", uuid=self.ch.uuid, error=str(exc))
        if not self._closing:
            # The far end went away: CONNECTION_DROPPED -> mod_audio_fork::disconnect, no body.
            self.state = "disconnected"
            self._event("disconnect", None)
        await self._shutdown()

    async def _stream_audio(self) -> None:
        ms = self.core.settings.audio_frame_ms
        channels = 2 if self.mix == "stereo" else 1
        silence = bytes(self.rate * ms // 1000 * 2 * channels)
        loop = asyncio.get_running_loop()
        due = loop.time()
        ws = self._ws
        assert ws is not None
        while not ws.closed and not self._closing:
            if not self.paused:
                frame = self._caller_audio.popleft() if self._caller_audio else silence
                if self.ch.mute.get("read"):  # uuid_audio ... read mute: the fork hears silence
                    frame = silence
                try:
                    await ws.send_bytes(frame)
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    return
                self.frames_sent += 1
            due += ms / 1000
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def _shutdown(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def close(self, *, graceful: bool, reason: str, final_text: str | None = None) -> None:
        """stop / hangup: close without a disconnect event (CONNECTION_CLOSED_GRACEFULLY)."""
        self._closing = True
        if self.state == "connected" and final_text and self._ws is not None and not self._ws.closed:
            try:
                await self._ws.send_str(final_text)
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                pass
        if self.state in ("connecting", "connected"):
            self.state = "closed"
        if self._sender is not None:
            self._sender.cancel()
        if self._ws is not None and not self._ws.closed:
            try:
                await asyncio.wait_for(self._ws.close(), timeout=2.0 if graceful else 0.2)
            except (TimeoutError, ConnectionError, RuntimeError):
                pass
        if self._task is not None and self._task is not asyncio.current_task() and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=2.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        for path in self._files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.ch.forks.pop(self.bugname, None)
        log.debug("sim_fork_closed", uuid=self.ch.uuid, bug=self.bugname, reason=reason)

    async def send_text(self, text: str) -> bool:
        if self.state != "connected" or self._ws is None or self._ws.closed:
            return False
        try:
            await self._ws.send_str(text)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        self.texts_sent.append(text)
        return True

    # ------------------------------------------------------------ server -> switch

    def _event(self, kind: str, body: str | None) -> None:
        self.ch.custom(f"mod_audio_fork::{kind}", body=body)

    def _on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            log.info("sim_fork_bad_json", uuid=self.ch.uuid, text=text[:80])
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            return
        kind = msg["type"]
        data = msg.get("data")
        if kind == "playAudio":
            self._event("play_audio", self._play_audio(data) if isinstance(data, dict) else None)
        elif kind == "killAudio":
            self._event("kill_audio", None)
            if self.ch.playing:
                self.ch.break_requested = True
                self.ch.interrupt()
        elif kind in ("transcription", "transfer", "disconnect", "error"):
            self._event(kind, _compact(data) if data is not None else None)
        elif kind == "json":
            self._event("json", _compact(msg))
        else:
            log.info("sim_fork_unsupported_type", uuid=self.ch.uuid, type=kind)

    def _play_audio(self, data: dict[str, Any]) -> str:
        """Write the audio to a temp file and report its path instead of the base64 payload."""
        audio = data.pop("audioContent", None)
        kind = data.get("audioContentType", "raw")
        if isinstance(audio, str) and kind in ("raw", "wav", "wave"):
            rate = int(data.get("sampleRate") or 16000)
            suffix = f".r{rate // 1000}" if kind == "raw" else ".wav"
            fd, path = tempfile.mkstemp(prefix=f"{self.ch.uuid}_", suffix=f".tmp{suffix}")
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64decode(audio + "=" * (-len(audio) % 4), validate=False))
            self._files.append(path)
            data["file"] = path
        return _compact(data)


# ---------------------------------------------------------------- the API


async def api(core: SwitchCore, args: str) -> str:
    """uuid_audio_fork, argument handling as mod_audio_fork.c does it (7 argv slots)."""
    argv = separate_string(args, " ", 7)
    if len(argv) < 2 or (argv[1] == "start" and len(argv) < 4):
        return USAGE
    ch = core.live(argv[0])
    if ch is None or not ch.alive:
        return FAILED
    action = argv[1].lower()
    if action == "start":
        return await _start(core, ch, argv)
    bugname = DEFAULT_BUG
    text: str | None = None
    if action in ("stop", "send_text"):
        if len(argv) > 3:
            bugname, text = argv[2], argv[3]
        elif len(argv) > 2:
            if _looks_like_json(argv[2]):
                text = argv[2]
            else:
                bugname = argv[2]
        fork = ch.forks.get(bugname)
        if fork is None:
            return FAILED
        if action == "send_text":
            return OK if text is not None and await fork.send_text(text) else FAILED
        ch.remove_bug(f"fork:{bugname}")
        await fork.close(graceful=True, reason="stop", final_text=text)
        return OK
    if len(argv) > 2:
        bugname = argv[2]
    fork = ch.forks.get(bugname)
    if action in ("pause", "resume"):
        if fork is None:
            return FAILED
        fork.paused = action == "pause"
        return OK
    if action == "graceful-shutdown":
        if fork is None:
            return FAILED
        fork.paused = True
        return OK
    log.info("sim_fork_unsupported_command", command=action)
    return FAILED


async def _start(core: SwitchCore, ch: Channel, argv: list[str]) -> str:
    bugname = DEFAULT_BUG
    metadata: str | None = None
    if len(argv) > 6:
        bugname, metadata = argv[5], argv[6]
    elif len(argv) > 5:
        if _looks_like_json(argv[5]):
            metadata = argv[5]
        else:
            bugname = argv[5]
    mix = argv[3]
    if mix not in ("mono", "mixed", "stereo"):
        # mod_audio_fork bails out before writing anything: ESL then says "-ERR no reply".
        return ""
    rate_arg = argv[4]
    rate = {"16k": 16000, "8k": 8000}.get(rate_arg) or _atoi(rate_arg)
    if bugname in ch.forks:
        return FAILED
    if not ch.pre_answer():
        return FAILED
    fork = AudioFork(core, ch, bugname=bugname, url=argv[2], mix=mix, rate=rate or 8000, metadata=metadata)
    ch.forks[bugname] = fork
    ch.add_bug(f"fork:{bugname}", bugname, "N/A")
    fork.start()
    return OK


def _atoi(text: str) -> int:
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0
