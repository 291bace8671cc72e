"""Several FreeSWITCH boxes behind one bridge, and several bridges on one Redis (docs/scaling.md).

Two simulated switches, each a real ESL server; the bridges reach them over TCP as they would two
FreeSWITCH boxes. What a user sees: a call's commands go to the box that holds it, new calls spread
over the boxes, a box that goes away takes only its own calls' control with it, and with two
bridges every event is handled by one of them, whichever bridge a verb arrives at.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.calls.manager import VAR_TENANT
from bridge.runtime import BridgeRuntime
from bridge.sim.server import SwitchSimulator
from bridge.store.tenants import ALL_SCOPES
from tests.conftest import AgentServer, fast_settings
from tests.helpers import CALLER, DIALED, control, ensure_default_agent, http, wait_until

LEASE_S = 0.6


class Bridge(SimpleNamespace):
    """One bridge process's runtime, shaped like the sandbox fixture for tests.helpers."""

    runtime: BridgeRuntime
    info: SimpleNamespace

    @property
    def svc(self) -> Any:
        return self.runtime.services


async def start_bridge(
    redis_url: str, tmp_path: Path, sims: dict[str, SwitchSimulator], admin_key: str | None = None
) -> Bridge:
    esl_url = ",".join(f"{sim.url}#{name}" for name, sim in sims.items())
    settings = fast_settings(redis_url, tmp_path, esl_url=esl_url, box_lease_s=LEASE_S)
    runtime = BridgeRuntime(settings)
    svc = await runtime.start()
    if admin_key is None:
        admin_key, _ = await svc.tenants.create_key("acme", ALL_SCOPES)
    assert runtime.endpoint is not None
    info = SimpleNamespace(base_url=runtime.endpoint.base_url, admin_key=admin_key)
    return Bridge(runtime=runtime, info=info)


@pytest.fixture
async def bridge(redis_url: str, redis: aioredis.Redis, tmp_path: Path, sims) -> AsyncIterator[Bridge]:
    one = await start_bridge(redis_url, tmp_path, sims)
    try:
        yield one
    finally:
        await one.runtime.stop()


def dtmf_relays(sim: SwitchSimulator, call_id: str) -> int:
    return sum(1 for c in sim.commands() if c.startswith("uuid_audio_fork") and call_id in c and "dtmf" in c)


async def inbound(sim: SwitchSimulator, agent_server: AgentServer) -> tuple[str, dict[str, Any]]:
    call_id = await sim.place_inbound_call(CALLER, DIALED, {VAR_TENANT: "acme"})
    return call_id, await agent_server.metadata(call_id)


async def send_dtmf(bridge: Bridge, call_id: str, token: str, digits: str = "1") -> Any:
    return await control(bridge, call_id, {"event": "send_dtmf", "digits": digits}, auth=token)


def sim_commands(sim: SwitchSimulator, prefix: str) -> list[str]:
    return [c for c in sim.commands() if c.startswith(prefix)]


def fork_starts(sim: SwitchSimulator, call_id: str) -> int:
    """`uuid_audio_fork <uuid> start ...` commands for the call (its arguments are ^^-separated)."""
    return sum(1 for c in sim.commands() if c.startswith("uuid_audio_fork") and call_id in c and "start" in c)


async def test_each_call_is_driven_on_the_box_that_holds_it(bridge: Bridge, sims, agent_server):
    await ensure_default_agent(bridge, agent_server)
    call_a, _ = await inbound(sims["a"], agent_server)
    call_b, meta_b = await inbound(sims["b"], agent_server)
    assert (await bridge.svc.sessions.get(call_a)).switch_id == "a"
    assert (await bridge.svc.sessions.get(call_b)).switch_id == "b"

    reply = await send_dtmf(bridge, call_b, meta_b["callback_token"], "42")
    assert reply.status == 200, reply.body
    assert sim_commands(sims["b"], f"uuid_send_dtmf {call_b} 42")
    assert not sim_commands(sims["a"], "uuid_send_dtmf")
    # The AI's fork and recording were opened where the call is, too.
    assert fork_starts(sims["a"], call_a) == 1 and fork_starts(sims["b"], call_b) == 1
    assert fork_starts(sims["a"], call_b) == 0

    health = await http(bridge, "GET", "/healthz")
    assert health.status == 200
    assert health.body["freeswitch"] is True
    assert {name: s["connected"] for name, s in health.body["switches"].items()} == {"a": True, "b": True}
    assert all(s["handled_here"] for s in health.body["switches"].values())


