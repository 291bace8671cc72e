"""A small scriptable FreeSWITCH inbound ESL server for the ESL client's tests.

It speaks the real framing (auth/request, command/reply, api/response, text/event-json and
text/event-plain) and can replay frames lifted from the lab captures in /work/shared/esl-captures.
It is deliberately much smaller than bridge.sim: the client tests need control over *when* and
*what* bytes go out (late replies, torn connections, garbage), not a model of FreeSWITCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.esl.protocol import encode_frame, encode_json_event, encode_plain_event, parse_header_block

CAPTURES = Path(os.environ.get("ESL_CAPTURES_DIR", "/work/shared/esl-captures"))

AUTH_REQUEST = b"Content-Type: auth/request\n\n"
# What FreeSWITCH 1.10 writes before closing a socket (mod_event_socket.c).
DISCONNECT_NOTICE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
RUDE_REJECTION = b"Access Denied, go away.\n"


def command_reply(text: str, extra: dict[str, str] | None = None) -> bytes:
    return encode_frame([("Content-Type", "command/reply"), ("Reply-Text", text), *(extra or {}).items()])


def api_response(body: str) -> bytes:
    return encode_frame([("Content-Type", "api/response")], body)


def json_event(headers: dict[str, str], body: str | None = None) -> bytes:
    return encode_frame([("Content-Type", "text/event-json")], encode_json_event(headers, body))


def plain_event(headers: dict[str, str], body: str | None = None) -> bytes:
    return encode_frame([("Content-Type", "text/event-plain")], encode_plain_event(headers, body))


def disconnect_notice() -> bytes:
    return encode_frame([("Content-Type", "text/disconnect-notice")], DISCONNECT_NOTICE)


def rude_rejection() -> bytes:
    return encode_frame([("Content-Type", "text/rude-rejection")], RUDE_REJECTION)


# ---------------------------------------------------------------- captures


@dataclass
class CaptureStep:
    """One command the lab client sent and the raw frames FreeSWITCH wrote after it."""

    sent: str
    reply: bytes | None = None
    after: list[bytes] = field(default_factory=list)  # every non-reply frame, in wire order
    wire: list[bytes] = field(default_factory=list)  # reply and events, in wire order


def _one_frame(raw: bytes) -> bytes:
    """The exact bytes of the frame at the start of `raw` (the capture adds a newline after it)."""
    end = raw.index(b"\n\n") + 2
    headers = parse_header_block(raw[:end])
    return raw[: end + int(headers.get("Content-Length", "0"))]


def load_capture(name: str) -> list[CaptureStep]:
    """Split a capture file (README.txt format) into steps. Replies are matched to commands in
    order, because capture 11 pipelines its commands ahead of their replies."""
    data = (CAPTURES / name).read_bytes()
    parts = re.split(rb"^(>>>>> SENT.*|<<<<< RECV.*)\n", data, flags=re.M)
    steps: list[CaptureStep] = []
    replies: list[bytes] = []
    for marker, raw in zip(parts[1::2], parts[2::2], strict=True):
        if marker.startswith(b">>>>> SENT"):
            steps.append(CaptureStep(raw.split(b"\n\n")[0].decode()))
            continue
        frame = _one_frame(raw)
        steps[-1].wire.append(frame)
        if marker.startswith(b"<<<<< RECV REPLY"):
            replies.append(frame)
        else:
            steps[-1].after.append(frame)
    for step, reply in zip(steps, replies, strict=True):
        step.reply = reply
    return steps


def captured_job_uuid(step: CaptureStep) -> str:
    assert step.reply is not None
    m = re.search(rb"^Job-UUID: ([0-9a-f-]{36})$", step.reply, flags=re.M)
    assert m, step.reply
    return m.group(1).decode()


# ---------------------------------------------------------------- the server


@dataclass
class Command:
    line: str
    headers: dict[str, str]

    @property
    def word(self) -> str:
        return self.line.split(" ", 1)[0].lower()

    @property
    def args(self) -> str:
        return self.line.partition(" ")[2]


# A handler gets the connection and the command and writes whatever it likes.
Handler = Callable[["FakeConnection", Command], None]


class FakeConnection:
    def __init__(self, server: FakeEsl, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.commands: list[Command] = []  # everything received, in order
        self.held: asyncio.Queue[Command] = asyncio.Queue()  # commands left for the test to answer
        self.authed = False
        self.subscription: str | None = None
        self.closed = asyncio.Event()

    def send(self, *frames: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(b"".join(frames))

    def abort(self) -> None:
        """A torn connection (RST), as when FreeSWITCH dies or a firewall drops state."""
        self.writer.transport.abort()

    async def next_held(self, timeout: float = 2.0) -> Command:
        return await asyncio.wait_for(self.held.get(), timeout)

    async def run(self) -> None:
        try:
            if self.server.greeting:
                self.send(self.server.greeting)
            if self.server.close_after_greeting:
                await self.writer.drain()
                return
            while True:
                cmd = await self._read_command()
                if cmd is None:
                    return
                self.commands.append(cmd)
                self.server.log.append(cmd)
                self._dispatch(cmd)
                await self.writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writer.close()
            self.closed.set()

    async def _read_command(self) -> Command | None:
        try:
            block = await self.reader.readuntil(b"\n\n")
        except asyncio.IncompleteReadError:
            return None
        first, *rest = block.decode().strip("\n").split("\n")
        headers = {}
        for line in rest:
            name, _, value = line.partition(": ")
            headers[name] = value
        return Command(first, headers)

    def _dispatch(self, cmd: Command) -> None:
        server = self.server
        if not self.authed:
            if cmd.word != "auth":
                self.send(command_reply("-ERR command not found"))
            elif cmd.args == server.password:
                self.authed = True
                self.send(command_reply("+OK accepted"))
            else:
                # FreeSWITCH closes the socket right after refusing the password.
                self.send(command_reply("-ERR invalid"))
                self.writer.close()
            return
        if cmd.word in server.hold:
            self.held.put_nowait(cmd)
            return
        handler = server.handlers.get(cmd.word)
        if handler is not None:
            handler(self, cmd)
        elif cmd.word == "event":
            self.subscription = cmd.line
            self.send(command_reply("+OK event listener enabled json"))
        elif cmd.word == "api":
            self.send(server.api_reply(cmd.args))
        elif cmd.word == "bgapi":
            self._bgapi(cmd)
        elif cmd.word == "filter":
            header, _, value = cmd.args.partition(" ")
            self.send(command_reply(f"+OK filter added. [{header}]=[{value}]"))
        else:
            self.send(command_reply("-ERR command not found"))

    def _bgapi(self, cmd: Command) -> None:
        job_uuid = cmd.headers.get("Job-UUID") or str(uuid.uuid4())
        self.send(command_reply(f"+OK Job-UUID: {job_uuid}", {"Job-UUID": job_uuid}))
        body = self.server.job_bodies.get(cmd.args)
        if body is None:
            return  # a job that never finishes
        name, _, arg = cmd.args.partition(" ")
        headers = {"Event-Name": "BACKGROUND_JOB", "Job-UUID": job_uuid, "Job-Command": name}
        if arg:
            headers["Job-Command-Arg"] = arg
        self.send(json_event(headers, body))


class FakeEsl:
    """Listens on 127.0.0.1:<ephemeral>. Behaviour is set through plain attributes:

    * `api_bodies` / `job_bodies`: canned output per api / bgapi command (str body, or raw frame
      bytes for api replies lifted from a capture);
    * `hold`: first words ("api", "bgapi", ...) that are not answered automatically; they land in
      the connection's `held` queue for the test to answer by hand;
    * `handlers`: first word -> custom handler;
    * `greeting` / `close_after_greeting` / `password`.
    """

    def __init__(self, password: str = "ClueCon") -> None:
        self.password = password
        self.greeting: bytes = AUTH_REQUEST
        self.close_after_greeting = False
        self.api_bodies: dict[str, str | bytes] = {}
        self.job_bodies: dict[str, str] = {}
        self.hold: set[str] = set()
        self.handlers: dict[str, Handler] = {}
        self.connections: list[FakeConnection] = []
        self.log: list[Command] = []  # every command on every connection
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = asyncio.Queue[FakeConnection]()

    def api_reply(self, command: str) -> bytes:
        body = self.api_bodies.get(command)
        if isinstance(body, bytes):
            return body
        if body is None:
            return api_response(f"-ERR {command.split(' ')[0]} Command not found!\n")
        return api_response(body)

    async def start(self, port: int = 0) -> FakeEsl:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and tear down every open connection."""
        if self._server is not None:
            self._server.close()
        for conn in self.connections:
            conn.abort()
        if self._tasks:
            # Aborted sockets end their handlers; cancelling them instead would make asyncio's
            # start_server callback log the CancelledError.
            await asyncio.wait(set(self._tasks), timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FakeConnection(self, reader, writer)
        self.connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._accepted.put_nowait(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass  # the loop is shutting down
        finally:
            self._tasks.discard(task)

    async def next_connection(self, timeout: float = 2.0) -> FakeConnection:
        """The next accepted connection (each one is returned once, in order)."""
        return await asyncio.wait_for(self._accepted.get(), timeout)

    async def subscribed(self, timeout: float = 2.0) -> FakeConnection:
        """The next connection that got as far as its event subscription."""
        conn = await self.next_connection(timeout)
        async with asyncio.timeout(timeout):
            while conn.subscription is None:
                if conn.closed.is_set():
                    raise AssertionError("connection closed before subscribing")
                await asyncio.sleep(0.005)
        return conn
