"""ESL wire format: framing, header blocks and event bodies (freeswitch.md §1.2, §1.4).

Pure functions and a stream reader; no sockets are opened here. Both the client
(`bridge.esl.client`) and the switch simulator (`bridge.sim`) use this module, so the
two ends of every test speak exactly the same framing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import orjson

MAX_HEADER_BLOCK = 1 << 20  # FreeSWITCH's own command buffer limit
MAX_BODY = 64 << 20


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid ESL frame."""


@dataclass(slots=True)
class Frame:
    """One message on the socket: a header block plus an optional body."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")

    def body_text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(slots=True)
class Event:
    """A FreeSWITCH event with decoded headers. `body` is the event's own body (BACKGROUND_JOB
    output, mod_audio_fork JSON, ...), never folded into the headers."""

    headers: dict[str, str]
    body: str | None = None
    extra_blocks: list[dict[str, str]] = field(default_factory=list)
    # Which connection delivered it, when a client talks to several switches (set by its user).
    origin: str = ""

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def subclass(self) -> str:
        return self.headers.get("Event-Subclass", "")

    @property
    def unique_id(self) -> str:
        return self.headers.get("Unique-ID", "")

    @property
    def key(self) -> str:
        """The name handlers are registered under: the subclass for CUSTOM events."""
        return self.subclass if self.name == "CUSTOM" and self.subclass else self.name

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def var(self, name: str, default: str = "") -> str:
        return self.headers.get(f"variable_{name}", default)


def parse_header_block(block: bytes, *, urldecode: bool = False) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in block.decode("utf-8", errors="replace").split("\n"):
        line = raw.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"header line without a colon: {line[:80]!r}")
        value = value[1:] if value.startswith(" ") else value
        headers[name.strip()] = unquote(value) if urldecode else value
    return headers


def _content_length(headers: dict[str, str]) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    try:
        n = int(raw.strip())
    except ValueError as exc:
        raise ProtocolError(f"bad Content-Length {raw!r}") from exc
    if n < 0 or n > MAX_BODY:
        raise ProtocolError(f"Content-Length out of range: {n}")
    return n


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one frame. Raises asyncio.IncompleteReadError on EOF, ProtocolError on garbage."""
    # Tolerate stray blank lines between frames (some peers send "\n\n\n").
    while True:
        try:
            block = await reader.readuntil(b"\n\n")
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("header block too large") from exc
        if block.strip(b"\r\n"):
            break
    headers = parse_header_block(block)
    length = _content_length(headers)
    body = await reader.readexactly(length) if length else b""
    return Frame(headers, body)


class FrameSplitter:
    """Frames out of a byte stream that arrives in chunks of any size: the reader's loop feeds
    it what one socket read gave and handles every complete frame at once. One `readuntil` and
    one `readexactly` per frame were a quarter of the reader's time in an event flood."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0  # bytes the first incomplete frame is known to need, once its head is read

    def feed(self, data: bytes) -> list[Frame]:
        self._parts.append(data)
        self._have += len(data)
        if self._have < self._need:
            return []  # a large body still arriving: no rescan of its head per chunk
        buf = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        frames: list[Frame] = []
        pos = 0
        size = len(buf)
        need = 0
        while True:
            # Stray blank lines between frames (some peers send "\n\n\n") belong to no frame.
            while pos < size and buf[pos] in b"\r\n":
                pos += 1
            end = buf.find(b"\n\n", pos)
            if end < 0:
                if size - pos > MAX_HEADER_BLOCK:
                    raise ProtocolError("header block too large")
                break
            if end - pos > MAX_HEADER_BLOCK:
                raise ProtocolError("header block too large")
            headers = parse_header_block(buf[pos : end + 2])
            stop = end + 2 + _content_length(headers)
            if size < stop:
                need = stop - pos
                break
            frames.append(Frame(headers, buf[end + 2 : stop]))
            pos = stop
        rest = buf[pos:] if pos else buf
        self._parts = [rest] if rest else []
        self._have = len(rest)
        self._need = need
        return frames


def parse_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Split a byte buffer into complete frames; returns (frames, leftover)."""
    spans, rest = split_frames(data)
    return [frame for _, frame in spans], rest


def split_frames(data: bytes) -> tuple[list[tuple[bytes, Frame]], bytes]:
    """Complete frames in `data` with their exact bytes (captures keep them), and what is left
    over. Blank lines between frames are skipped (they belong to no frame)."""
    out: list[tuple[bytes, Frame]] = []
    pos = 0
    while True:
        while data.startswith(b"\n", pos):
            pos += 1
        end = data.find(b"\n\n", pos)
        if end < 0:
            return out, data[pos:]
        headers = parse_header_block(data[pos : end + 2])
        stop = end + 2 + _content_length(headers)
        if len(data) < stop:
            return out, data[pos:]
        out.append((data[pos:stop], Frame(headers, data[end + 2 : stop])))
        pos = stop


