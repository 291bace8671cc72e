"""The inbound Event Socket server and `SwitchSimulator`, the facade the rest of the bridge uses.

One `EslConnection` per TCP client, behaving like mod_event_socket's listener: auth first,
then commands answered in order. While an `api` command runs, events for that connection
are held back and written after the reply, because FreeSWITCH runs `api` on the listener's
own thread (freeswitch.md §1.3); other connections get them as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from typing import Any

import structlog

from bridge.sim import apps, commands
from bridge.sim.callcenter import Agent
from bridge.sim.channels import STATE_NUMBERS, Broadcast, CallerProfile, Channel, new_uuid, now_us, str2cause
from bridge.sim.core import OriginateOutcome, PlaybackOutcome, Settings, SwitchCore
from bridge.sim.dialplan import inbound_extension
from bridge.sim.events import FS_VERSION, SimEvent, uptime_text

log = structlog.get_logger(__name__)

KNOWN_EVENTS = frozenset(
    """CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE CHANNEL_CALLSTATE CHANNEL_ANSWER
    CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD
    CHANNEL_UNHOLD CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA
    CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK CHANNEL_APPLICATION CHANNEL_ORIGINATE CHANNEL_UUID API
    LOG INBOUND_CHAN OUTBOUND_CHAN STARTUP SHUTDOWN PUBLISH UNPUBLISH TALK NOTALK SESSION_CRASH
    MODULE_LOAD MODULE_UNLOAD DTMF MESSAGE PRESENCE_IN NOTIFY_IN PRESENCE_OUT PRESENCE_PROBE
    MESSAGE_WAITING MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB DETECTED_SPEECH DETECTED_TONE
    PRIVATE_COMMAND HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE EXE_SCHEDULE RE_SCHEDULE RELOADXML
    NOTIFY PHONE_FEATURE PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE RECV_MESSAGE REQUEST_PARAMS
    CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT CLIENT_DISCONNECTED SERVER_DISCONNECTED
    SEND_INFO RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT RECORD_START RECORD_STOP
    PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA MEDIA_BUG_START MEDIA_BUG_STOP
    CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ CALL_SETUP_RESULT CALL_DETAIL DEVICE_STATE
    TEXT SHUTDOWN_REQUESTED ALL""".split()
)
MYEVENTS = frozenset(
    """CHANNEL_ANSWER CHANNEL_APPLICATION CHANNEL_BRIDGE CHANNEL_CREATE CHANNEL_DATA CHANNEL_DESTROY
    CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_ORIGINATE
    CHANNEL_UUID CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_STATE
    CHANNEL_UNBRIDGE CHANNEL_UNPARK DETECTED_SPEECH DTMF TALK NOTALK""".split()
)
DISCONNECT_NOTICE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def _reply(text: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    head = f"Content-Type: command/reply\nReply-Text: {text}\n"
    head += "".join(f"{k}: {v}\n" for k, v in extra or [])
    return (head + "\n").encode()


def _api_response(body: str) -> bytes:
    raw = body.encode()
    return f"Content-Type: api/response\nContent-Length: {len(raw)}\n\n".encode() + raw


class EslConnection:
    def __init__(
        self, sim: SwitchSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sim = sim
        self.core = sim.core
        self.reader = reader
        self.writer = writer
        self.authed = False
        self.format = "plain"
        self.events: set[str] = set()
        self.all_events = False
        self.custom: set[str] = set()
        self.filters: list[tuple[str, str]] = []
        self.myevents_uuid: str | None = None
        self._hold = 0
        self._held: list[bytes] = []
        self.closed = False

    # ------------------------------------------------------------ events out

    def listening(self) -> bool:
        return self.all_events or bool(self.events)

    def wants(self, ev: SimEvent) -> bool:
        if self.all_events:
            pass
        elif ev.name not in self.events:
            return False
        elif ev.name == "CUSTOM" and ev.subclass and ev.subclass not in self.custom:
            return False
        if self.myevents_uuid is not None and ev.get("Unique-ID") != self.myevents_uuid:
            return False
        if not self.filters:
            return True
        positive = [(h, v) for h, v in self.filters if not v.startswith("-")]
        negative = [(h, v[1:]) for h, v in self.filters if v.startswith("-")]
        if any(_matches(ev, h, v) for h, v in negative):
            return False
        return not positive or any(_matches(ev, h, v) for h, v in positive)

    def offer(self, ev: SimEvent) -> None:
        if self.closed or not self.authed:
            return
        if self.wants(ev):
            data = ev.encode(self.format)
            if self._hold:
                self._held.append(data)
            else:
                self.write(data)
        if ev.name == "CHANNEL_DESTROY" and self.myevents_uuid and ev.get("Unique-ID") == self.myevents_uuid:
            # `myevents <uuid>` binds an inbound socket to that channel: it goes down with it.
            asyncio.get_running_loop().call_soon(self._channel_gone)

    def _channel_gone(self) -> None:
        if self.closed:
            return
        self.write(b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(DISCONNECT_NOTICE))
        self.write(DISCONNECT_NOTICE)
        self.close()

    def write(self, data: bytes) -> None:
        if self.closed or self.writer.is_closing():
            return
        self.writer.write(data)

    # ------------------------------------------------------------ the command loop

    async def run(self) -> None:
        self.write(b"Content-Type: auth/request\n\n")
        try:
            while not self.closed:
                message = await self._read_message()
                if message is None:
                    break
                line, headers, body = message
                await self._dispatch(line, headers, body)
                await self.writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.close()

    async def _read_message(self) -> tuple[str, dict[str, str], bytes] | None:
        while True:
            try:
                block = await self.reader.readuntil(b"\n\n")
            except asyncio.IncompleteReadError:
                return None
            text = block.decode("utf-8", errors="replace").replace("\r\n", "\n").strip("\n")
            if text.strip():
                break
        first, *rest = text.split("\n")
        headers: dict[str, str] = {}
        for raw in rest:
            name, sep, value = raw.partition(":")
            if sep:
                headers[name.strip()] = value.strip()
        body = b""
        length = headers.get("Content-Length", headers.get("content-length"))
        if length and length.isdigit():
            body = await self.reader.readexactly(int(length))
        return first.strip(), headers, body

    async def _dispatch(self, line: str, headers: dict[str, str], body: bytes) -> None:
        word = line.split(" ", 1)[0].lower()
        if not self.authed:
            if word == "auth":
                if line[5:].strip() == self.sim.password:
                    self.authed = True
                    self.write(_reply("+OK accepted"))
                else:
                    self.write(_reply("-ERR invalid"))
                    await self.writer.drain()
                    self.close()
            else:
                self.write(_reply("-ERR command not found"))
            return
        if word == "api":
            await self._api(line[3:].strip())
        elif word == "bgapi":
            job = next((v for k, v in headers.items() if k.lower() == "job-uuid" and v), None)
            self._bgapi(line[5:].strip(), job or new_uuid())
        elif word == "event":
            self.write(_reply(self._event(line[5:].strip())))
        elif word == "nixevent":
            self.write(_reply(self._nixevent(line[8:].strip())))
        elif word == "noevents":
            was = self.listening()
            self.events.clear()
            self.custom.clear()
            self.all_events = False
            self.write(
                _reply("+OK no longer listening for events" if was else "-ERR not listening for events")
            )
        elif word == "filter":
            self.write(_reply(self._filter(line[6:].strip())))
        elif word == "myevents":
            self.write(_reply(self._myevents(line[8:].strip())))
        elif word == "divert_events":
            self.write(_reply("-ERR not controlling a session."))
        elif word == "linger":
            self.write(_reply("+OK will linger"))
        elif word == "nolinger":
            self.write(_reply("+OK will not linger"))
        elif word == "log":
            self.write(_reply("+OK log level  [7]"))
        elif word == "nolog":
            self.write(_reply("+OK no longer logging"))
        elif word == "sendevent":
            self.write(_reply(self._sendevent(line[9:].strip(), headers, body)))
        elif word == "sendmsg":
            self.write(_reply(self._sendmsg(line[7:].strip(), headers)))
        elif word == "exit":
            self.write(_reply("+OK bye"))
            self.write(
                b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(DISCONNECT_NOTICE)
            )
            self.write(DISCONNECT_NOTICE)
            await self.writer.drain()
            self.close()
        else:
            self.write(_reply("-ERR command not found"))

    async def _api(self, command: str) -> None:
        self._hold += 1
        try:
            result = await commands.execute(self.core, command)
            self.write(_api_response(result))
        finally:
            self._hold -= 1
            if not self._hold:
                held, self._held = self._held, []
                for data in held:
                    self.write(data)

    def _bgapi(self, command: str, job_uuid: str) -> None:
        self.write(_reply(f"+OK Job-UUID: {job_uuid}", [("Job-UUID", job_uuid)]))
        self.core.spawn(self._job(command, job_uuid), name=f"bgapi:{job_uuid}")

    async def _job(self, command: str, job_uuid: str) -> None:
        result = await commands.execute(self.core, command)
        name, _, args = command.strip().partition(" ")
        ev = self.core.events.new("BACKGROUND_JOB")
        ev.add("Job-UUID", job_uuid)
        ev.add("Job-Command", name)
        if args.strip():
            ev.add("Job-Command-Arg", args.strip())
        ev.body = result
        self.core.fire(ev)

    def _event(self, args: str) -> str:
        tokens = args.split()
        if tokens and tokens[0].lower() in ("plain", "json", "xml"):
            self.format = tokens.pop(0).lower()
        keys = 0
        custom = False
        for token in tokens:
            if custom:
                self.custom.add(token)
                continue
            name = token.upper()
            if name not in KNOWN_EVENTS:
                continue
            keys += 1
            if name == "ALL":
                self.all_events = True
            else:
                self.events.add(name)
            if name == "CUSTOM":
                custom = True
        if not keys:
            return "-ERR no keywords supplied"
        return f"+OK event listener enabled {self.format}"

    def _nixevent(self, args: str) -> str:
        keys = 0
        custom = False
        for token in args.split():
            if custom:
                self.custom.discard(token)
                continue
            name = token.upper()
            if name not in KNOWN_EVENTS:
                continue
            keys += 1
            if name == "CUSTOM":
                custom = True
            elif name == "ALL":
                self.all_events = False
                self.events.clear()
                self.custom.clear()
            else:
                if self.all_events:
                    # ALL becomes "every event by name" so that one can be removed
                    self.all_events = False
                    self.events = set(KNOWN_EVENTS) - {"ALL"}
                self.events.discard(name)
        if not keys:
            return "-ERR no keywords supplied"
        return "+OK events nixed"

    def _filter(self, args: str) -> str:
        tokens = args.split(" ", 2)
        if tokens and tokens[0] == "delete":
            if len(tokens) < 2:
                return "-ERR invalid syntax"
            if tokens[1] == "all":
                self.filters.clear()
                return "+OK filter deleted."
            header = tokens[1]
            value = tokens[2] if len(tokens) > 2 else None
            self.filters = [
                (h, v) for h, v in self.filters if not (h == header and (value is None or v == value))
            ]
            return f"+OK filter deleted. [{header}]=[{value or ''}]"
        if len(tokens) < 2:
            return "-ERR invalid syntax"
        header, value = tokens[0], " ".join(tokens[1:])
        self.filters.append((header, value))
        return f"+OK filter added. [{header}]=[{value}]"

    def _myevents(self, args: str) -> str:
        tokens = args.split()
        fmt = "plain"
        uuid = None
        for token in tokens:
            if token.lower() in ("plain", "json", "xml"):
                fmt = token.lower()
            else:
                uuid = token
        if self.myevents_uuid is not None:
            return "-ERR aready enabled."
        if uuid is None or self.core.live(uuid) is None:
            return "-ERR invalid uuid"
        self.myevents_uuid = uuid
        self.format = fmt
        self.events |= MYEVENTS
        return "+OK Events Enabled"

    def _sendevent(self, name: str, headers: dict[str, str], body: bytes) -> str:
        event_name = (name or headers.get("Event-Name", "CUSTOM")).upper()
        ev = self.core.events.new(event_name, subclass=headers.get("Event-Subclass"))
        for key, value in headers.items():
            if key not in ("Event-Name", "Event-Subclass", "Content-Length"):
                ev.add(key, value)
        if body:
            ev.body = body.decode("utf-8", errors="replace")
        event_uuid = new_uuid()
        ev.add("Event-UUID", headers.get("Event-UUID", event_uuid))
        target = self.core.live(headers.get("Unique-ID"))
        command = headers.get("eavesdrop-command")
        if target is not None and command:
            target.dtmf.extend(command)
            target.interrupt()
        self.core.fire(ev)
        return f"+OK {event_uuid}"

    def _sendmsg(self, uuid: str, headers: dict[str, str]) -> str:
        ch = self.core.live(uuid or headers.get("Unique-ID"))
        if ch is None:
            return f"-ERR invalid session id [{uuid}]"
        lowered = {k.lower(): v for k, v in headers.items()}
        command = lowered.get("call-command", "")
        if command == "hangup":
            ch.hangup(str2cause(lowered.get("hangup-cause")))
        elif command == "execute":
            app = lowered.get("execute-app-name", "")
            ch.broadcasts.append(Broadcast(app, lowered.get("execute-app-arg", "")))
            ch.interrupt()
        return "+OK"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.core.listeners.discard(self)
        self.sim.connections.discard(self)
        with contextlib.suppress(Exception):
            self.writer.close()

    def abort(self) -> None:
        self.closed = True
        self.core.listeners.discard(self)
        self.sim.connections.discard(self)
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


def _matches(ev: SimEvent, header: str, value: str) -> bool:
    actual = ev.get(header, "\x00")
    if actual == "\x00":
        return False
    if value.startswith("/") and value.endswith("/") and len(value) > 1:
        return re.search(value[1:-1], actual) is not None
    return actual.lower() == value.lower()


class SwitchSimulator:
    """A FreeSWITCH 1.10.12 look-alike: real ESL over TCP, simulated channels behind it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        password: str = "ClueCon",
        *,
        switchname: str = "sandbox",
        answer_delay_s: float = 0.05,
        audio_frame_ms: int = 20,
        fork_subprotocol: str = "audio.drachtio.org",
        playback_duration_s: float = 0.2,
        heartbeat_interval_s: float = 20.0,
        hostname: str | None = None,
        tts_ms_per_char: float = 75.0,
    ) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.core = SwitchCore(
            Settings(
                switchname=switchname,
                hostname=hostname or socket.gethostname(),
                answer_delay_s=answer_delay_s,
                audio_frame_ms=audio_frame_ms,
                fork_subprotocol=fork_subprotocol,
                playback_duration_s=playback_duration_s,
                heartbeat_interval_s=heartbeat_interval_s,
                tts_ms_per_char=tts_ms_per_char,
            )
        )
        self.connections: set[EslConnection] = set()
        self._server: asyncio.Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"esl://:{self.password}@{self.host}:{self.port}"

    async def start(self) -> None:
        # FreeSWITCH accepts command lines up to 1 MB (large audio-fork metadata)
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        self.core.closing = False
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="sim-heartbeat")
        log.info("sim_started", host=self.host, port=self.port, switchname=self.core.settings.switchname)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            self._server = None
        await self.core.close()
        log.info("sim_stopped", port=self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = EslConnection(self, reader, writer)
        self.connections.add(conn)
        self.core.listeners.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await conn.run()
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.core.settings.heartbeat_interval_s)
            self.core.fire(self.heartbeat_event())

    def heartbeat_event(self) -> SimEvent:
        up = time.time() - self.core.started
        ev = self.core.events.new("HEARTBEAT")
        return ev.extend(
            [
                ("Event-Info", "System Ready"),
                ("Up-Time", uptime_text(up)),
                ("FreeSWITCH-Version", FS_VERSION),
                ("Uptime-msec", str(int(up * 1000))),
                ("Session-Count", str(self.core.session_count())),
                ("Max-Sessions", "1000"),
                ("Session-Per-Sec", "30"),
                ("Session-Per-Sec-Last", "0"),
                ("Session-Per-Sec-Max", "2"),
                ("Session-Per-Sec-FiveMin", "2"),
                ("Session-Since-Startup", str(self.core.sessions_since_startup)),
                ("Session-Peak-Max", str(self.core.peak_sessions)),
                ("Session-Peak-FiveMin", str(self.core.peak_sessions)),
                ("Idle-CPU", "99.000000"),
            ]
        )

    # ------------------------------------------------------------ scenario controls

    async def place_inbound_call(
        self,
        caller: str,
        destination: str,
        variables: dict[str, str] | None = None,
        *,
        caller_name: str | None = None,
    ) -> str:
        """A call from `caller` to `destination` enters the lab dialplan: CHANNEL_CREATE, the
        variables set one `set` at a time, then park (ringing, not answered). Returns its uuid
        once CHANNEL_PARK has been fired."""
        core = self.core
        uuid = new_uuid()
        name = f"sofia/external/{caller}@127.0.0.1"
        ch = Channel(core, uuid=uuid, name=name, direction="inbound", speaking=True)
        core.add_channel(ch)
        ch.emit("CHANNEL_STATE", data="basic")  # CS_NEW, before the caller profile exists
        created = now_us()
        ch.profile = CallerProfile(
            direction="inbound",
            uuid=uuid,
            channel_name=name,
            caller_id_name=caller_name or caller,
            caller_id_number=caller,
            destination_number=destination,
            context="lab",
            dialplan="XML",
            username=caller,
            orig_caller_id_name=caller_name or caller,
            orig_caller_id_number=caller,
            network_addr="127.0.0.1",
            ani=caller,
            source="mod_sofia",
            profile_created=created,
        )
        ch.profile.times.created = created
        call_id = f"{new_uuid()}@127.0.0.1"
        ch.variables.update(
            {
                "direction": "inbound",
                "uuid": uuid,
                "session_id": str(core.sessions_since_startup),
                "sip_from_user": caller,
                "sip_from_uri": f"{caller}@127.0.0.1",
                "sip_from_host": "127.0.0.1",
                "channel_name": name,
                "sip_local_network_addr": "127.0.0.1",
                "sip_network_ip": "127.0.0.1",
                "sip_network_port": "5060",
                "sip_received_ip": "127.0.0.1",
                "sip_received_port": "5060",
                "sip_via_protocol": "udp",
                "sofia_profile_name": "external",
                "recovery_profile_name": "external",
                "sip_req_user": destination,
                "sip_req_uri": f"{destination}@127.0.0.1:5080",
                "sip_to_user": destination,
                "sip_to_uri": f"{destination}@127.0.0.1:5080",
                "sip_call_id": call_id,
                "sip_user_agent": "bridge-sandbox-caller",
                "call_uuid": uuid,
            }
        )
        ch.set_running_state("CS_INIT")
        ch.state_number = STATE_NUMBERS["CS_ROUTING"]
        ch.emit("CHANNEL_CREATE")
        apps.start_flow(ch, inbound_extension(dict(variables or {})), routing=True)
        for _ in range(10_000):
            if ch.current_app == "park" or not ch.alive:
                break
            await asyncio.sleep(0 if _ < 1000 else 0.001)
        return uuid

    async def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING") -> None:
        """The far end hangs up (a BYE from the caller); returns once the channel is destroyed."""
        ch = self.core.live(uuid)
        if ch is None or not ch.alive:
            return
        ch.variables["sip_hangup_disposition"] = "recv_bye"
        ch.hangup(str2cause(cause))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ch.destroyed.wait(), timeout=2.0)

    async def press_digits(self, uuid: str, digits: str, duration_ms: int = 260) -> None:
        """The caller presses keys: one RFC 2833 DTMF event per digit, as a phone's would arrive."""
        ch = self.core.live(uuid)
        if ch is None or not ch.alive:
            return
        for digit in digits.upper():
            if digit not in "0123456789*#ABCD":
                continue
            ch.dtmf.append(digit)
            post = [("DTMF-Digit", digit), ("DTMF-Duration", str(duration_ms * 8)), ("DTMF-Source", "RTP")]
            ch.emit("DTMF", post=post, data="basic")
            ch.interrupt()
            await asyncio.sleep(0)

    def speak(self, uuid: str, pcm: bytes) -> int:
        """The caller says `pcm` (L16 mono at each fork's rate): every audio fork on the channel
        streams it, paced in real time, in place of its silence. Returns the frames queued."""
        ch = self.core.live(uuid)
        if ch is None or not ch.alive:
            return 0
        return sum(fork.speak(pcm) for fork in list(ch.forks.values()))

    def channel(self, uuid: str) -> Channel | None:
        """The channel, live or ended (ended ones are kept so their outcome can be read)."""
        return self.core.channels.get(uuid)

    def snapshot(self, uuid: str) -> dict[str, Any] | None:
        ch = self.core.channels.get(uuid)
        if ch is None:
            return None
        p = ch.profile
        paths = list(ch.recordings)
        first = ch.recordings[paths[0]] if paths else None
        forks = [f.snapshot() for f in ch.forks.values()]
        membership = self.core.conferences.member_of(ch)
        return {
            "uuid": ch.uuid,
            "name": ch.name,
            "direction": ch.direction,
            "state": ch.running_state,
            "call_state": ch.call_state,
            "answer_state": ch.answer_state,
            "answered": ch.answered,
            "held": ch.held,
            "muted": dict(ch.mute),
            "recording": {
                "active": first is not None,
                "paused": bool(first and first.paused),
                "masked": bool(first and first.masked),
                "path": first.path if first else None,
                "paths": paths,
            },
            "conference": ch.conference,
            "member_id": ch.member_id,
            "conference_member": (
                {
                    "hear": membership[1].hear,
                    "speak": membership[1].speak,
                    "hold": membership[1].hold,
                    "moderator": membership[1].moderator,
                    # other member id -> nospeak | nohear | ... (`conference relate`)
                    "relations": {str(k): v for k, v in membership[1].relations.items()},
                    "playing": membership[1].playing,
                }
                if membership
                else None
            ),
            "bridged_to": ch.bridged_to,
            "audio_fork": forks[0] if forks else None,
            "audio_forks": forks,
            "playing": ch.playing,
            "displace": dict(ch.displace),  # path -> flags (uuid_displace)
            "eavesdrop": dict(ch.eavesdrop) if ch.eavesdrop else None,
            "callcenter": dict(ch.callcenter) if ch.callcenter else None,
            "media_bugs": [{"function": b.function, "target": b.target} for b in ch.media_bugs.values()],
            "dtmf_sent": ch.variables.get("sim_dtmf_sent", ""),
            "caller": {"number": p.caller_id_number, "name": p.caller_id_name} if p else None,
            "destination": p.destination_number if p else None,
            "variables": dict(ch.variables),
            "commands": list(ch.commands),
            "hangup_cause": ch.hangup_cause,
            "created_at": ch.created,
            "ended_at": ch.ended_at,
        }

    def commands(self) -> list[str]:
        return list(self.core.command_log)

    def fail_next(self, prefix: str, reply: str) -> None:
        self.core.failures.append((prefix, reply))

    async def drop_connections(self) -> None:
        for conn in list(self.connections):
            conn.abort()
        await asyncio.sleep(0)

    def set_originate_outcome(
        self, dial_pattern: str, cause: str | None, answer_delay_s: float | None = None
    ) -> None:
        outcomes = [o for o in self.core.originate_outcomes if o.prefix != dial_pattern]
        outcomes.append(OriginateOutcome(dial_pattern, str2cause(cause) if cause else None, answer_delay_s))
        self.core.originate_outcomes = outcomes

    # ------------------------------------------------------------ sandbox extras (additive)

    def set_playback_outcome(
        self, path_prefix: str, response: str = "FILE PLAYED", duration_s: float | None = None
    ) -> None:
        """Make playback of paths starting with `path_prefix` fail (FILE NOT FOUND, PLAYBACK ERROR)
        or last `duration_s` (None: until broken)."""
        outcomes = [o for o in self.core.playback_outcomes if o.prefix != path_prefix]
        outcomes.append(PlaybackOutcome(path_prefix, response, duration_s))
        self.core.playback_outcomes = outcomes

    def add_callcenter_agent(self, queue: str, contact: str, name: str | None = None) -> Agent:
        return self.core.callcenter.add_agent(queue, contact, name)

    def set_callcenter_queues(self, queues: set[str] | None) -> None:
        self.core.callcenter.queues = set(queues) if queues is not None else None

    async def api(self, command: str) -> str:
        """Run an API command in-process, as if it came over ESL (logged, API event fired)."""
        return await commands.execute(self.core, command)
