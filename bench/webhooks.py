"""Signed webhook deliveries (`--phase=webhooks`): rate and latency to a local receiver.

The bridge (with the simulator in its process, as in the sandbox; embedded Redis) has one
subscription to a receiver in a process of its own: an aiohttp server that checks every request
with the SDK's verifier (yotel.webhook.verify) before it answers 200. Events are emitted through
the bridge's outbox (Redis stream -> fan-out -> signed POST), each carrying its emit time
(CLOCK_MONOTONIC, which both processes share).

- rate: `--deliveries` events emitted at once; deliveries/s = deliveries / (first emit .. last
  verified receipt).
- latency: 1,000 events emitted at 200/s (well under the rate, so the figure is the path, not a
  queue); p50/p99 from emit to receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from typing import Any

from aiohttp import web

from bench.common import (
    Child,
    PhaseResult,
    Target,
    admin_post,
    child_main,
    commands,
    machine,
    pct,
    sandbox_settings,
    say,
)

TARGET_PER_S = 1000
MODULE = "bench.webhooks"


async def receiver(_job: dict[str, Any]) -> None:
    from yotel.webhook import InvalidSignature, verify

    secret = ""
    got: list[tuple[float, float]] = []  # (emitted, received)
    bad = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal bad
        body = await request.read()
        at = time.monotonic()
        try:
            verify(raw_body=body, headers=dict(request.headers), signing_secret=secret)
        except InvalidSignature:
            bad += 1
            return web.Response(status=400)
        got.append((json.loads(body)["data"]["bench_t"], at))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    say({"url": f"http://127.0.0.1:{port}/hook"})
    async for cmd in commands():
        if cmd["cmd"] == "stop":
            break
        if cmd["cmd"] == "secret":
            secret = cmd["secret"]
            say({"ok": True})
        elif cmd["cmd"] == "count":
            say({"n": len(got), "bad": bad})
        elif cmd["cmd"] == "take":
            say({"got": got, "bad": bad})
            got, bad = [], 0
    await runner.cleanup()


async def _wait(rx: Child, n: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        await rx.send({"cmd": "count"})
        state = await rx.read()
        if state["n"] + state["bad"] >= n:
            await rx.send({"cmd": "take"})
            return await rx.read()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{state['n']} of {n} deliveries received ({state['bad']} refused)")
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace) -> PhaseResult:
    from bridge.sandbox import Sandbox

    result = PhaseResult("webhooks")
    n = args.deliveries
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        box = Sandbox(sandbox_settings(tmp), tenant_id="bench")
        rx = await Child(MODULE, "receiver", {}).start()
        try:
            url = (await rx.read())["url"]
            info = await box.start()
            sub = await admin_post(
                info.base_url,
                info.admin_key,
                "/api/v1/webhooks",
                {"url": url, "event_types": ["call.started"]},
            )
            await rx.send({"cmd": "secret", "secret": sub["signing_secret"]})
            await rx.read()
            svc = box.runtime.services  # type: ignore[union-attr]
            assert svc is not None
            emit = svc.outbox.emit

            async def one(i: int) -> None:
                await emit("call.started", "bench", {"call_id": f"c-{i}", "bench_t": time.monotonic()})

            for i in range(50):  # warm-up: connections, scripts
                await one(i)
            await _wait(rx, 50, 60)
            # rate: all at once
            t0 = time.monotonic()
            # 20 emits in flight: the shared Redis pool refuses (MaxConnectionsError), rather
            # than queues, what goes past its size.
            for start in range(0, n, 20):
                await asyncio.gather(*[one(i) for i in range(start, min(n, start + 20))])
            burst = await _wait(rx, n, 300)
            last = max(at for _, at in burst["got"])
            rate = len(burst["got"]) / (last - t0)
            # latency: paced, 200/s
            lat_n = 1000
            t0 = time.monotonic()
            for i in range(lat_n):
                await one(i)
                pause = t0 + (i + 1) / 200 - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            paced = await _wait(rx, lat_n, 120)
            lat = [(at - t) * 1000 for t, at in paced["got"]]
        finally:
            await box.stop()
            await rx.stop()
    result.figures["deliveries/s (burst)"] = rate
    result.figures["refused by the verifier"] = burst["bad"] + paced["bad"]
    result.figures["latency p50 ms (200/s)"] = pct(lat, 50)
    result.figures["latency p99 ms (200/s)"] = pct(lat, 99)
    result.targets.append(
        Target(f">= {TARGET_PER_S:,} signed deliveries/s", "deliveries/s (burst)", ">=", TARGET_PER_S)
    )
    result.targets.append(Target("every delivery verifies", "refused by the verifier", "<=", 0))
    result.notes += [
        f"Rate: {n:,} call.started events emitted at once through the outbox; latency: 1,000 at",
        "200/s, emit -> receipt. One subscription; the receiver (own process) verifies each",
        "signature with yotel.webhook.verify before answering 200. Bridge + simulator in one",
        f"process, embedded Redis. {machine()}.",
    ]
    return result


if __name__ == "__main__":
    child_main({"receiver": receiver})
