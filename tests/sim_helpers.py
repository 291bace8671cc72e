"""A tiny raw ESL client for the simulator's tests: framing from bridge.esl.protocol only,
so these tests pin the wire behaviour without depending on the bridge's ESL client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bridge.esl.protocol import Event, Frame, encode_command, parse_event, read_frame
from bridge.sim.server import SwitchSimulator


class RawEsl:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.events: list[Event] = []
        self.frames: list[Frame] = []  # every frame, in arrival order (events included)
        self.replies: asyncio.Queue[Frame] = asyncio.Queue()
        self.greeting: Frame | None = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, port: int, password: str | None = "ClueCon", *, subscribe: str | None = "plain ALL"
    ) -> RawEsl:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self = cls(reader, writer)
        self.greeting = await read_frame(reader)
        self._task = asyncio.get_running_loop().create_task(self._read())
        if password is not None:
            reply = await self.send(f"auth {password}")
            assert reply.reply_text == "+OK accepted", reply.headers
        if subscribe:
            reply = await self.send(f"event {subscribe}")
            assert reply.reply_text.startswith("+OK event listener enabled"), reply.headers
        return self

    async def _read(self) -> None:
        try:
            while True:
                frame = await read_frame(self.reader)
                self.frames.append(frame)
                if frame.content_type in ("text/event-plain", "text/event-json"):
                    self.events.append(parse_event(frame))
                elif frame.content_type != "text/event-xml":
                    self.replies.put_nowait(frame)
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            self._changed.set()

    async def send(self, command: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> Frame:
        self.writer.write(encode_command(command, headers))
        await self.writer.drain()
        return await asyncio.wait_for(self.replies.get(), timeout)

    async def api(self, command: str, timeout: float = 5.0) -> str:
        frame = await self.send(f"api {command}", timeout=timeout)
        assert frame.content_type == "api/response", frame.headers
        return frame.body_text()

    async def bgapi(self, command: str, job_uuid: str | None = None) -> Frame:
        return await self.send(f"bgapi {command}", {"Job-UUID": job_uuid} if job_uuid else None)

    def clear(self) -> None:
        self.events.clear()

    def of(self, uuid: str) -> list[Event]:
        return [e for e in self.events if e.unique_id == uuid]

    def names(self, uuid: str) -> list[str]:
        return [e.key for e in self.of(uuid)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"condition not met within {timeout}s; events: {[e.key for e in self.events]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_event(self, match: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        def find() -> Event | None:
            return next((e for e in self.events if match(e)), None)

        return await self.wait_for(find, timeout)

    async def settle(self, seconds: float = 0.1) -> None:
        """Let in-flight events arrive (used to prove that nothing more comes)."""
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def named(name: str, **headers: str) -> Callable[[Event], bool]:
    def match(e: Event) -> bool:
        return e.key == name and all(e.get(k.replace("_", "-")) == v for k, v in headers.items())

    return match


@contextlib.asynccontextmanager
async def running_sim(**options: Any) -> AsyncIterator[SwitchSimulator]:
    """A started switch simulator on a free port, stopped afterwards."""
    switch = SwitchSimulator(**options)
    await switch.start()
    try:
        yield switch
    finally:
        await switch.stop()
