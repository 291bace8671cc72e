"""What the phases share: a listening voice AI, a minimal HTTP client, percentiles, the result
type the runner prints, and the helpers that run a piece of the bench in a child process."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

# ---------------------------------------------------------------- results


@dataclass
class Target:
    """A figure's target: `figure op threshold`. `skip` (a reason) when the phase could not run."""

    label: str
    figure: str
    op: str  # ">=" or "<="
    threshold: float

    def met(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


@dataclass
class PhaseResult:
    phase: str
    figures: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was measured and how (printed once)
    skip: str | None = None  # the reason the phase could not run at all
    error: str | None = None  # the phase broke (neither PASS nor MISS)

    def to_json(self) -> str:
        return json.dumps(
            {
                "phase": self.phase,
                "figures": self.figures,
                "targets": [t.__dict__ for t in self.targets],
                "notes": self.notes,
                "skip": self.skip,
                "error": self.error,
            }
        )


def pct(samples: list[float], p: float) -> float:
    data = sorted(samples)
    if not data:
        return float("nan")
    index = min(len(data) - 1, max(0, round(p / 100 * len(data) + 0.5) - 1))
    return data[index]


def mean(samples: list[float]) -> float:
    return statistics.fmean(samples) if samples else float("nan")


# ---------------------------------------------------------------- the machine


_REFERENCE_LOOP_S: list[float] = []


def reference_loop_s() -> float:
    """Seconds for 2,000,000 pure-Python additions (best of 3, measured once per process): how
    fast a core of this machine runs Python, so figures from two machines can be compared."""
    if not _REFERENCE_LOOP_S:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            x = 0
            for i in range(2_000_000):
                x += i
            best = min(best, time.perf_counter() - t0)
        _REFERENCE_LOOP_S.append(best)
    return _REFERENCE_LOOP_S[0]


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min), "
        f"reference loop {reference_loop_s() * 1000:.0f} ms (2M Python additions; lower is faster)"
    )


def rss_kib(pid: int | str = "self") -> int:
    """VmRSS of a process, from /proc (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int | str = "self") -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def quiet_logs() -> None:
    from bridge.logging import configure

    configure("warning")


# ---------------------------------------------------------------- child processes


class Child:
    """A `python -m bench.<module> --child <role> <json>` process that speaks JSON lines: it
    prints one object per line on stdout, and reads commands (JSON lines) on stdin."""

    def __init__(self, module: str, role: str, job: dict[str, Any]) -> None:
        self.module, self.role, self.job = module, role, job
        self.proc: asyncio.subprocess.Process | None = None
        # The child's logs (stderr), kept to say why it died.
        self.log = tempfile.TemporaryFile()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> Child:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            "--child",
            self.role,
            json.dumps(self.job),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
            limit=64 << 20,
        )
        return self

    async def read(self, timeout: float = 300.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    code = await self.proc.wait()
                    self.log.seek(0)
                    tail = self.log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"{self.module} {self.role} exited ({code}):\n{tail}")
                line = raw.decode().strip()
                if line.startswith("{"):
                    return json.loads(line)

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            await self.send({"cmd": "stop"})
            async with asyncio.timeout(15):
                await self.proc.wait()
        except (TimeoutError, ConnectionError, BrokenPipeError):
            self.proc.kill()
            await self.proc.wait()


_ANSWERS: list[Any] = []  # a child's channel to its parent (its real stdout)


def say(obj: dict[str, Any]) -> None:
    """A child's answer to its parent."""
    out = _ANSWERS[0] if _ANSWERS else sys.stdout
    out.write(json.dumps(obj) + "\n")
    out.flush()


async def commands() -> Any:
    """A child's commands from its parent, one JSON object per stdin line (EOF = stop)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        raw = await reader.readline()
        if not raw:
            yield {"cmd": "stop"}
            return
        yield json.loads(raw)


def child_main(roles: dict[str, Callable[[dict[str, Any]], Any]]) -> bool:
    """In a phase module's `if __name__ == "__main__"`: run the role the parent asked for."""
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        # Answers go to the parent on the real stdout; anything else printed there (the logs)
        # goes to stderr instead, so it can never be read as an answer.
        _ANSWERS.append(os.fdopen(os.dup(1), "w"))
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        quiet_logs()
        job = json.loads(sys.argv[3])
        if job.get("loop") == "uvloop":
            import uvloop

            uvloop.run(roles[sys.argv[2]](job))
        else:
            asyncio.run(roles[sys.argv[2]](job))
        return True
    return False


# ---------------------------------------------------------------- a voice AI that only listens


class Agent:
    """Accepts the audio forks and keeps each call's callback token from its metadata frame."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("audio.drachtio.org", "audio.jambonz.org"))
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    if frame.get("type") == "metadata":
                        self.tokens[frame["call_id"]] = frame["callback_token"]
        finally:
            self._sockets.discard(ws)
        return ws

    async def wait_for(self, call_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(c not in self.tokens for c in call_ids):
            if time.monotonic() > deadline:
                missing = sum(1 for c in call_ids if c not in self.tokens)
                raise RuntimeError(f"{missing} of {len(call_ids)} calls never reached the agent")
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------- a minimal keep-alive HTTP client


class RawHttp:
    """HTTP/1.1 over one keep-alive connection, no client library: the figures are the bridge's
    cost, not a client's."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        return await self.request("POST", path, body, headers)


async def admin_post(base_url: str, admin_key: str, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    client = RawHttp(host, int(port))
    await client.connect()
    try:
        status, body = await client.post(
            path, json.dumps(obj).encode(), {"Authorization": f"Bearer {admin_key}"}
        )
    finally:
        await client.close()
    if status not in (200, 201):
        raise RuntimeError(f"POST {path}: {status} {body[:300]!r}")
    return json.loads(body)


async def default_agent(base_url: str, admin_key: str, ws_url: str) -> str:
    """A voice agent at `ws_url`, made the tenant's default (what a parked call is connected to)."""
    va = await admin_post(
        base_url,
        admin_key,
        "/api/v1/voice-agents",
        {"name": "bench", "ws_url": ws_url, "max_concurrent": 10_000},
    )
    await admin_post(base_url, admin_key, "/api/v1/voice-agents/default", {"voice_agent_id": va["id"]})
    return str(va["id"])


def sandbox_settings(tmp: str) -> Any:
    """Settings for an in-process sandbox under `tmp`: embedded Redis, any free HTTP port."""
    from pathlib import Path

    from bridge.config import Settings

    return Settings().with_(
        redis_url=None,
        http_host="127.0.0.1",
        http_port=0,
        data_dir=Path(tmp),
        recordings_dir=str(Path(tmp) / "recordings"),
    )
