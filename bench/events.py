"""ESL event ingestion (`--phase=events`): how fast the bridge takes in a flood of events.

The flood is what the switch simulator emits for `--event-calls` calls, each one placed and
parked, answered, put into a two-party conference, and hung up: the CHANNEL_* events and the
conference::maintenance events (add-member, floor-change, del-member, conference-create/destroy...)
of each, as text/event-json frames, filtered to what the bridge subscribes to (as FreeSWITCH
would). It is recorded once, then replayed by a simulator process as fast as the socket takes
it, right after the simulator's real ESL handshake with the client.

Measured (in this process, the simulator in a child process):
- bridge: a real BridgeRuntime whose EslClient reads the flood and whose CallManager dispatches it
  with its production handlers, each event through its call's queue and worker; a counting
  handler registered after the production ones for every event name says when the last event
  has been handled. Events/s = events / (first byte asked for .. last event handled).
- bare: an asyncio socket that does the same handshake and then only reads the same bytes.
The ratio bridge / bare says what fraction of a bare socket read's rate the bridge keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Child, PhaseResult, Target, child_main, commands, machine, say

TARGET_EVENTS_PER_S = 20_000
MODULE = "bench.events"
_FLOODS: dict[int, tuple[str, dict[str, Any]]] = {}  # event-calls -> (file, its description)
_FLOOD_DIR: list[str] = []


# ---------------------------------------------------------------- child roles


def _subscribed() -> tuple[set[str], set[str]]:
    from bridge.esl.client import DEFAULT_EVENTS, subscription_command

    tokens = subscription_command(DEFAULT_EVENTS).split()[2:]
    names: set[str] = set()
    subclasses: set[str] = set()
    after_custom = False
    for t in tokens:
        if t == "CUSTOM":
            after_custom = True
        elif after_custom:
            subclasses.add(t)
        else:
            names.add(t)
    return names, subclasses


class _Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.by_key: collections.Counter[str] = collections.Counter()
        self.names, self.subclasses = _subscribed()

    def offer(self, ev: Any) -> None:
        if ev.name == "CUSTOM":
            if ev.subclass not in self.subclasses:
                return
        elif ev.name not in self.names:
            return
        self.frames.append(ev.encode("json"))
        self.by_key[ev.subclass if ev.name == "CUSTOM" and ev.subclass else ev.name] += 1


async def record(job: dict[str, Any]) -> None:
    """Run `calls` calls through a simulator and write the events it fires to `path`."""
    from bridge.sim.server import SwitchSimulator

    sim = SwitchSimulator("127.0.0.1", 0, heartbeat_interval_s=3600, answer_delay_s=0.0)
    sim.core.settings.audio_frame_ms = 1000
    await sim.start()
    rec = _Recorder()
    sim.core.listeners.add(rec)  # type: ignore[arg-type]

    async def one_pair(i: int) -> None:
        a, b = await asyncio.gather(
            *[sim.place_inbound_call("+14155550100", "+14155550199", {"x_bench": "1"}) for _ in range(2)]
        )
        for leg in (a, b):
            await sim.api(f"uuid_answer {leg}")
            await sim.api(f"uuid_transfer {leg} 'conference:flood{i}@default' inline")
        await asyncio.sleep(0.1)  # both legs in, the floor given
        for leg in (a, b):
            await sim.hangup(leg)

    pairs = job["calls"] // 2
    for start in range(0, pairs, 50):
        await asyncio.gather(*[one_pair(i) for i in range(start, min(pairs, start + 50))])
    await asyncio.sleep(0.2)
    sim.core.listeners.discard(rec)  # type: ignore[arg-type]
    await sim.stop()
    Path(job["path"]).write_bytes(b"".join(rec.frames))  # noqa: ASYNC240 (nothing else runs)
    say({"events": len(rec.frames), "bytes": sum(map(len, rec.frames)), "by_key": dict(rec.by_key)})


async def flood(job: dict[str, Any]) -> None:
    """A simulator that, on `go`, writes the recorded flood to the ESL connection that is up."""
    from bridge.sim.server import SwitchSimulator

    data = Path(job["path"]).read_bytes()  # noqa: ASYNC240 (before the simulator starts)
    sim = SwitchSimulator("127.0.0.1", 0, heartbeat_interval_s=3600)
    await sim.start()
    say({"esl_url": sim.url, "port": sim.port})
    async for cmd in commands():
        if cmd["cmd"] == "stop":
            break
        if cmd["cmd"] == "go":
            conns = [c for c in sim.connections if c.authed and c.listening() and not c.closed]
            assert len(conns) == 1, f"{len(conns)} listening ESL connections"
            writer = conns[0].writer
            step = 1 << 20
            for i in range(0, len(data), step):
                writer.write(data[i : i + step])
                await writer.drain()
            say({"written": len(data)})
    await sim.stop()


# ---------------------------------------------------------------- the parent


def _flood_dir() -> str:
    """Where the recorded floods live for the runs of this process; removed at exit."""
    if not _FLOOD_DIR:
        path = tempfile.mkdtemp(prefix="bridge-bench-events-")
        atexit.register(shutil.rmtree, path, True)
        _FLOOD_DIR.append(path)
    return _FLOOD_DIR[0]


async def _recorded(calls: int, tmp: str) -> tuple[str, dict[str, Any]]:
    if calls not in _FLOODS:
        path = str(Path(tmp) / f"flood-{calls}.bin")
        rec = await Child(MODULE, "record", {"calls": calls, "path": path}).start()
        info = await rec.read(timeout=600)
        await rec.proc.wait()  # type: ignore[union-attr]
        _FLOODS[calls] = (path, info)
    return _FLOODS[calls]


async def _bare(port: int, sim: Child, nbytes: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    await reader.readuntil(b"\n\n")  # auth/request
    writer.write(b"auth ClueCon\n\n")
    await reader.readuntil(b"\n\n")
    writer.write(b"event json ALL\n\n")
    await reader.readuntil(b"\n\n")
    got = 0
    t0 = time.perf_counter()
    await sim.send({"cmd": "go"})
    while got < nbytes:
        chunk = await reader.read(1 << 16)
        if not chunk:
            raise RuntimeError("flood connection closed early")
        got += len(chunk)
    elapsed = time.perf_counter() - t0
    await sim.read()
    writer.close()
    return elapsed


async def _bridge(esl_url: str, sim: Child, info: dict[str, Any], tmp: str) -> tuple[float, float, int]:
    from bridge.config import Settings
    from bridge.runtime import BridgeRuntime

    data = Path(tmp) / f"bridge-{time.monotonic_ns()}"
    settings = Settings().with_(
        redis_url=None,
        esl_url=esl_url,
        http_host="127.0.0.1",
        http_port=0,
        data_dir=data,
        recordings_dir=str(data / "recordings"),
    )
    runtime = BridgeRuntime(settings, sandbox=True)
    svc = await runtime.start()
    try:
        total = info["events"]
        handled = 0
        done = asyncio.Event()

        async def count(_event: Any) -> None:
            nonlocal handled
            handled += 1
            if handled == total:
                done.set()

        for key in info["by_key"]:
            svc.calls.on(key, count)
        await asyncio.sleep(0.5)  # the resync after connect is done
        assert svc.switches.default.esl is not None
        dropped0 = svc.switches.default.esl.dropped_events
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await sim.send({"cmd": "go"})
        try:
            async with asyncio.timeout(120):
                await done.wait()
        except TimeoutError:
            raise RuntimeError(f"only {handled} of {total} events handled") from None
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await sim.read()
        return elapsed, cpu, svc.switches.default.esl.dropped_events - dropped0
    finally:
        await runtime.stop()


async def run(args: argparse.Namespace) -> PhaseResult:
    result = PhaseResult("events")
    tmp = os.environ.get("BENCH_TMP") or _flood_dir()
    path, info = await _recorded(args.event_calls, tmp)
    total = info["events"]
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as work:
        sim = await Child(MODULE, "flood", {"path": path}).start()
        esl = await sim.read()
        try:
            bare_s = await _bare(esl["port"], sim, info["bytes"])
            bridge_s, cpu_s, dropped = await _bridge(esl["esl_url"], sim, info, work)
        finally:
            await sim.stop()
    bridge_rate, bare_rate = total / bridge_s, total / bare_s
    result.figures["events/s, bridge (parse + dispatch + handlers)"] = bridge_rate
    result.figures["events/s, bare socket read"] = bare_rate
    result.figures["ratio bridge / bare read"] = bridge_rate / bare_rate
    # On a shared machine the bridge's process does not get a whole core: what it handles per
    # second of CPU it did get is its rate on a core of its own (not judged, shown beside).
    result.figures["events per CPU-second of the bridge process"] = total / cpu_s
    result.figures["events dropped (queue full)"] = dropped
    result.targets.append(
        Target(
            f">= {TARGET_EVENTS_PER_S:,} events/s ingested",
            "events/s, bridge (parse + dispatch + handlers)",
            ">=",
            TARGET_EVENTS_PER_S,
        )
    )
    result.targets.append(Target("no event dropped", "events dropped (queue full)", "<=", 0))
    top = ", ".join(f"{k} {v}" for k, v in sorted(info["by_key"].items(), key=lambda kv: -kv[1])[:8])
    result.notes += [
        f"Flood: {total:,} events ({info['bytes'] / 1e6:.1f} MB of text/event-json)",
        f"from {args.event_calls:,} simulated calls (parked, answered, two per conference, hung",
        "up), replayed by a simulator process over real ESL TCP. Bridge: EslClient + CallManager",
        "with the production handlers (per-call queues and workers; Redis lookups where a",
        f"handler does them), done when the last event has been handled. Most frequent: {top}.",
        f"{machine()}.",
    ]
    return result


if __name__ == "__main__":
    child_main({"record": record, "flood": flood})