async def dial(bridge: Bridge, agent_id: str, to: str = "+14155550123") -> str:
    """POST /api/v1/calls (the SDK 0.2.1 has no method for it)."""
    reply = await http(
        bridge, "POST", "/api/v1/calls", {"to": to, "from": CALLER, "voice_agent_id": agent_id}
    )
    assert reply.status in (200, 201), reply.body
    return reply.body["call_id"]


async def test_new_calls_spread_over_the_boxes(bridge: Bridge, sims, agent_server):
    agent = await ensure_default_agent(bridge, agent_server)
    placed = [await dial(bridge, agent.id, f"+1415555{n:04d}") for n in range(6)]
    boxes = Counter([(await bridge.svc.sessions.get(c)).switch_id for c in placed])
    assert boxes == {"a": 3, "b": 3}
    for call_id in placed:
        box = (await bridge.svc.sessions.get(call_id)).switch_id
        other = "b" if box == "a" else "a"
        assert any(f"origination_uuid={call_id}" in c for c in sim_commands(sims[box], "originate"))
        assert not any(call_id in c for c in sim_commands(sims[other], "originate"))


async def test_a_box_that_goes_away_takes_only_its_own_calls(bridge: Bridge, sims, agent_server):
    agent = await ensure_default_agent(bridge, agent_server)
    call_a, meta_a = await inbound(sims["a"], agent_server)
    call_b, meta_b = await inbound(sims["b"], agent_server)
    await sims["b"].stop()
    box_b = bridge.svc.switches.get("b")
    await wait_until(lambda: _true(not box_b.connected))

    health = await http(bridge, "GET", "/healthz")
    assert health.status == 200, health.body  # box a still takes calls
    assert health.body["freeswitch"] is False
    assert health.body["switches"]["b"]["connected"] is False
    assert health.body["switches"]["a"]["connected"] is True

    lost = await send_dtmf(bridge, call_b, meta_b["callback_token"])
    assert lost.status == 503, lost.body
    fine = await send_dtmf(bridge, call_a, meta_a["callback_token"])
    assert fine.status == 200, fine.body

    call_id = await dial(bridge, agent.id)
    assert (await bridge.svc.sessions.get(call_id)).switch_id == "a"


async def test_monitoring_a_call_on_another_box_is_refused_clearly(bridge: Bridge, sims, agent_server):
    await ensure_default_agent(bridge, agent_server)
    call_a, meta_a = await inbound(sims["a"], agent_server)
    call_b, _ = await inbound(sims["b"], agent_server)
    for body in (
        {"event": "monitor_start", "target_call_id": call_b, "mode": "listen"},
        {"event": "barge", "target_call_id": call_b},
    ):
        reply = await control(bridge, call_a, body, auth=meta_a["callback_token"])
        assert reply.status == 409, reply.body
        assert reply.code == "cross_switch_not_supported"


