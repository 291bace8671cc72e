"""Inbound asyncio ESL client: one shared control connection to FreeSWITCH (freeswitch.md §1, §4.3).

Task layout, and why:

* The connection task connects, authenticates, subscribes and then *is* the socket reader. It
  never awaits anything but the socket: FreeSWITCH drops a listener that falls 500 events behind,
  so events go straight into a bounded queue and replies resolve futures with plain set_result.
* One dispatcher task drains that queue and calls the (sync) event handlers in order.
* One notifier task runs the async on_up / on_down connection listeners in order, so a slow
  resync after a reconnect never stalls reading or event delivery.

Replies to `api` and plain commands carry no correlation id; they come back in the order the
commands were written. Every connection keeps a FIFO of pending futures, and a command's write
and the append of its future happen under one lock. A caller that gives up after writing leaves
its (cancelled) future in the FIFO as a tombstone, so its late reply is swallowed instead of being
handed to the next caller. `bgapi` jobs are keyed by a client-chosen Job-UUID and resolved by the
BACKGROUND_JOB event.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.config import parse_esl_url
from bridge.esl.errors import (
    EslAuthError,
    EslCommandError,
    EslConnectionError,
    EslError,
    EslTimeout,
    command_name,
)
from bridge.esl.protocol import (
    MAX_HEADER_BLOCK,
    Event,
    Frame,
    FrameSplitter,
    ProtocolError,
    encode_command,
    parse_event,
    read_frame,
)
from bridge.tasks import cancel_and_wait

__all__ = [
    "DEFAULT_EVENTS",
    "EslAuthError",
    "EslClient",
    "EslCommandError",
    "EslConnectionError",
    "EslError",
    "EslTimeout",
    "subscription_command",
]

log = structlog.get_logger(__name__)

# freeswitch.md §2.12. CUSTOM must come last: FreeSWITCH reads every token after it as a subclass.
DEFAULT_EVENTS: tuple[str, ...] = (
    "CHANNEL_CREATE",
    "CHANNEL_PARK",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_CALLSTATE",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "DTMF",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "RECORD_START",
    "RECORD_STOP",
    "BACKGROUND_JOB",
    "HEARTBEAT",
    "CUSTOM",
    "conference::maintenance",
    "callcenter::info",
    "mod_audio_fork::connect",
    "mod_audio_fork::connect_failed",
    "mod_audio_fork::disconnect",
    "mod_audio_fork::error",
    "mod_audio_fork::transcription",
    "mod_audio_fork::transfer",
    "mod_audio_fork::play_audio",
    "mod_audio_fork::kill_audio",
    "mod_audio_fork::json",
    "mod_audio_fork::buffer_overrun",
)

# bgapi results and the heartbeat watchdog depend on these, whatever the caller subscribes to.
_REQUIRED_EVENTS = ("BACKGROUND_JOB", "HEARTBEAT")
_EVENT_TYPES = frozenset({"text/event-json", "text/event-plain"})
_REPLY_TYPES = frozenset({"command/reply", "api/response"})
_QUEUE_FULL_LOG_EVERY = 1000
_READ_CHUNK = 1 << 16
# Events handed to the handlers between two yields to the loop, at most, and for at most this long.
_DISPATCH_BATCH = 64
_DISPATCH_SLICE_S = 0.002

EventHandler = Callable[[Event], None]
OnUp = Callable[[], Awaitable[None]]
OnDown = Callable[[Exception], Awaitable[None]]


def subscription_command(events: Sequence[str]) -> str:
    """`event json <names> CUSTOM <subclasses>`, whatever order the names were given in.

    Subclasses (tokens with `::`, or lower-case tokens after `CUSTOM`) all go after a single
    CUSTOM at the end, because FreeSWITCH treats every token after CUSTOM as a subclass and would
    silently ignore an event name placed there."""
    names: list[str] = []
    subclasses: list[str] = []
    after_custom = False
    for token in (t for entry in events for t in entry.split()):
        if token.upper() == "CUSTOM":
            after_custom = True
        elif "::" in token or (after_custom and not token.isupper()):
            subclasses.append(token)
        else:
            names.append(token)
    upper = {n.upper() for n in names}
    if "ALL" not in upper:
        names.extend(n for n in _REQUIRED_EVENTS if n not in upper)
    parts = ["event", "json", *dict.fromkeys(names)]
    if subclasses:
        parts += ["CUSTOM", *dict.fromkeys(subclasses)]
    return " ".join(parts)


@dataclass(slots=True)
class _Pending:
    command: str
    future: asyncio.Future[Frame]


@dataclass(eq=False)
class _Connection:
    """One authenticated socket. Pending replies and jobs belong to the socket they were written
    on, so a late frame from a dead socket can never resolve a command sent on its successor."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    generation: int
    pending: collections.deque[_Pending] = field(default_factory=collections.deque)
    jobs: dict[str, asyncio.Future[Event]] = field(default_factory=dict)
    alive: bool = True


