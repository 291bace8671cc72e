"""ESL capture files: record a session against any ESL server, and read one back.

The format is the one of the shared fs-lab captures (../shared/esl-captures/README.txt): "# ..."
header lines, then one marker line per frame followed by the frame exactly as on the wire and
one separating newline:

    >>>>> SENT  t=+<sec>s              the bytes written: command line, header lines, blank line
    <<<<< RECV REPLY  t=+<sec>s        an api/response or command/reply frame
    <<<<< RECV EVENT <Event-Name> [<Event-Subclass>]  t=+<sec>s

Times are seconds since the first recorded command. What happens on the connection before that
command (auth, the event subscription, any setup sent with `unrecorded()`) is not captured.
Frames that are neither replies nor events (text/disconnect-notice, log/data) are recorded as
`<<<<< RECV <Content-Type>`; the reader skips them.

Record from Python (what the real-switch tier does, with its own call set up first)::

    async with CaptureRecorder("127.0.0.1", 8021, "ClueCon") as rec:
        b_leg = ...  # set up the call: rec.unrecorded("api originate ...") or another connection
        await rec.send(f"api uuid_hold {b_leg}")
        await rec.window(2.0)
        rec.write(path, title="uuid_hold", setup=f"... B-leg uuid={b_leg}")

or from the command line (one ESL command per argument; `wait:<sec>` sets the window after the
command before it; the default window is --window)::

    python -m bridge.sim.captures record --port 8021 --password ClueCon --out 12_x.txt \\
        --title "uuid_hold" --setup "none" "api uuid_hold <uuid>" wait:3 "api uuid_hold off <uuid>"
    python -m bridge.sim.captures check 12_x.txt      # re-parse, check every Content-Length

`--sanitize OLD=NEW` (repeatable) replaces text in every frame, URL-encoded too, and recomputes
the outer and inner Content-Length headers, as was done for the shared captures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bridge.esl.protocol import (
    Event,
    Frame,
    ProtocolError,
    encode_command,
    parse_event,
    split_frames,
    url_encode,
)

REPLY_TYPES = ("api/response", "command/reply")
RULE = "# " + "=" * 100
FORMAT_LINES = (
    '# Format: each frame preceded by a marker line ">>>>> SENT" (client->FS) or '
    '"<<<<< RECV <kind>" (FS->client),',
    "# followed by the frame exactly as on the wire (headers, blank line, body of Content-Length bytes).",
)
_MARKER_SPLIT = re.compile(rb"^(>>>>> SENT.*|<<<<< RECV.*)\n", re.M)
_MARKER = re.compile(r"(?:>>>>> SENT|<<<<< RECV (?P<kind>.+?))  t=\+(?P<t>\d+\.\d{3})s")
_CONTENT_LENGTH = re.compile(rb"^Content-Length: *(\d+)$", re.M)


# ---------------------------------------------------------------- frames and entries


@dataclass(slots=True)
class Entry:
    """One marker and its frame. `raw` is the frame without the separating newline."""

    direction: str  # "SENT" or "RECV"
    t: float
    raw: bytes
    kind: str = ""  # RECV only: REPLY, EVENT <name> [<subclass>], or the content type

    def marker(self) -> str:
        if self.direction == "SENT":
            return f">>>>> SENT  t=+{self.t:.3f}s"
        return f"<<<<< RECV {self.kind}  t=+{self.t:.3f}s"

    def frame(self) -> Frame:
        frames, rest = split_frames(self.raw)
        if len(frames) != 1 or rest:
            raise ProtocolError(f"{self.marker()}: not exactly one frame")
        return frames[0][1]


def kind_of(frame: Frame) -> str:
    """The marker kind of a received frame."""
    if frame.content_type in REPLY_TYPES:
        return "REPLY"
    if frame.content_type in ("text/event-plain", "text/event-json"):
        event = parse_event(frame)
        return " ".join(p for p in ("EVENT", event.name, event.subclass) if p)
    return frame.content_type or "UNKNOWN"


def sanitize(raw: bytes, substitutions: Sequence[tuple[str, str]]) -> bytes:
    """Replace text in one frame (plain and URL-encoded) and recompute its Content-Length
    headers: the frame's own and, in an event-plain body, the event's inner one."""
    if not substitutions:
        return raw
    pairs: list[tuple[bytes, bytes]] = []
    for old, new in substitutions:
        pairs.append((old.encode(), new.encode()))
        if url_encode(old) != old:
            pairs.append((url_encode(old).encode(), url_encode(new).encode()))

    def swap(data: bytes) -> bytes:
        for old, new in pairs:
            data = data.replace(old, new)
        return data

    end = raw.find(b"\n\n")
    if end < 0:
        return swap(raw)
    head, body = raw[: end + 2], raw[end + 2 :]
    if b"Content-Type: text/event-plain" in head:
        inner_end = body.find(b"\n\n")
        if inner_end >= 0:
            inner_head, inner_body = swap(body[: inner_end + 2]), swap(body[inner_end + 2 :])
            if _CONTENT_LENGTH.search(inner_head):
                inner_head = _CONTENT_LENGTH.sub(f"Content-Length: {len(inner_body)}".encode(), inner_head, 1)
            body = inner_head + inner_body
        else:
            body = swap(body)
    else:
        body = swap(body)
    head = swap(head)
    if _CONTENT_LENGTH.search(head):
        head = _CONTENT_LENGTH.sub(f"Content-Length: {len(body)}".encode(), head, 1)
    return head + body


# ---------------------------------------------------------------- the file


def render(header: str, entries: Sequence[Entry]) -> bytes:
    """A capture file: header lines (each starting with '#'), then marker, frame, newline."""
    lines = [line for line in header.splitlines() if line]
    if any(not line.startswith("#") for line in lines):
        raise ValueError("every header line must start with '#'")
    out = [("".join(f"{line}\n" for line in lines)).encode()]
    for entry in entries:
        out.append(entry.marker().encode() + b"\n" + entry.raw + b"\n")
    return b"".join(out)


def split(data: bytes) -> tuple[str, list[Entry]]:
    """A capture file's header text and its entries (the inverse of render)."""
    parts = _MARKER_SPLIT.split(data)
    entries: list[Entry] = []
    for marker, raw in zip(parts[1::2], parts[2::2], strict=True):
        m = _MARKER.fullmatch(marker.decode())
        if m is None:
            raise ProtocolError(f"bad marker line {marker[:80]!r}")
        if not raw.endswith(b"\n"):
            raise ProtocolError(f"{marker.decode()}: frame not followed by a newline")
        kind = m.group("kind")
        entries.append(Entry("RECV" if kind else "SENT", float(m.group("t")), raw[:-1], kind or ""))
    return parts[0].decode(), entries