async def test_two_bridges_share_the_boxes_and_handle_each_event_once(
    redis_url: str, redis: aioredis.Redis, tmp_path: Path, sims, agent_server
):
    first = await start_bridge(redis_url, tmp_path / "1", sims)
    second = await start_bridge(redis_url, tmp_path / "2", sims, admin_key=first.info.admin_key)
    try:

        async def split() -> bool:
            owned = [first.svc.calls.ownership.owned, second.svc.calls.ownership.owned]
            return len(owned[0]) == 1 and len(owned[1]) == 1 and owned[0] | owned[1] == {"a", "b"}

        await wait_until(split, timeout=10 * LEASE_S + 5)
        await ensure_default_agent(first, agent_server)
        calls = [await inbound(sims[name], agent_server) for name in ("a", "b", "a", "b")]
        for call_id, meta in calls:
            # Either bridge serves the verb, whichever handles the call's box.
            for bridge in (first, second):
                reply = await send_dtmf(bridge, call_id, meta["callback_token"])
                assert reply.status == 200, reply.body
        for call_id, _ in calls:
            # The caller's key press reaches the AI once: a DTMF event is relayed by one bridge.
            sim = sims[(await first.svc.sessions.get(call_id)).switch_id]
            await sim.press_digits(call_id, "5")
            await wait_until(lambda c=call_id, s=sim: _true(dtmf_relays(s, c) >= 1))
        await asyncio.sleep(0.3)
        for call_id, _ in calls:
            sim = sims[(await first.svc.sessions.get(call_id)).switch_id]
            assert dtmf_relays(sim, call_id) == 1
            await sim.hangup(call_id)

        async def all_ended() -> list[Any]:
            found = await first.svc.outbox.read_all()
            ended = {e.data.get("call_id") for e in found if e.event_type == "call.ended"}
            return found if ended >= {c for c, _ in calls} else []

        found = await wait_until(all_ended, timeout=5)
        await asyncio.sleep(0.3)  # anything doubled would arrive by now
        found = await first.svc.outbox.read_all()
        for call_id, _ in calls:
            kinds = Counter(e.event_type for e in found if e.data.get("call_id") == call_id)
            assert kinds["call.started"] == 1 and kinds["call.answered"] == 1, kinds
            assert kinds["ai_session.started"] == 1 and kinds["call.ended"] == 1, kinds
            # One fork to the AI per call: the other bridge did not set the call up again.
            assert fork_starts(sims["a"], call_id) + fork_starts(sims["b"], call_id) == 1

        # One bridge stops: the other takes its box over and handles the calls that come next.
        await first.runtime.stop()
        await wait_until(lambda: _true(second.svc.calls.ownership.owned == {"a", "b"}), timeout=10)
        late, _ = await inbound(sims["a"], agent_server)
        assert (await second.svc.sessions.get(late)).switch_id == "a"
    finally:
        await second.runtime.stop()
        await first.runtime.stop()


async def _true(value: bool) -> bool:
    return value


# ---------------------------------------------------------------- naming the boxes


def test_the_box_list_is_read_from_the_url_list_or_a_file(tmp_path: Path):
    from bridge.config import Settings

    listed = Settings().with_(esl_url="esl://:pw@10.0.0.1:8021#east, esl://:pw2@10.0.0.2")
    assert [(t.box, t.host, t.port, t.password) for t in listed.switches] == [
        ("east", "10.0.0.1", 8021, "pw"),
        ("10.0.0.2:8021", "10.0.0.2", 8021, "pw2"),
    ]
    boxes = tmp_path / "switches"
    boxes.write_text("# the lab\nesl://:a@127.0.0.1:8021#fs1\n\nesl://:b@127.0.0.1:8022#fs2\n")
    from_file = Settings().with_(switches_file=str(boxes))
    assert [t.box for t in from_file.switches] == ["fs1", "fs2"]


@pytest.mark.parametrize(
    ("esl_url", "says"),
    [
        ("esl://:x@h:1#a,esl://:x@h:2#a", "must be unique"),
        ("esl://:x@h:1#bad*name", "switch name"),
        ("esl://:x@h:1#a}b", "switch name"),
        ("http://h:1", "must start with esl://"),
        (" , ", "no FreeSWITCH box"),
    ],
)
def test_a_bad_box_list_stops_bridge_run_with_a_clear_message(esl_url: str, says: str):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "BRIDGE_ESL_URL": esl_url}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr


async def test_a_fact_is_emitted_once_whichever_bridge_repeats_it(redis: aioredis.Redis):
    from bridge.webhooks.outbox import Outbox

    first, second = Outbox(redis), Outbox(redis)  # two bridges' outboxes on one Redis
    sent = await first.emit("call.ended", "acme", {"call_id": "c1"}, once="c1")
    again = await second.emit("call.ended", "acme", {"call_id": "c1", "late": True}, once="c1")
    other = await second.emit("call.ended", "acme", {"call_id": "c2"}, once="c2")
    assert sent is not None and again is None and other is not None
    found = [(e.event_type, e.data) for e in await first.read_all()]
    assert found == [("call.ended", {"call_id": "c1"}), ("call.ended", {"call_id": "c2"})]
