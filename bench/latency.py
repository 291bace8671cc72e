"""Control latency (`--phase=latency`): a state-changing verb against a raw ESL round trip.

One process runs the bridge and the switch simulator (real ESL over TCP) and the client; Redis is
the embedded redis-server (a child process on a unix socket).

1. raw ESL: `EslClient.api("uuid_exists <uuid>")` one at a time: the floor any verb stands on.
2. verb: `send_dtmf` with a fresh Idempotency-Key and the call's callback token, one request at a
   time over keep-alive HTTP. Every pipeline step runs: auth, tenant fence, the rate limit at its
   production value (10/s per call: requests go round-robin over the calls, and a call that has
   had its 10 in the last second waits its turn), validation, the idempotency claim and the
   stored answer, the ESL command.
Added = verb - raw ESL, at p50 and at p99.

The simulator's audio forks send one frame a second instead of fifty: in production audio flows
FreeSWITCH -> AI and never through the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from bench.common import Agent, PhaseResult, RawHttp, Target, machine, pct, sandbox_settings

TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
ERRORS: list[int] = []  # non-200 answers of the last verb_latency run (shown with the figures)


def dtmf_request(call_id: str, token: str) -> tuple[str, bytes, dict[str, str]]:
    return (
        f"/api/v1/ai-sessions/{call_id}/control",
        b'{"event":"send_dtmf","digits":"1"}',
        {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
    )


async def under_rate(history: collections.deque[float], rate: int) -> float:
    """Wait until one more request keeps its call under `rate` a second (its last `rate` send
    times in `history`, plus a margin for the two clocks); record and return the send time."""
    if len(history) == rate:
        pause = history[0] + 1.02 - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
    t0 = time.perf_counter()
    history.append(t0)
    return t0


async def raw_esl(api: Callable[[str], Awaitable[str]], call_id: str, n: int) -> list[float]:
    for _ in range(200):
        await api(f"uuid_exists {call_id}")
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = await api(f"uuid_exists {call_id}")
        samples.append((time.perf_counter() - t0) * 1000)
        assert reply.strip() == "true", reply
    return samples


async def raw_command_paced(
    api: Callable[[str], Awaitable[str]], call_ids: list[str], n: int, rate: int, template: str
) -> list[float]:
    """The verb's own ESL command sent raw, round-robin over the calls at `rate` a second each
    (the verb's own pacing), so verb - this is what the bridge adds to that very command."""
    samples = []
    sent: dict[str, collections.deque[float]] = {c: collections.deque(maxlen=rate) for c in call_ids}
    for i in range(n + 50):
        call_id = call_ids[i % len(call_ids)]
        t0 = await under_rate(sent[call_id], rate)
        await api(template.format(call_id))
        if i >= 50:
            samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def verb_latency(client: RawHttp, calls: list[tuple[str, str]], n: int, rate: int) -> list[float]:
    """One request at a time, round-robin over the calls, each call kept under the production rate
    limit: a call that already had `rate` requests in the last second (plus a margin for the two
    clocks) waits before its next one, so every sample is a verb that ran, not a quick 429."""
    samples = []
    errors: dict[int, int] = {}
    sent: dict[str, collections.deque[float]] = {c: collections.deque(maxlen=rate) for c, _ in calls}
    for i in range(n + 300):
        call_id, token = calls[i % len(calls)]
        path, body, headers = dtmf_request(call_id, token)
        t0 = await under_rate(sent[call_id], rate)
        status, _ = await client.post(path, body, headers)
        elapsed = (time.perf_counter() - t0) * 1000
        if status != 200:
            errors[status] = errors.get(status, 0) + 1
        elif i >= 300:  # warm-up
            samples.append(elapsed)
    if errors:
        print(f"  verb latency: non-200 answers {errors}", file=sys.stderr)
    ERRORS.append(sum(errors.values()))
    return samples


def latency_result(phase: str, esl: list[float], verb: list[float]) -> PhaseResult:
    result = PhaseResult(phase)
    f = result.figures
    f["raw ESL api p50 ms"], f["raw ESL api p99 ms"] = pct(esl, 50), pct(esl, 99)
    f["send_dtmf p50 ms"], f["send_dtmf p99 ms"] = pct(verb, 50), pct(verb, 99)
    f["added p50 ms"] = f["send_dtmf p50 ms"] - f["raw ESL api p50 ms"]
    f["added p99 ms"] = f["send_dtmf p99 ms"] - f["raw ESL api p99 ms"]
    f["ratio verb / raw ESL, p50"] = f["send_dtmf p50 ms"] / f["raw ESL api p50 ms"]
    f["non-200 answers"] = ERRORS[-1] if ERRORS else 0
    result.targets += [
        Target(f"added p50 <= {TARGET_ADDED_P50_MS} ms", "added p50 ms", "<=", TARGET_ADDED_P50_MS),
        Target(f"added p99 <= {TARGET_ADDED_P99_MS} ms", "added p99 ms", "<=", TARGET_ADDED_P99_MS),
        Target("every verb answered 200", "non-200 answers", "<=", 0),
    ]
    return result


async def run(args: argparse.Namespace) -> PhaseResult:
    from bridge.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        box = Sandbox(sandbox_settings(tmp), tenant_id="bench")
        box.sim.core.settings.audio_frame_ms = 1000
        agent = Agent()
        await agent.start()
        try:
            info = await box.start()
            from bench.common import default_agent

            await default_agent(info.base_url, info.admin_key, agent.url)
            tenant = {"bridge_tenant_id": box.tenant_id}
            call_ids: list[str] = []
            for start in range(0, args.calls, 50):
                call_ids += await asyncio.gather(
                    *[
                        box.sim.place_inbound_call("+14155550100", "+14155550199", dict(tenant))
                        for _ in range(min(50, args.calls - start))
                    ]
                )
            await agent.wait_for(call_ids, 60)
            calls = [(c, agent.tokens[c]) for c in call_ids]
            svc = box.runtime.services  # type: ignore[union-attr]
            assert svc is not None and svc.switches.default.esl is not None
            esl = await raw_esl(svc.switches.default.esl.api, call_ids[0], args.samples)
            client = RawHttp("127.0.0.1", int(info.base_url.rsplit(":", 1)[1]))
            await client.connect()
            verb = await verb_latency(client, calls, args.samples, svc.settings.rate_limit_per_s)
            await client.close()
        finally:
            await box.stop()
            await agent.stop()
    result = latency_result("latency", esl, verb)
    result.notes += [
        "One process: bridge + switch simulator (real ESL TCP) + client; embedded Redis on a unix",
        f"socket. {args.calls} live calls, rate limit 10 req/s per call (production value), one",
        f"request at a time, {args.samples} samples after 300 of warm-up; send_dtmf with a fresh",
        "Idempotency-Key and the call's callback token, vs a raw ESL api (uuid_exists) round trip.",
        f"{machine()}.",
    ]
    return result