def check(data: bytes) -> list[str]:
    """Problems in a capture file (empty if none): markers, header lines, one frame per RECV with
    exact outer and inner Content-Length, the kind its frame says, commands ending in a blank line."""
    problems: list[str] = []
    try:
        header, entries = split(data)
    except ProtocolError as exc:
        return [str(exc)]
    if any(line and not line.startswith("#") for line in header.splitlines()):
        problems.append("a header line does not start with '#'")
    for i, entry in enumerate(entries):
        where = f"#{i} {entry.marker()}"
        if entry.direction == "SENT":
            if not entry.raw.endswith(b"\n\n") or b"\n\n" in entry.raw[:-2]:
                problems.append(f"{where}: a command must be one header block ending in a blank line")
            continue
        try:
            frame = entry.frame()
        except ProtocolError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if kind_of(frame) != entry.kind:
            problems.append(f"{where}: the frame is {kind_of(frame)!r}")
        if frame.content_type == "text/event-plain":
            inner_end = frame.body.find(b"\n\n")
            inner = _CONTENT_LENGTH.search(frame.body[: inner_end + 2]) if inner_end >= 0 else None
            if inner and int(inner.group(1)) != len(frame.body) - inner_end - 2:
                problems.append(f"{where}: inner Content-Length {inner.group(1)} is not the body's length")
    return problems


@dataclass
class Step:
    """One command, its reply and the events received until the next command."""

    sent: str
    reply: Frame | None = None
    events: list[Event] = field(default_factory=list)


@dataclass
class Capture:
    header: str
    steps: list[Step]

    def uuid(self, label: str) -> str:
        """The uuid the header's setup line gives for `label` (e.g. "B-leg ... uuid=<uuid>")."""
        m = re.search(label + r"[^;]*?uuid=([0-9a-f-]{36})", self.header)
        assert m, f"{label} uuid not in capture header"
        return m.group(1)


def parse(data: bytes) -> Capture:
    """Read a capture file. Replies are matched to commands in order (esl-captures/11 pipelines
    its commands, so a reply may come after the next command was sent)."""
    header, entries = split(data)
    steps: list[Step] = []
    replies: list[Frame] = []
    for entry in entries:
        if entry.direction == "SENT":
            steps.append(Step(entry.raw.split(b"\n\n")[0].decode()))
            continue
        frame = entry.frame()
        if frame.content_type.startswith("text/event-"):
            if not steps:
                raise ProtocolError("an event before the first command")
            steps[-1].events.append(parse_event(frame))
        elif frame.content_type in REPLY_TYPES:
            replies.append(frame)
    for step, reply in zip(steps, replies, strict=True):
        step.reply = reply
    return Capture(header, steps)