class _PeerHangup(Exception):
    """FreeSWITCH announced that it is closing this socket."""


class EslClient:
    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        events: Sequence[str] = DEFAULT_EVENTS,
        command_timeout: float = 10.0,
        reconnect: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        heartbeat_timeout: float = 60.0,
        event_queue_size: int = 100_000,
    ) -> None:
        if "\n" in password or "\r" in password:
            raise ValueError("the ESL password cannot contain a line break")
        self.host = host
        self.port = port
        self.password = password
        self.subscription = subscription_command(events)
        self.command_timeout = command_timeout
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = max(backoff_max, backoff_initial)
        self.heartbeat_timeout = heartbeat_timeout
        self.dropped_events = 0  # events lost because the dispatcher queue was full

        self._events: asyncio.Queue[Event] = asyncio.Queue(maxsize=event_queue_size)
        self._lifecycle: asyncio.Queue[tuple[str, int, Exception | None]] = asyncio.Queue()
        self._handlers: list[EventHandler] = []
        self._listeners: list[tuple[OnUp | None, OnDown | None]] = []
        self._write_lock = asyncio.Lock()
        self._conn: _Connection | None = None
        self._generation = 0
        self._ever_up = asyncio.Event()
        self._last_error: Exception | None = None
        self._closed = False
        self._queue_overflowing = False
        self._runner: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._notifier: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> EslClient:
        target = parse_esl_url(url)
        return cls(target.host, target.port, target.password, **kw)

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.alive

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, wait: float | None = 10.0) -> None:
        if self._closed:
            raise EslConnectionError("the ESL client is closed")
        if self._runner is None:
            loop = asyncio.get_running_loop()
            self._dispatcher = loop.create_task(self._dispatch_events(), name="esl-dispatch")
            self._notifier = loop.create_task(self._notify_listeners(), name="esl-listeners")
            self._runner = loop.create_task(self._run(), name="esl-connection")
            for task in (self._dispatcher, self._notifier, self._runner):
                task.add_done_callback(_report_crash)
        if wait is None or self._ever_up.is_set():
            return
        up = asyncio.ensure_future(self._ever_up.wait())
        try:
            await asyncio.wait({up, self._runner}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
        if self._ever_up.is_set():
            return
        last = self._last_error
        # Keep the refusal's own type (EslAuthError) so a wrong password is recognisable.
        cls = type(last) if isinstance(last, EslConnectionError) else EslConnectionError
        if self._runner.done():
            raise cls(f"could not connect to FreeSWITCH ESL at {self.host}:{self.port}: {last}")
        # The loop keeps retrying in the background; close() stops it.
        raise cls(f"could not connect to FreeSWITCH ESL at {self.host}:{self.port} within {wait:g}s: {last}")

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._runner, self._dispatcher, self._notifier) if t is not None]
        await cancel_and_wait(tasks, what="esl")  # skips the calling task; bounded
        # Covers close() before the runner ever ran (its finally is what normally does this).
        if self._conn is not None:
            self._lost(self._conn, EslConnectionError("the ESL client was closed"), closing=True)

    # ------------------------------------------------------------ commands

    async def api(self, command: str, *, timeout: float | None = None, check: bool = True) -> str:
        frame = await self._call(f"api {command}", None, timeout)
        text = frame.body_text() if frame.content_type == "api/response" else frame.reply_text
        text = text.rstrip("\n")
        if check and text.startswith("-"):
            raise EslCommandError(command, text.strip())
        return text

    async def bgapi(
        self,
        command: str,
        *,
        timeout: float | None = None,
        check: bool = True,
        job_uuid: str | None = None,
    ) -> str:
        job_uuid = job_uuid or str(uuid.uuid4())
        line = f"bgapi {command}"
        data = encode_command(line, {"Job-UUID": job_uuid})
        # FreeSWITCH echoes the header verbatim, but compare case-insensitively like it does.
        key = job_uuid.lower()
        limit = self.command_timeout if timeout is None else timeout
        conn: _Connection | None = None
        job: asyncio.Future[Event] | None = None
        stage = "reply"
        try:
            async with asyncio.timeout(limit):
                conn, reply_future, job = await self._submit(line, data, key)
                reply = await reply_future
                text = reply.reply_text.strip()
                if text.startswith("-"):
                    # Refused outright (bad syntax, permission): no BACKGROUND_JOB will follow.
                    if check:
                        raise EslCommandError(command, text)
                    return text
                stage = "BACKGROUND_JOB"
                assert job is not None
                event = await job
        except TimeoutError:
            what = "no reply to" if stage == "reply" else "no BACKGROUND_JOB for"
            raise EslTimeout(f"{what} {command_name(line)} within {limit:g}s (Job-UUID {job_uuid})") from None
        finally:
            if conn is not None and job is not None:
                if conn.jobs.get(key) is job:
                    del conn.jobs[key]
                _discard(job)
        body = (event.body or "").strip()
        if check and body.startswith("-"):
            raise EslCommandError(command, body)
        return body

    async def command(
        self, line: str, headers: dict[str, str] | None = None, *, timeout: float | None = None
    ) -> Frame:
        if line.strip().split(" ", 1)[0].lower() == "myevents":
            # freeswitch.md §1.5: myevents on an inbound socket binds it to one channel, and
            # FreeSWITCH closes the socket when that channel goes away - fatal for a shared link.
            raise ValueError("myevents is not allowed on the shared ESL connection; use filter instead")
        frame = await self._call(line, headers, timeout)
        text = frame.reply_text.strip()
        if text.startswith("-"):
            raise EslCommandError(line, text)
        return frame

    # ------------------------------------------------------------ subscriptions

    def add_event_handler(self, handler: Callable[[Event], None]) -> None:
        if inspect.iscoroutinefunction(handler):
            # Awaiting handlers would let one slow consumer stall every event; queue work instead.
            raise TypeError("ESL event handlers must be plain callables, not coroutine functions")
        self._handlers.append(handler)

    def add_connection_listener(
        self,
        on_up: Callable[[], Awaitable[None]] | None = None,
        on_down: Callable[[Exception], Awaitable[None]] | None = None,
    ) -> None:
        self._listeners.append((on_up, on_down))

    # ------------------------------------------------------------ command plumbing

    async def _call(self, line: str, headers: dict[str, str] | None, timeout: float | None) -> Frame:
        data = encode_command(line, headers)
        limit = self.command_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                _, reply, _ = await self._submit(line, data, None)
                # A timeout here cancels `reply`, which stays in the FIFO as the tombstone.
                return await reply
        except TimeoutError:
            raise EslTimeout(f"no reply to {command_name(line)} within {limit:g}s") from None

    async def _submit(
        self, line: str, data: bytes, job_key: str | None
    ) -> tuple[_Connection, asyncio.Future[Frame], asyncio.Future[Event] | None]:
        async with self._write_lock:
            conn = self._live_connection()
            loop = asyncio.get_running_loop()
            job: asyncio.Future[Event] | None = None
            if job_key is not None:
                if job_key in conn.jobs:
                    raise ValueError(f"a job with Job-UUID {job_key} is already pending")
                # Registered before the write so the BACKGROUND_JOB can never arrive unclaimed.
                job = loop.create_future()
                conn.jobs[job_key] = job
            reply: asyncio.Future[Frame] = loop.create_future()
            conn.pending.append(_Pending(line, reply))
            conn.writer.write(data)
            try:
                await conn.writer.drain()
            except BaseException as exc:
                # The command may be on the wire: leave a tombstone, and make sure nobody is left
                # holding a future whose exception is never retrieved.
                reply.cancel()
                if job is not None and job_key is not None:
                    conn.jobs.pop(job_key, None)
                    job.cancel()
                if isinstance(exc, OSError):
                    raise EslConnectionError(
                        f"connection to FreeSWITCH lost while sending {command_name(line)}: {exc}"
                    ) from exc
                raise
            return conn, reply, job

    def _live_connection(self) -> _Connection:
        if self._closed:
            raise EslConnectionError("the ESL client is closed")
        conn = self._conn
        if conn is None or not conn.alive:
            detail = f" (last error: {self._last_error})" if self._last_error else ""
            raise EslConnectionError(f"not connected to FreeSWITCH ESL at {self.host}:{self.port}{detail}")
        return conn

    # ------------------------------------------------------------ connection task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff_initial
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    conn = await self._connect()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._last_error = exc
                    self._log_connect_failure(exc, attempt, delay)
                    if not self.reconnect:
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                log.info("esl_connected", host=self.host, port=self.port, attempts=attempt)
                attempt = 0
                up_since = loop.time()
                self._ever_up.set()
                self._lifecycle.put_nowait(("up", conn.generation, None))
                reason = await self._read_loop(conn)
                self._last_error = reason
                self._lost(conn, reason)
                if not self.reconnect:
                    return
                # Only a connection that stayed up a while earns a fast retry; one that FreeSWITCH
                # keeps dropping right after login backs off like a failed connect.
                if loop.time() - up_since >= self.backoff_max:
                    delay = self.backoff_initial
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
        finally:
            if self._conn is not None:
                self._lost(self._conn, EslConnectionError("the ESL client was closed"), closing=True)

    def _log_connect_failure(self, exc: Exception, attempt: int, delay: float) -> None:
        retry_in = delay if self.reconnect else None
        fields = {"host": self.host, "port": self.port, "attempt": attempt, "retry_in_s": retry_in}
        if isinstance(exc, EslAuthError):
            log.error("esl_auth_refused", error=str(exc), **fields)
        elif isinstance(exc, EslError | OSError | ProtocolError):
            log.warning("esl_connect_failed", error=str(exc) or type(exc).__name__, **fields)
        else:
            log.error("esl_connect_crashed", exc_info=exc, **fields)

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.command_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEADER_BLOCK)
        except TimeoutError:
            raise EslConnectionError(f"TCP connect timed out after {self.command_timeout:g}s") from None
        try:
            async with asyncio.timeout(self.command_timeout):
                await self._handshake(reader, writer)
        except BaseException as exc:
            writer.transport.abort()
            if isinstance(exc, TimeoutError):
                raise EslConnectionError(
                    f"FreeSWITCH did not complete auth/subscribe within {self.command_timeout:g}s"
                ) from None
            if isinstance(exc, asyncio.IncompleteReadError):
                raise EslConnectionError("FreeSWITCH closed the connection during login") from None
            raise
        self._generation += 1
        conn = _Connection(reader, writer, self._generation)
        self._conn = conn
        return conn

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeting = await read_frame(reader)
        _raise_if_hangup(greeting, during_login=True)
        if greeting.content_type != "auth/request":
            raise EslConnectionError(f"expected auth/request from FreeSWITCH, got {greeting.content_type!r}")
        reply = await self._login_command(reader, writer, f"auth {self.password}")
        text = reply.reply_text.strip()
        if not text.startswith("+OK"):
            # FreeSWITCH closes the socket right after "-ERR invalid".
            raise EslAuthError(f"FreeSWITCH refused the ESL password ({text or 'no Reply-Text'})")
        reply = await self._login_command(reader, writer, self.subscription)
        text = reply.reply_text.strip()
        if not text.startswith("+OK"):
            raise EslConnectionError(f"FreeSWITCH refused the event subscription ({text or 'no Reply-Text'})")

    async def _login_command(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str
    ) -> Frame:
        writer.write(encode_command(line))
        await writer.drain()
        while True:
            frame = await read_frame(reader)
            _raise_if_hangup(frame, during_login=True)
            if frame.content_type in _REPLY_TYPES:
                return frame
            if frame.content_type in _EVENT_TYPES:
                self._enqueue(parse_event(frame))

    async def _read_loop(self, conn: _Connection) -> EslConnectionError:
        """Read until the socket dies; return why. Nothing in here awaits anything but the socket."""
        loop = asyncio.get_running_loop()
        try:
            # One timeout pushed forward as frames arrive: the HEARTBEAT watchdog (every 20 s by
            # default) without a timer task per frame. It is moved only once it would move by a
            # tenth of its span (a new timer per frame was 6 % of a flood's CPU): silence is then
            # declared after 90-100 % of heartbeat_timeout.
            slack = self.heartbeat_timeout / 10
            deadline = 0.0
            async with asyncio.timeout(None) as watchdog:
                splitter = FrameSplitter()
                while True:
                    due = loop.time() + self.heartbeat_timeout
                    if due - deadline > slack:
                        deadline = due
                        watchdog.reschedule(deadline)
                    data = await conn.reader.read(_READ_CHUNK)
                    if not data:
                        return EslConnectionError("FreeSWITCH closed the ESL connection")
                    for frame in splitter.feed(data):
                        self._handle_frame(conn, frame)
        except TimeoutError:
            log.error(
                "esl_heartbeat_timeout", host=self.host, port=self.port, silent_s=self.heartbeat_timeout
            )
            return EslConnectionError(
                f"no data from FreeSWITCH for {self.heartbeat_timeout:g}s (missed HEARTBEAT)"
            )
        except asyncio.IncompleteReadError:
            return EslConnectionError("FreeSWITCH closed the ESL connection")
        except ProtocolError as exc:
            log.error("esl_malformed_frame", host=self.host, port=self.port, error=str(exc))
            return EslConnectionError(f"malformed frame from FreeSWITCH: {exc}")
        except _PeerHangup as exc:
            return EslConnectionError(str(exc))
        except OSError as exc:
            return EslConnectionError(f"ESL socket error: {exc!r}")
        except Exception as exc:  # a bug here must cost a reconnect, not the reader task
            log.exception("esl_reader_crashed", host=self.host, port=self.port)
            return EslConnectionError(f"ESL reader failed: {exc!r}")

    def _handle_frame(self, conn: _Connection, frame: Frame) -> None:
        ctype = frame.content_type
        if ctype in _EVENT_TYPES:
            event = parse_event(frame)
            if event.name == "BACKGROUND_JOB":
                job = conn.jobs.pop(event.get("Job-UUID").lower(), None)
                if job is not None and not job.done():
                    job.set_result(event)
            self._enqueue(event)
        elif ctype in _REPLY_TYPES:
            if not conn.pending:
                log.warning("esl_unexpected_reply", content_type=ctype, reply=_short(frame))
                return
            entry = conn.pending.popleft()
            if entry.future.done():
                log.info("esl_late_reply_discarded", command=command_name(entry.command), reply=_short(frame))
            else:
                entry.future.set_result(frame)
        elif ctype in ("text/disconnect-notice", "text/rude-rejection"):
            _raise_if_hangup(frame, during_login=False)
        elif ctype == "log/data":
            pass  # only after a `log` command, which this client never sends on its own
        else:
            log.warning("esl_unknown_frame", content_type=ctype)

    def _enqueue(self, event: Event) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            # Blocking here would stall replies and get us killed by FreeSWITCH after 500 lost
            # events, so the event is dropped - loudly, and counted.
            self.dropped_events += 1
            self._queue_overflowing = True
            if self.dropped_events == 1 or self.dropped_events % _QUEUE_FULL_LOG_EVERY == 0:
                log.error(
                    "esl_event_queue_full",
                    dropped_total=self.dropped_events,
                    queue_size=self._events.maxsize,
                    event_name=event.key,
                    unique_id=event.unique_id,
                )
            return
        if self._queue_overflowing and self._events.qsize() < self._events.maxsize // 2:
            self._queue_overflowing = False
            log.warning("esl_event_queue_recovered", dropped_total=self.dropped_events)

    def _lost(self, conn: _Connection, reason: EslConnectionError, *, closing: bool = False) -> None:
        """Fail everything waiting on `conn` at once; runs synchronously so no caller can slip a
        command onto the dead socket in between."""
        if not conn.alive:
            return
        conn.alive = False
        if self._conn is conn:
            self._conn = None
        conn.writer.transport.abort()
        replies = jobs = 0
        for entry in conn.pending:
            if not entry.future.done():
                entry.future.set_exception(
                    EslConnectionError(
                        f"{reason} (while waiting for the reply to {command_name(entry.command)})"
                    )
                )
                replies += 1
        conn.pending.clear()
        for job_uuid, job in conn.jobs.items():
            if not job.done():
                job.set_exception(
                    EslConnectionError(f"{reason} (while waiting for BACKGROUND_JOB {job_uuid})")
                )
                jobs += 1
        conn.jobs.clear()
        if closing:
            log.info("esl_closed", host=self.host, port=self.port, failed_replies=replies, failed_jobs=jobs)
            return
        log.error(
            "esl_connection_lost",
            host=self.host,
            port=self.port,
            reason=str(reason),
            failed_replies=replies,
            failed_jobs=jobs,
            reconnecting=self.reconnect,
        )
        self._lifecycle.put_nowait(("down", conn.generation, reason))

    # ------------------------------------------------------------ consumer tasks

    async def _dispatch_events(self) -> None:
        queue = self._events
        clock = time.monotonic
        while True:
            event = await queue.get()
            # Queue.get() does not suspend while items are waiting, so a backlog is handed out
            # in runs bounded in count and time, with a yield after each: the reader and every
            # caller get their turn (a slow handler yields after each event), without one loop
            # iteration per event (that was a tenth of a flood's CPU).
            handlers = tuple(self._handlers)
            until = clock() + _DISPATCH_SLICE_S
            left = _DISPATCH_BATCH
            while True:
                for handler in handlers:
                    try:
                        handler(event)
                    except Exception:
                        log.exception(
                            "esl_event_handler_failed", handler=_name(handler), event_name=event.key
                        )
                left -= 1
                if not left or queue.empty() or clock() > until:
                    break
                event = queue.get_nowait()
            await asyncio.sleep(0)

    async def _notify_listeners(self) -> None:
        while True:
            kind, generation, reason = await self._lifecycle.get()
            if kind == "up" and (self._conn is None or self._conn.generation != generation):
                continue  # that connection is already gone; its successor will announce itself
            for on_up, on_down in tuple(self._listeners):
                try:
                    if kind == "up" and on_up is not None:
                        await on_up()
                    elif kind == "down" and on_down is not None:
                        assert reason is not None
                        await on_down(reason)
                except Exception:
                    callback = on_up if kind == "up" else on_down
                    log.exception("esl_connection_listener_failed", listener=_name(callback), kind=kind)


def _raise_if_hangup(frame: Frame, *, during_login: bool) -> None:
    ctype = frame.content_type
    if ctype == "text/rude-rejection":
        # apply-inbound-acl refused this address: a configuration problem, not a network blip.
        raise EslAuthError(f"FreeSWITCH rejected the connection (ACL): {frame.body_text().strip()}")
    if ctype == "text/disconnect-notice":
        detail = frame.body_text().strip().splitlines()
        msg = f"FreeSWITCH sent a disconnect notice: {detail[0] if detail else ''}".rstrip(": ")
        if during_login:
            raise EslConnectionError(msg)
        raise _PeerHangup(msg)


def _report_crash(task: asyncio.Task[None]) -> None:
    # These loops catch everything they expect; if one still dies, events or reconnects stop,
    # and that must not go unnoticed.
    if not task.cancelled() and task.exception() is not None:
        log.error("esl_task_crashed", task=task.get_name(), exc_info=task.exception())


def _discard(future: asyncio.Future[Any]) -> None:
    """Cancel a future we no longer need, or mark its exception as seen so asyncio does not
    warn about it at garbage collection."""
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()


def _short(frame: Frame) -> str:
    text = frame.reply_text or frame.body_text()
    return text.strip()[:120]


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
