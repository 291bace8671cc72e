"""Control-endpoint latency and throughput against an in-process sandbox (`make bench`).

One process runs the bridge and the switch simulator (real ESL over TCP), and the load client unless
said otherwise; Redis is the embedded redis-server (a child process on a unix socket). Three phases:

1. raw ESL: `EslClient.api("uuid_exists <uuid>")` one at a time: the floor any verb stands on.
2. verb latency: `send_dtmf` with a fresh Idempotency-Key and the call's callback token, one
   request at a time, over keep-alive HTTP. Every pipeline step runs: auth, tenant fence, the rate
   limit at its production value (10/s per call: requests go round-robin over the calls, and a call
   that has had its 10 in the last second waits its turn), validation, the idempotency claim and
   the stored answer, the ESL command.
3. throughput: the same verb from many concurrent connections for a few seconds, on a second
   sandbox whose rate limit is raised (so 32 calls can take thousands of verbs a second; the
   script still runs every check). Measured twice: with the load client in a child process (the
   bridge's process then does only the bridge's and the simulator's work, as behind a load
   balancer), and with the load client in the bridge's own process.

The load client is a minimal HTTP/1.1 writer/reader, so the figures are the bridge's cost and not a
client library's. The simulator's audio forks send one frame a second instead of fifty: in
production audio flows FreeSWITCH -> AI and never through the bridge, so the simulator's audio
streaming would only measure the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from aiohttp import WSMsgType, web
from redis.utils import HIREDIS_AVAILABLE

from bridge.config import Settings
from bridge.logging import configure
from bridge.sandbox import Sandbox

TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_VERBS_PER_S = 2000


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
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
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


# ---------------------------------------------------------------- a minimal keep-alive HTTP client


class RawHttp:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
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


# ---------------------------------------------------------------- set-up


async def place_calls(box: Sandbox, agent: Agent, count: int) -> list[str]:
    assert box.info is not None
    client = RawHttp("127.0.0.1", int(box.info.base_url.rsplit(":", 1)[1]))
    await client.connect()
    auth = {"Authorization": f"Bearer {box.info.admin_key}"}
    status, body = await client.post(
        "/api/v1/voice-agents",
        json.dumps({"name": "bench", "ws_url": agent.url, "max_concurrent": 10000}).encode(),
        auth,
    )
    assert status in (200, 201), body
    va = json.loads(body)["id"]
    status, body = await client.post(
        "/api/v1/voice-agents/default", json.dumps({"voice_agent_id": va}).encode(), auth
    )
    assert status == 200, body
    await client.close()
    assert box.sim is not None
    call_ids: list[str] = []
    tenant = {"bridge_tenant_id": box.tenant_id}
    for start in range(0, count, 50):
        batch = min(50, count - start)
        call_ids += await asyncio.gather(
            *[box.sim.place_inbound_call("+14155550100", "+14155550199", dict(tenant)) for _ in range(batch)]
        )
    deadline = time.monotonic() + 30
    while any(c not in agent.tokens for c in call_ids):
        if time.monotonic() > deadline:
            missing = sum(1 for c in call_ids if c not in agent.tokens)
            raise RuntimeError(f"{missing} calls never reached the agent")
        await asyncio.sleep(0.05)
    return call_ids


# ---------------------------------------------------------------- phases


@dataclass
class Stats:
    name: str
    samples_ms: list[float]

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    def pct(self, p: float) -> float:
        data = sorted(self.samples_ms)
        index = min(len(data) - 1, max(0, round(p / 100 * len(data) + 0.5) - 1))
        return data[index]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples_ms)


async def raw_esl(box: Sandbox, call_id: str, n: int) -> Stats:
    esl = box.runtime.services.switches.default.esl  # type: ignore[union-attr]
    assert esl is not None
    for _ in range(200):
        await esl.api(f"uuid_exists {call_id}")
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = await esl.api(f"uuid_exists {call_id}")
        samples.append((time.perf_counter() - t0) * 1000)
        assert reply == "true", reply
    return Stats("raw ESL api (uuid_exists)", samples)


def _dtmf_request(call_id: str, token: str) -> tuple[str, bytes, dict[str, str]]:
    return (
        f"/api/v1/ai-sessions/{call_id}/control",
        b'{"event":"send_dtmf","digits":"1"}',
        {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
    )


async def verb_latency(client: RawHttp, calls: list[tuple[str, str]], n: int, rate: int) -> Stats:
    """One request at a time, round-robin over the calls, each call kept under the production rate
    limit: a call that already had `rate` requests in the last second (plus a margin for the two
    clocks) waits before its next one, so every sample is a verb that ran, not a quick 429."""
    samples = []
    errors: dict[int, int] = {}
    sent: dict[str, collections.deque[float]] = {c: collections.deque(maxlen=rate) for c, _ in calls}
    for i in range(n + 300):
        call_id, token = calls[i % len(calls)]
        path, body, headers = _dtmf_request(call_id, token)
        history = sent[call_id]
        if len(history) == rate:
            pause = history[0] + 1.02 - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
        t0 = time.perf_counter()
        history.append(t0)
        status, _ = await client.post(path, body, headers)
        elapsed = (time.perf_counter() - t0) * 1000
        if status != 200:
            errors[status] = errors.get(status, 0) + 1
        elif i >= 300:  # warm-up
            samples.append(elapsed)
    if errors:
        print(f"  verb latency phase: non-200 answers {errors}", file=sys.stderr)
    return Stats("send_dtmf over HTTP (full pipeline)", samples)


@dataclass
class Throughput:
    completed: int
    failed: int
    seconds: float
    errors: dict[int, int]
    cpu_ms_per_verb: float = 0.0  # of the bridge's process

    @property
    def per_s(self) -> float:
        return self.completed / self.seconds


async def throughput(
    host: str,
    port: int,
    calls: list[tuple[str, str]],
    connections: int,
    seconds: float,
    on_measure: Any = None,
) -> Throughput:
    clients = [RawHttp(host, port) for _ in range(connections)]
    await asyncio.gather(*[c.connect() for c in clients])
    counter = iter(range(10**12))
    done = 0
    errors: dict[int, int] = {}
    measuring = False
    stop = False

    async def worker(client: RawHttp) -> None:
        nonlocal done
        while not stop:
            call_id, token = calls[next(counter) % len(calls)]
            path, body, headers = _dtmf_request(call_id, token)
            status, _ = await client.post(path, body, headers)
            if not measuring:
                continue
            if status == 200:
                done += 1
            else:
                errors[status] = errors.get(status, 0) + 1

    tasks = [asyncio.create_task(worker(c)) for c in clients]
    await asyncio.sleep(1.0)  # warm-up
    if on_measure:
        on_measure("start")
    measuring = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.perf_counter() - t0
    if on_measure:
        on_measure("end")
    completed = done
    stop = True
    await asyncio.gather(*tasks)
    await asyncio.gather(*[c.close() for c in clients])
    return Throughput(completed, sum(errors.values()), elapsed, errors)


async def throughput_in_process(bench: Bench, args: argparse.Namespace) -> Throughput:
    cpu0 = time.process_time()
    result = await throughput(bench.host, bench.port, bench.calls, args.connections, args.seconds)
    result.cpu_ms_per_verb = (time.process_time() - cpu0) / max(1, result.completed) * 1000
    return result


async def throughput_external(bench: Bench, args: argparse.Namespace) -> Throughput:
    """The load from a child process: the bridge's process then does only the bridge's (and the
    simulator's) work, as it would behind a real load balancer."""
    job = {"host": bench.host, "port": bench.port, "calls": bench.calls}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.control_latency",
        "--load-worker",
        json.dumps(job),
        "--connections",
        str(args.connections),
        "--seconds",
        str(args.seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    cpu0 = cpu1 = 0.0
    result: dict[str, Any] = {}
    async for raw in proc.stdout:
        line = raw.decode().strip()
        if line == "start":
            cpu0 = time.process_time()
        elif line == "end":
            cpu1 = time.process_time()
        elif line.startswith("{"):
            result = json.loads(line)
    await proc.wait()
    out = Throughput(result["completed"], result["failed"], result["seconds"], result["errors"])
    out.cpu_ms_per_verb = (cpu1 - cpu0) / max(1, out.completed) * 1000
    return out


async def load_worker(args: argparse.Namespace) -> int:
    job = json.loads(args.load_worker)
    calls = [tuple(c) for c in job["calls"]]

    def mark(what: str) -> None:
        print(what, flush=True)

    result = await throughput(job["host"], job["port"], calls, args.connections, args.seconds, mark)
    print(json.dumps(result.__dict__), flush=True)
    return 0


# ---------------------------------------------------------------- main


class Bench:
    """A sandbox with `count` live calls, each with the callback token its AI received."""

    def __init__(self, tmp: str, name: str, count: int, **overrides: object) -> None:
        settings = Settings().with_(
            redis_url=None,
            http_host="127.0.0.1",
            http_port=0,
            data_dir=Path(tmp) / name,
            recordings_dir=str(Path(tmp) / name / "recordings"),
            **overrides,
        )
        self.box = Sandbox(settings, tenant_id="bench")
        self.box.sim.core.settings.audio_frame_ms = 1000
        self.agent = Agent()
        self.count = count
        self.calls: list[tuple[str, str]] = []
        self.host, self.port = "127.0.0.1", 0

    async def __aenter__(self) -> Bench:
        await self.agent.start()
        info = await self.box.start()
        self.port = int(info.base_url.rsplit(":", 1)[1])
        call_ids = await place_calls(self.box, self.agent, self.count)
        self.calls = [(c, self.agent.tokens[c]) for c in call_ids]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.box.stop()
        await self.agent.stop()

    @property
    def rate_limit(self) -> int:
        return self.box.runtime.services.settings.rate_limit_per_s  # type: ignore[union-attr]


async def run(args: argparse.Namespace) -> int:
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        # Latency at the production rate limit, spread over enough calls to stay under it.
        async with Bench(tmp, "latency", args.calls) as bench:
            rate = bench.rate_limit
            esl = await raw_esl(bench.box, bench.calls[0][0], args.samples)
            client = RawHttp(bench.host, bench.port)
            await client.connect()
            verb = await verb_latency(client, bench.calls, args.samples, rate)
            await client.close()
        # Throughput: the limit raised so a few calls can take thousands of verbs a second (the
        # script still runs every check; the simulator's per-command cost grows with live calls).
        async with Bench(tmp, "throughput", args.throughput_calls, rate_limit_per_s=1_000_000) as bench:
            external = await throughput_external(bench, args)
            await asyncio.sleep(0.5)
            inside = await throughput_in_process(bench, args)
            throughput_calls = len(bench.calls)
        calls = args.calls

    added_p50 = verb.pct(50) - esl.pct(50)
    added_p99 = verb.pct(99) - esl.pct(99)
    print()
    print("Control endpoint vs raw ESL: one process (bridge + switch simulator + load client),")
    print(
        f"embedded Redis on a unix socket; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"redis-py {redis.__version__} ({'hiredis' if HIREDIS_AVAILABLE else 'pure-Python'} parser)."
    )
    print(f"Latency: {calls} live calls, rate limit {rate} req/s per call (production value), one request")
    print("at a time, send_dtmf with a fresh Idempotency-Key and the call's callback token.")
    print()
    print(f"| {'measurement':<40} | {'n':>6} | {'p50 ms':>7} | {'p99 ms':>7} | {'mean ms':>7} |")
    print(f"|{'-' * 42}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for s in (esl, verb):
        print(f"| {s.name:<40} | {s.n:>6} | {s.pct(50):>7.3f} | {s.pct(99):>7.3f} | {s.mean:>7.3f} |")
    print(
        f"| {'added by the bridge (difference)':<40} | {'':>6} | {added_p50:>7.3f} | {added_p99:>7.3f} |",
        end="",
    )
    print(f" {verb.mean - esl.mean:>7.3f} |")
    ratio50, ratio99 = verb.pct(50) / esl.pct(50), verb.pct(99) / esl.pct(99)
    print(f"| {'ratio (verb / raw ESL)':<40} | {'':>6} | {ratio50:>6.2f}x | {ratio99:>6.2f}x | {'':>7} |")
    print()
    print(
        f"Throughput: send_dtmf, fresh Idempotency-Key, {args.connections} keep-alive connections over "
        f"{throughput_calls} calls,\n{args.seconds:g} s after 1 s of warm-up; rate limit raised to "
        "1,000,000/s per call for this phase (every check still runs)."
    )
    print()
    header = ("load client", "verbs/s", "CPU ms/verb of the bridge process", "non-200")
    print(f"| {header[0]:<36} | {header[1]:>8} | {header[2]:>34} | {header[3]:>7} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 36}|{'-' * 9}|")
    for label, t, note in (
        ("separate process", external, "(bridge + simulator)"),
        ("same process", inside, "(bridge + simulator + client)"),
    ):
        cpu = f"{t.cpu_ms_per_verb:.3f} {note}"
        print(f"| {label:<36} | {t.per_s:>8,.0f} | {cpu:>34} | {t.failed:>7} |")
    print()
    checks = [
        (f"added p50 <= {TARGET_ADDED_P50_MS} ms", added_p50 <= TARGET_ADDED_P50_MS),
        (f"added p99 <= {TARGET_ADDED_P99_MS} ms", added_p99 <= TARGET_ADDED_P99_MS),
        (
            f">= {TARGET_VERBS_PER_S:,} verbs/s (load from a separate process)",
            external.per_s >= TARGET_VERBS_PER_S,
        ),
        (
            f">= {TARGET_VERBS_PER_S:,} verbs/s (load client in the same process)",
            inside.per_s >= TARGET_VERBS_PER_S,
        ),
    ]
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {label}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=5000, help="latency samples per phase")
    parser.add_argument("--calls", type=int, default=150, help="live calls, latency phase (10/s each)")
    parser.add_argument("--throughput-calls", type=int, default=32, help="live calls, throughput phase")
    parser.add_argument(
        "--connections", type=int, default=32, help="concurrent connections, throughput phase"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the throughput phase")
    parser.add_argument("--load-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(load_worker(args) if args.load_worker else run(args)))


if __name__ == "__main__":
    main()
