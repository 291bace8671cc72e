"""Two bridge processes, two simulated switches, one Redis; one bridge is `kill -9`ed mid-traffic.

What an operator must see afterwards (docs/scaling.md): no session left live, every call the
callers made reached the AI, and every fact about a call (started, answered, the AI session's start
and end, ended) arrived at the customer's webhook endpoint exactly once as an event, however many
times a delivery the dead bridge had in flight was retried with its webhook-id.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from bridge.calls.manager import VAR_TENANT
from bridge.sim.server import SwitchSimulator
from bridge.store import keys
from bridge.store.redis import connect
from bridge.store.tenants import ALL_SCOPES, TenantStore
from tests.conftest import AgentServer
from tests.helpers import CALLER, DIALED, ensure_default_agent, http
from tests.webhook_receiver import Receiver

REPO = Path(__file__).resolve().parents[1]
LEASE_S = 1.0
FACTS = ("call.started", "call.answered", "ai_session.started", "ai_session.ended", "call.ended")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BridgeProcess:
    """`python -m bridge run` against both boxes and the shared Redis."""

    def __init__(self, name: str, tmp: Path, redis_url: str, esl_url: str, admin_key: str) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = tmp / f"bridge-{name}.log"
        self.info = SimpleNamespace(base_url=f"http://127.0.0.1:{self.port}", admin_key=admin_key)
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": redis_url,
            "BRIDGE_ESL_URL": esl_url,
            "BRIDGE_HOST": "127.0.0.1",
            "BRIDGE_PORT": str(self.port),
            "BRIDGE_DATA_DIR": str(tmp / f"data-{name}"),
            "BRIDGE_RECORDINGS_DIR": str(tmp / "recordings"),
            "BRIDGE_BOX_LEASE_S": str(LEASE_S),
            "BRIDGE_WEBHOOK_ALLOW_LOOPBACK_HTTP": "1",
            "BRIDGE_WEBHOOK_TIMEOUT_S": "2",
            "BRIDGE_WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.4,0.8,1,1,1,1,1",
            "BRIDGE_WEBHOOK_CLAIM_IDLE_S": "1",
            "BRIDGE_WEBHOOK_LEASE_MARGIN_S": "1",
            "BRIDGE_RATE_LIMIT_PER_S": "1000",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 60.0) -> None:
        self._spawn()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"bridge {self.name} exited {code}:\n{self.log()[-3000:]}")
            try:
                if (await self.health())[0] == 200:
                    return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge {self.name} not up in {timeout}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.info.base_url}/healthz") as resp:
            return resp.status, await resp.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def ensure_gone(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def shared_redis_url(redis_url: str, redis: Any) -> str:
    """One server, or under BRIDGE_TEST_REDIS=cluster (make test's cluster pass) a 3-master cluster."""
    return redis_url


@pytest.mark.timeout(240)
async def test_a_bridge_killed_mid_traffic_loses_no_call_and_no_webhook(
    tmp_path: Path, shared_redis_url: str, sims: dict[str, SwitchSimulator], agent_server: AgentServer
) -> None:
    store = connect(shared_redis_url)
    admin_key, _ = await TenantStore(store).create_key("acme", ALL_SCOPES)
    esl_url = ",".join(f"{sim.url}#{name}" for name, sim in sims.items())
    bridges = [BridgeProcess(n, tmp_path, shared_redis_url, esl_url, admin_key) for n in ("x", "y")]
    receiver = Receiver()
    await receiver.start()
    try:
        for bridge in bridges:
            await bridge.start()

        async def split() -> bool:
            handled = [
                {box for box, s in (await b.health())[1]["switches"].items() if s["handled_here"]}
                for b in bridges
            ]
            return len(handled[0]) == 1 and len(handled[1]) == 1 and handled[0] | handled[1] == {"a", "b"}

        await eventually(split, timeout=20, what="the two bridges share the boxes")
        agent = await ensure_default_agent(bridges[0], agent_server)
        # Enough room for every call in flight, including those whose end the dead bridge missed.
        raised = await http(bridges[0], "PATCH", f"/api/v1/voice-agents/{agent.id}", {"max_concurrent": 500})
        assert raised.status == 200, raised.body
        subscription = {"url": receiver.url, "event_types": ["*"]}
        reply = await http(bridges[0], "POST", "/api/v1/webhooks", subscription)
        assert reply.status == 201, reply.body
        receiver.secrets["current"] = reply.body["signing_secret"]

        victim = bridges[0]
        survivor = bridges[1]
        placed: list[str] = []
        reached_ai: set[str] = set()
        verbs_ok: Counter[str] = Counter()
        rng = random.Random(7)

        async def one_call(i: int) -> None:
            sim = sims["ab"[i % 2]]
            call_id = await sim.place_inbound_call(CALLER, DIALED, {VAR_TENANT: "acme"})
            placed.append(call_id)
            meta = await agent_server.metadata(call_id, timeout=30)
            reached_ai.add(call_id)
            # The AI's verb goes to either bridge; one that is gone fails over to the other,
            # as a load balancer in front of them would.
            for bridge in rng.sample(bridges, 2):
                try:
                    sent = await http(
                        bridge,
                        "POST",
                        f"/api/v1/ai-sessions/{call_id}/control",
                        {"event": "send_dtmf", "digits": "1"},
                        auth=meta["callback_token"],
                    )
                except aiohttp.ClientError:
                    continue
                assert sent.status == 200, sent.body
                verbs_ok[bridge.name] += 1
                break
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            await sim.hangup(call_id)

        tasks = []
        started = time.monotonic()
        killed = False
        for i in range(60):
            tasks.append(asyncio.create_task(one_call(i)))
            await asyncio.sleep(0.1)
            if not killed and time.monotonic() - started > 2.5:
                victim.kill9()
                killed = True
                takeover = asyncio.create_task(time_to_take_over(survivor))
        await asyncio.gather(*tasks)
        took_s = await takeover

        async def settled() -> bool:
            live = await store.smembers(keys.live_sessions())
            ended = {r.json["data"]["call_id"] for r in receiver.requests if r.json["event_type"] == "call.ended"}  # noqa: E501
            return not live and ended >= set(placed)

        await eventually(settled, timeout=60, what="every session ended and its call.ended delivered")
        await asyncio.sleep(2)  # a doubled event or a late redelivery would arrive by now

        assert len(placed) == 60 and reached_ai == set(placed)
        # No session stuck, no agent slot held.
        for call_id in placed:
            raw = await store.hgetall(keys.session(call_id))
            assert raw.get("outcome") == "hangup", (call_id, raw)
        async for key in store.scan_iter(match=keys.voice_agent_active("*")):
            assert await store.scard(key) == 0, key

        ids_by_fact: dict[tuple[str, str], set[str]] = defaultdict(set)
        deliveries = Counter(r.json["event_id"] for r in receiver.requests)
        for r in receiver.requests:
            body = r.json
            if body["event_type"] in FACTS:
                ids_by_fact[(body["event_type"], body["data"]["call_id"])].add(body["event_id"])
            assert r.verified_with == {"current": True}
        for call_id in placed:
            for fact in FACTS:
                assert len(ids_by_fact[(fact, call_id)]) == 1, (fact, call_id, ids_by_fact[(fact, call_id)])
        # Every event the bridges emitted was delivered (none lost).
        emitted = {e.event_id for e in await outbox_events(store)}
        assert emitted <= set(deliveries), emitted - set(deliveries)
        status, health = await survivor.health()
        assert status == 200 and all(s["handled_here"] for s in health["switches"].values()), health
        redelivered = sum(n - 1 for n in deliveries.values())
        print(
            f"calls={len(placed)} verbs={dict(verbs_ok)} events={len(emitted)} "
            f"redelivered={redelivered} takeover_s={took_s:.2f}"
        )
    finally:
        for bridge in bridges:
            bridge.ensure_gone()
        await receiver.stop()
        await store.aclose()


async def time_to_take_over(survivor: BridgeProcess) -> float:
    """Seconds from now (the kill) until the survivor reports handling every box."""
    killed_at = time.monotonic()
    while True:
        _, health = await survivor.health()
        if all(s["handled_here"] for s in health["switches"].values()):
            return time.monotonic() - killed_at
        await asyncio.sleep(0.05)


async def outbox_events(store: Any) -> list[Any]:
    from bridge.webhooks.outbox import Outbox

    return await Outbox(store).read_all(count=100_000)


async def eventually(probe: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.1)