def parse_event(frame: Frame) -> Event:
    """Decode a text/event-plain or text/event-json frame into an Event."""
    ctype = frame.content_type
    if ctype == "text/event-json":
        try:
            # orjson: the decoding was a fifth of a flood's CPU with the stdlib's (bench/events.py).
            obj = orjson.loads(frame.body)
        except ValueError as exc:  # orjson.JSONDecodeError is one
            raise ProtocolError("event-json body is not JSON") from exc
        if not isinstance(obj, dict):
            raise ProtocolError("event-json body is not an object")
        body = obj.pop("_body", None)
        obj.pop("Content-Length", None)
        try:
            # What FreeSWITCH sends: string values only, and then the object is the headers as it
            # is. str.join (in C) refuses anything else; rebuilding the dict in Python instead
            # cost almost as much as the JSON decoding of a CHANNEL_* event's ~90 headers.
            "".join(obj.values())
        except TypeError:
            pass
        else:
            return Event(obj, body if isinstance(body, str) else None)
        headers = {k: "|".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in obj.items()}
        return Event(headers, body if isinstance(body, str) else None)
    if ctype == "text/event-plain":
        return parse_plain_event(frame.body)
    raise ProtocolError(f"not an event frame: {ctype!r}")


def parse_plain_event(data: bytes) -> Event:
    """The inner text of an event-plain frame: URL-encoded headers, then an optional body with
    its own Content-Length. FreeSWITCH sometimes writes two events' headers back to back in one
    frame (COMMAND then PRIVATE_COMMAND, see esl-captures/04): a repeated `Event-Name` starts a
    new block, so the first event keeps its own values and the rest land in `extra_blocks`.
    Other repeated names (CHANNEL_HANGUP_COMPLETE repeats `Hangup-Cause`) keep the first value."""
    end = data.find(b"\n\n")
    head, rest = (data, b"") if end < 0 else (data[: end + 1], data[end + 2 :])
    blocks: list[dict[str, str]] = [{}]
    for raw in head.decode("utf-8", errors="replace").split("\n"):
        line = raw.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"header line without a colon: {line[:80]!r}")
        value = unquote(value[1:] if value.startswith(" ") else value)
        if name == "Event-Name" and name in blocks[-1]:
            blocks.append({})
        blocks[-1].setdefault(name, value)
    body: str | None = None
    for block in blocks:
        if "Content-Length" in block:
            length = _content_length(block)
            body = rest[:length].decode("utf-8", errors="replace")
            del block["Content-Length"]
    if not blocks[0]:
        raise ProtocolError("empty event")
    return Event(blocks[0], body, blocks[1:])


# ---------------------------------------------------------------- encoding (both directions)

_PLAIN_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '\r\n #%&+:;<=>?@[\\]^`{|}"')


def url_encode(value: str) -> str:
    """switch_url_encode: what FreeSWITCH escapes in event-plain header values."""
    return quote(value, safe=_PLAIN_SAFE.replace("%", ""))


def encode_frame(headers: dict[str, str] | list[tuple[str, str]], body: bytes | str = b"") -> bytes:
    """A frame as FreeSWITCH writes it: headers, blank line, Content-Length bytes of body."""
    raw = body.encode() if isinstance(body, str) else body
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    if raw:
        items = [(k, v) for k, v in items if k != "Content-Length"]
        items.insert(0, ("Content-Length", str(len(raw))))
    head = "".join(f"{k}: {v}\n" for k, v in items)
    return head.encode() + b"\n" + raw


def encode_plain_event(headers: dict[str, str], body: str | None = None) -> bytes:
    """The inner text of a text/event-plain frame."""
    lines = [f"{k}: {url_encode(v)}\n" for k, v in headers.items()]
    if body is not None:
        raw = body.encode()
        lines.append(f"Content-Length: {len(raw)}\n")
        return ("".join(lines) + "\n").encode() + raw
    return ("".join(lines) + "\n").encode()


def encode_json_event(headers: dict[str, str], body: str | None = None) -> bytes:
    obj: dict[str, str] = dict(headers)
    if body is not None:
        obj["Content-Length"] = str(len(body.encode()))
        obj["_body"] = body
    return json.dumps(obj).encode()


def encode_command(command: str, headers: dict[str, str] | None = None) -> bytes:
    """Client -> FreeSWITCH: the command line, extra header lines, blank line."""
    if "\n" in command:
        raise ValueError("an ESL command must be a single line")
    for name, value in (headers or {}).items():
        # A line break would end the header block early and smuggle in a second command.
        if "\n" in name or "\n" in value or ":" in name:
            raise ValueError(f"invalid ESL command header {name!r}")
    extra = "".join(f"{k}: {v}\n" for k, v in (headers or {}).items())
    return f"{command}\n{extra}\n".encode()
