"""Sustained control throughput, on one bridge process and on two (`--phase=throughput`).

Topology, every piece its own process: Redis (the embedded redis-server, on a unix socket); per
"box" a switch simulator (real ESL over TCP, with the listening voice AI beside it, so audio
forks and their metadata frames are real) and one bridge process against it; per bridge one load
process. Two bridges means two boxes: two simulators, two bridges, one shared Redis, each bridge
serving its own half of the calls (its own tenant) - a valid scale-out topology today. (Two
bridges on ONE switch would both handle every ESL event until per-box event ownership lands.)

The verb is `send_dtmf` with a fresh Idempotency-Key and the call's callback token, from 32
keep-alive connections per bridge over 32 calls; the rate limit is raised to 1,000,000/s per call
for this phase (every check still runs). The figure is the verbs answered 200 in the measured
window, after 1 s of warm-up. The ratio two bridges / one bridge can only be near-linear when
the machine has spare cores for the second box: on 2 CPUs it cannot be, and the output says so.

Knobs for profiling: BENCH_PYSPY=<path> records a py-spy profile (raw format) of each bridge
process over the measured window into <path>.<box>; BENCH_BRIDGE_LOOP=uvloop runs the bridge
processes on uvloop (when it is installed; it is not a dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    Agent,
    Child,
    PhaseResult,
    RawHttp,
    Target,
    child_main,
    commands,
    cpu_s,
    default_agent,
    machine,
    rss_kib,
    say,
)

TARGET_VERBS_PER_S = 2000
TARGET_SCALE_RATIO = 1.8
MODULE = "bench.throughput"


# ---------------------------------------------------------------- child roles


async def far_end(job: dict[str, Any]) -> None:
    """The switch (simulator) and the voice AI: what sits on the far side of a bridge."""
    from bridge.sim.server import SwitchSimulator

    agent: Agent | None = None
    if not job.get("agent_url"):  # else the voice AI is a process of its own (sessions phase)
        agent = Agent()
        await agent.start()
    if job.get("silent_forks"):
        # The sessions phase holds thousands of forks: their audio (never the bridge's business)
        # is not streamed at all, each fork stays open after its metadata frame.
        from bridge.sim.audio_fork import AudioFork

        async def _idle(_self: Any) -> None:
            await asyncio.Event().wait()

        AudioFork._stream_audio = _idle  # type: ignore[method-assign]
    sim = SwitchSimulator("127.0.0.1", 0, password="ClueCon", switchname=job.get("name", "bench"))
    # In production audio flows FreeSWITCH -> AI and never through the bridge: one frame a second
    # keeps the simulator's audio streaming from being what is measured.
    sim.core.settings.audio_frame_ms = job.get("audio_frame_ms", 1000)
    await sim.start()
    say({"esl_url": sim.url, "agent_url": agent.url if agent else job["agent_url"], "pid": os.getpid()})
    async for cmd in commands():
        if cmd["cmd"] == "stop":
            break
        if cmd["cmd"] == "place":
            t0 = time.perf_counter()
            call_ids: list[str] = []
            tenant = {"bridge_tenant_id": cmd["tenant"]}
            batch = cmd.get("batch", 50)
            for start in range(0, cmd["n"], batch):
                n = min(batch, cmd["n"] - start)
                call_ids += await asyncio.gather(
                    *[sim.place_inbound_call("+14155550100", "+14155550199", dict(tenant)) for _ in range(n)]
                )
            if agent is not None:
                await agent.wait_for(call_ids, cmd.get("timeout", 120))
            say(
                {
                    "calls": [[c, agent.tokens[c]] for c in call_ids] if agent else [],
                    "n": len(call_ids),
                    "seconds": time.perf_counter() - t0,
                }
            )
    await sim.stop()
    if agent is not None:
        await agent.stop()


async def bridge_box(job: dict[str, Any]) -> None:
    """One bridge process: BridgeRuntime (HTTP, ESL client, call manager, webhooks...) as
    `bridge run` builds it, against the given switch and Redis."""
    from bridge.config import Settings
    from bridge.runtime import BridgeRuntime
    from bridge.store.tenants import ALL_SCOPES

    data = Path(job["data_dir"])
    settings = Settings().with_(
        redis_url=job["redis_url"],
        esl_url=job["esl_url"],
        http_host="127.0.0.1",
        http_port=0,
        data_dir=data,
        recordings_dir=str(data / "recordings"),
        webhook_allow_loopback_http=True,
        instance_id=f"bench-{job['tenant']}-{os.getpid()}",
        **job.get("settings", {}),
    )
    runtime = BridgeRuntime(settings, sandbox=True)
    svc = await runtime.start()
    admin, _ = await svc.tenants.create_key(job["tenant"], ALL_SCOPES)
    assert runtime.endpoint is not None
    base_url = runtime.endpoint.base_url
    if job.get("agent_url"):
        await default_agent(base_url, admin, job["agent_url"])
    say({"base_url": base_url, "admin_key": admin, "pid": os.getpid()})
    async for cmd in commands():
        if cmd["cmd"] == "stop":
            break
        if cmd["cmd"] == "stats":  # what this process holds (sessions phase)
            gc.collect()
            calls = svc.calls
            say(
                {
                    "rss_kib": rss_kib(),
                    "live_sessions": len(await svc.sessions.live_call_ids()),
                    "call_workers": len(calls._queues),
                    "calls_with_timers": len(calls._timers),
                    "timers": sum(len(t) for t in calls._timers.values()),
                    "tasks": len(asyncio.all_tasks()),
                }
            )
    await runtime.stop()


def _dtmf_request(call_id: str, token: str) -> tuple[str, bytes, dict[str, str]]:
    return (
        f"/api/v1/ai-sessions/{call_id}/control",
        b'{"event":"send_dtmf","digits":"1"}',
        {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
    )


async def load(job: dict[str, Any]) -> None:
    """Closed-loop load: `connections` keep-alive connections, each sending its next verb as soon
    as the previous one is answered."""
    host, port = job["base_url"].removeprefix("http://").rsplit(":", 1)
    calls = [tuple(c) for c in job["calls"]]
    clients = [RawHttp(host, int(port)) for _ in range(job["connections"])]
    await asyncio.gather(*[c.connect() for c in clients])
    counter = iter(range(10**12))
    done = 0
    errors: dict[str, int] = {}
    measuring = stop = False

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
                errors[str(status)] = errors.get(str(status), 0) + 1

    tasks = [asyncio.create_task(worker(c)) for c in clients]
    await asyncio.sleep(job.get("warmup", 1.0))
    say({"mark": "start"})
    measuring = True
    t0 = time.perf_counter()
    await asyncio.sleep(job["seconds"])
    measuring = False
    elapsed = time.perf_counter() - t0
    say({"mark": "end"})
    completed = done
    stop = True
    await asyncio.gather(*tasks)
    await asyncio.gather(*[c.close() for c in clients])
    say({"completed": completed, "errors": errors, "seconds": elapsed})


# ---------------------------------------------------------------- the parent


class Box:
    """A simulator process and a bridge process against it."""

    def __init__(self, tmp: str, name: str, redis_url: str, calls: int) -> None:
        self.tmp, self.name, self.redis_url, self.n_calls = tmp, name, redis_url, calls
        self.far = Child(MODULE, "far", {"name": name})
        self.bridge: Child | None = None
        self.base_url = ""
        self.calls: list[list[str]] = []

    async def start(self) -> Box:
        await self.far.start()
        far = await self.far.read()
        self.bridge = Child(
            MODULE,
            "bridge",
            {
                "data_dir": str(Path(self.tmp) / self.name),
                "redis_url": self.redis_url,
                "esl_url": far["esl_url"],
                "agent_url": far["agent_url"],
                "tenant": self.name,
                "settings": {"rate_limit_per_s": 1_000_000},
                "loop": os.environ.get("BENCH_BRIDGE_LOOP", "asyncio"),
            },
        )
        await self.bridge.start()
        self.base_url = (await self.bridge.read())["base_url"]
        return self

    async def place(self) -> None:
        await self.far.send({"cmd": "place", "n": self.n_calls, "tenant": self.name})
        self.calls = (await self.far.read())["calls"]

    async def stop(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()
        await self.far.stop()


async def _drive(boxes: list[Box], redis_pid: int | None, connections: int, seconds: float) -> dict[str, Any]:
    loads = [
        Child(
            MODULE,
            "load",
            {"base_url": b.base_url, "calls": b.calls, "connections": connections, "seconds": seconds},
        )
        for b in boxes
    ]
    await asyncio.gather(*[ld.start() for ld in loads])

    async def one(ld: Child, box: Box) -> dict[str, Any]:
        assert box.bridge is not None
        pids = {"bridge": box.bridge.pid, "sim": box.far.pid, "load": ld.pid}
        if redis_pid is not None and box is boxes[0]:
            pids["redis"] = redis_pid
        assert (await ld.read())["mark"] == "start"
        spy = None
        if os.environ.get("BENCH_PYSPY"):  # a profile of the bridge process over the window
            spy = await asyncio.create_subprocess_exec(
                "py-spy",
                "record",
                "--format",
                "raw",
                "--rate",
                "250",
                "--nonblocking",
                "-d",
                str(int(seconds)),
                "-o",
                f"{os.environ['BENCH_PYSPY']}.{box.name}",
                "--pid",
                str(box.bridge.pid),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        before = {k: cpu_s(p) for k, p in pids.items()}
        assert (await ld.read())["mark"] == "end"
        after = {k: cpu_s(p) for k, p in pids.items()}
        result = await ld.read()
        if spy is not None:
            await spy.wait()
        result["cpu_s"] = {k: after[k] - before[k] for k in pids}
        return result

    results = await asyncio.gather(*[one(ld, b) for ld, b in zip(loads, boxes, strict=True)])
    for ld in loads:
        await ld.proc.wait()  # type: ignore[union-attr]
    completed = sum(r["completed"] for r in results)
    per_s = sum(r["completed"] / r["seconds"] for r in results)
    failed = sum(sum(r["errors"].values()) for r in results)
    if failed:
        print(f"  throughput: non-200 answers {[r['errors'] for r in results]}", file=sys.stderr)
    cpu: dict[str, float] = {}
    for r in results:
        for k, v in r["cpu_s"].items():
            cpu[k] = cpu.get(k, 0.0) + v
    return {
        "per_s": per_s,
        "completed": completed,
        "failed": failed,
        "cpu_ms_per_verb": {k: v / max(1, completed) * 1000 for k, v in cpu.items()},
    }


async def run(args: argparse.Namespace) -> PhaseResult:
    from bridge.store.embedded import EmbeddedRedis

    result = PhaseResult("throughput")
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis", persistent=False)
        redis_url = await redis.astart()
        try:
            # Both bridges are up before any call is placed, so neither's start-up (its resync
            # at ESL connect) runs while the other's sessions are live.
            names = ["box-a"] if args.one_bridge else ["box-a", "box-b"]
            boxes = [await Box(tmp, n, redis_url, args.throughput_calls).start() for n in names]
            for box in boxes:
                await box.place()
            one = await _drive(boxes[:1], redis.pid, args.connections, args.seconds)
            two = None
            if not args.one_bridge:
                two = await _drive(boxes, redis.pid, args.connections, args.seconds)
            for box in boxes:
                await box.stop()
        finally:
            await redis.astop()
    result.figures["verbs/s, one bridge process"] = one["per_s"]
    result.figures["non-200, one bridge"] = one["failed"]
    for k, v in one["cpu_ms_per_verb"].items():
        result.figures[f"CPU ms/verb, {k} (one bridge)"] = v
    result.figures["verbs per CPU-second of the bridge process"] = 1000 / one["cpu_ms_per_verb"]["bridge"]
    result.targets.append(
        Target(
            f">= {TARGET_VERBS_PER_S:,} verbs/s on one bridge process",
            "verbs/s, one bridge process",
            ">=",
            TARGET_VERBS_PER_S,
        )
    )
    if two is not None:
        result.figures["verbs/s, two bridge processes"] = two["per_s"]
        result.figures["non-200, two bridges"] = two["failed"]
        result.figures["ratio two bridges / one"] = two["per_s"] / one["per_s"]
        # What the ratio would need: every process's CPU per verb (one-bridge run) at 1.8x the
        # one-bridge rate, against the CPUs there are; and whether two bridges cost more CPU per
        # verb than one (shared-state contention), which would stop scaling on any machine.
        per_verb_s = sum(one["cpu_ms_per_verb"].values()) / 1000
        result.figures["CPUs the 1.8x rate needs (all processes)"] = (
            TARGET_SCALE_RATIO * one["per_s"] * per_verb_s
        )
        result.figures["CPUs here"] = float(len(os.sched_getaffinity(0)))
        result.figures["bridge CPU per verb, two bridges / one"] = (
            two["cpu_ms_per_verb"]["bridge"] / one["cpu_ms_per_verb"]["bridge"]
        )
        result.targets.append(
            Target(
                f"two bridges >= {TARGET_SCALE_RATIO}x one (near-linear)",
                "ratio two bridges / one",
                ">=",
                TARGET_SCALE_RATIO,
            )
        )
    result.notes += [
        "Processes: Redis; per box a simulator (+ the listening AI) and a bridge; one load",
        f"process per bridge; {args.connections} keep-alive connections over {args.throughput_calls}",
        f"calls per bridge, {args.seconds:g} s after 1 s warm-up; send_dtmf, fresh Idempotency-Key,",
        "callback token; rate limit raised to 1,000,000/s per call (every check still runs).",
        "Two bridges = two boxes (own simulator each, shared Redis, own tenant each), not two",
        "bridges on one switch; both bridges are up before any call is placed. 'per CPU-second'",
        "= verbs / CPU time the bridge process got: its rate on a core of its own (shown, not",
        "judged).",
        "A second box only scales if there are cores for it: 'CPUs the 1.8x rate needs' is the",
        "CPU every process used per verb in the one-bridge run, times 1.8x its rate; 'bridge CPU",
        "per verb, two / one' near 1.0 says the bridges do not slow each other down through Redis.",
        f"{machine()}.",
    ]
    return result


if __name__ == "__main__":
    child_main({"far": far_end, "bridge": bridge_box, "load": load})