def load(path: str | Path) -> Capture:
    return parse(Path(path).read_bytes())


# ---------------------------------------------------------------- recording


class CaptureRecorder:
    """An ESL connection that records what it sends and receives once the first command is sent
    with `send()`. Works against the simulator or a real FreeSWITCH alike."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8021,
        password: str = "ClueCon",
        *,
        subscription: str = "event plain ALL",
        substitutions: Sequence[tuple[str, str]] = (),
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.password = host, port, password
        self.subscription = subscription
        self.substitutions = list(substitutions)
        self.timeout = timeout
        self.entries: list[Entry] = []
        self.version = ""
        self.switchname = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: list[asyncio.Future[Frame]] = []
        self._t0: float | None = None
        self._buffer = b""
        self._greeting: asyncio.Future[Frame] | None = None
        self.closed = asyncio.Event()

    async def __aenter__(self) -> CaptureRecorder:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        self._greeting = loop.create_future()
        self._task = loop.create_task(self._read(), name=f"esl-capture:{self.host}:{self.port}")
        greeting = await asyncio.wait_for(self._greeting, self.timeout)
        if greeting.content_type != "auth/request":
            raise ProtocolError(f"expected auth/request, got {greeting.content_type!r}")
        reply = await self.unrecorded(f"auth {self.password}")
        if not reply.reply_text.startswith("+OK"):
            raise PermissionError(f"ESL auth refused: {reply.reply_text}")
        if self.subscription:
            reply = await self.unrecorded(self.subscription)
            if not reply.reply_text.startswith("+OK"):
                raise ProtocolError(f"{self.subscription!r} refused: {reply.reply_text}")
        version = (await self.unrecorded("api version")).body_text()
        m = re.search(r"FreeSWITCH Version (\S+)", version)
        self.version = re.split(r"[+~]", m.group(1))[0] if m else version.strip()
        self.switchname = (await self.unrecorded("api switchname")).body_text().strip()

    async def _read(self) -> None:
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    break
                now = loop.time()
                self._buffer += chunk
                frames, self._buffer = split_frames(self._buffer)
                for raw, frame in frames:
                    self._received(now, raw, frame)
        except (ConnectionError, ProtocolError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending:
                if not fut.done():
                    fut.set_exception(ConnectionError("the ESL connection closed"))
            if self._greeting is not None and not self._greeting.done():
                self._greeting.set_exception(ConnectionError("the ESL connection closed"))

    def _received(self, now: float, raw: bytes, frame: Frame) -> None:
        if self._greeting is not None and not self._greeting.done():
            self._greeting.set_result(frame)
            return
        if self._t0 is not None:
            raw = sanitize(raw, self.substitutions)
            frame = split_frames(raw)[0][0][1]
            self.entries.append(Entry("RECV", now - self._t0, raw, kind_of(frame)))
        if frame.content_type in REPLY_TYPES and self._pending:
            fut = self._pending.pop(0)
            if not fut.done():
                fut.set_result(frame)

    def _write(self, command: str, headers: dict[str, str] | None, *, record: bool) -> asyncio.Future[Frame]:
        if self._writer is None or self.closed.is_set():
            raise ConnectionError("not connected")
        data = encode_command(command, headers)
        loop = asyncio.get_running_loop()
        if record:
            now = loop.time()
            if self._t0 is None:
                self._t0 = now
            self.entries.append(Entry("SENT", now - self._t0, sanitize(data, self.substitutions)))
        fut: asyncio.Future[Frame] = loop.create_future()
        self._pending.append(fut)
        self._writer.write(data)
        return fut

    async def unrecorded(self, command: str, headers: dict[str, str] | None = None) -> Frame:
        """Send a command outside the capture (setup). Only before the first recorded command:
        after it, everything on the connection is recorded."""
        if self._t0 is not None:
            raise RuntimeError("recording has started: every later command is part of the capture")
        return await asyncio.wait_for(self._write(command, headers, record=False), self.timeout)

    async def send(
        self, command: str, headers: dict[str, str] | None = None, *, wait_reply: bool = True
    ) -> Frame | None:
        """Send and record a command; its reply (None with wait_reply=False: pipelining)."""
        fut = self._write(command, headers, record=True)
        if not wait_reply:
            return None
        return await asyncio.wait_for(fut, self.timeout)

    async def window(self, seconds: float) -> None:
        """Go on recording what arrives for `seconds` (the capture window after a command)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), seconds)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.closed.set()

    # ------------------------------------------------------------ output

    def header(self, title: str, setup: str, *, sanitized: str | None = None) -> str:
        if sanitized is None:
            subs = ", ".join(f"{old} -> {new}" for old, new in self.substitutions)
            sanitized = f"{subs}; Content-Length recomputed." if subs else "nothing."
        # what the server said is sanitized like its frames; title and setup are the caller's
        switchname, version = (
            sanitize(v.encode(), self.substitutions).decode() for v in (self.switchname, self.version)
        )
        lines = [
            f"# {switchname} ESL capture: {title}",
            f"# FreeSWITCH {version}, switchname {switchname}, ESL {self.host}:{self.port}, "
            f"subscription: {self.subscription}",
            f"# Setup (not captured): {setup}",
            *FORMAT_LINES,
            f"# Sanitized: {sanitized}",
            RULE,
        ]
        return "\n".join(" ".join(line.splitlines()) for line in lines) + "\n"

    def render(self, title: str, setup: str, *, sanitized: str | None = None) -> bytes:
        return render(self.header(title, setup, sanitized=sanitized), self.entries)

    def write(self, path: str | Path, title: str, setup: str, *, sanitized: str | None = None) -> Path:
        """Write the capture and read it back: a file that does not check is an error."""
        out = Path(path)
        data = self.render(title, setup, sanitized=sanitized)
        out.write_bytes(data)
        problems = check(out.read_bytes())
        if problems:
            raise ProtocolError(f"{out}: " + "; ".join(problems[:5]))
        return out


async def record(
    path: str | Path,
    commands: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8021,
    password: str = "ClueCon",
    title: str = "",
    setup: str = "none",
    window: float = 2.0,
    pipeline: bool = False,
    subscription: str = "event plain ALL",
    substitutions: Sequence[tuple[str, str]] = (),
) -> Path:
    """Record `commands` (ESL command lines; "wait:<sec>" sets the window after the command
    before it) into `path`. With `pipeline` every command is sent before any reply is awaited."""
    plan: list[tuple[str, float]] = []
    for item in commands:
        if item.startswith("wait:"):
            if not plan:
                raise ValueError("wait:<sec> must follow a command")
            plan[-1] = (plan[-1][0], float(item[5:]))
        else:
            plan.append((item, window))
    async with CaptureRecorder(
        host, port, password, subscription=subscription, substitutions=substitutions
    ) as rec:
        if pipeline:
            for command, _ in plan:
                await rec.send(command, wait_reply=False)
            await rec.window(max((w for _, w in plan), default=window))
        else:
            for command, wait in plan:
                await rec.send(command)
                await rec.window(wait)
        return rec.write(path, title or " ; ".join(c for c, _ in plan), setup)


# ---------------------------------------------------------------- command line


def _substitution(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old:
        raise argparse.ArgumentTypeError("expected OLD=NEW")
    return old, new


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.sim.captures", description="Record or check ESL capture files."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    rec = sub.add_parser("record", help="record ESL commands and what they cause into a capture file")
    rec.add_argument("commands", nargs="+", help='ESL command lines ("api ...", "bgapi ..."); wait:<sec>')
    rec.add_argument("--out", required=True, help="the capture file to write")
    rec.add_argument("--host", default="127.0.0.1")
    rec.add_argument("--port", type=int, default=8021)
    rec.add_argument("--password", default="ClueCon")
    rec.add_argument("--title", default="", help="the first header line's description")
    rec.add_argument("--setup", default="none", help="what was set up before (not captured), with uuids")
    rec.add_argument("--window", type=float, default=2.0, help="seconds recorded after each command")
    rec.add_argument("--pipeline", action="store_true", help="send every command before awaiting replies")
    rec.add_argument("--subscription", default="event plain ALL")
    rec.add_argument("--sanitize", type=_substitution, action="append", default=[], metavar="OLD=NEW")
    chk = sub.add_parser("check", help="re-parse capture files and check their Content-Lengths")
    chk.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.action == "check":
        bad = 0
        for name in args.files:
            problems = check(Path(name).read_bytes())
            for problem in problems:
                print(f"{name}: {problem}", file=sys.stderr)
            bad += bool(problems)
        return 1 if bad else 0
    out = asyncio.run(
        record(
            args.out,
            args.commands,
            host=args.host,
            port=args.port,
            password=args.password,
            title=args.title,
            setup=args.setup,
            window=args.window,
            pipeline=args.pipeline,
            subscription=args.subscription,
            substitutions=args.sanitize,
        )
    )
    capture = load(out)
    print(f"{out}: {len(capture.steps)} commands, {sum(len(s.events) for s in capture.steps)} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
