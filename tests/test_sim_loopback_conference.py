"""The simulator's mod_loopback and the conference pieces the bridge's conference verbs use:
a loopback leg originated into `&conference(...)`, member events with channel variables
(verbose-events), an audio fork with mix type `mixed` on the loopback leg."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import RawEsl, named, running_sim

LEG = "5b0c6d3e-aaaa-4bbb-8ccc-0123456789ab"


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    async with running_sim(answer_delay_s=0.02, playback_duration_s=0.05) as switch:
        yield switch


def member_action(action: str, uuid: str):
    return lambda e: e.key == "conference::maintenance" and e.get("Action") == action and e.unique_id == uuid


async def loopback_into_conference(esl: RawEsl, room: str = "room1") -> tuple[str, str]:
    variables = f"{{origination_uuid={LEG},bridge_member_type=ai_agent,origination_caller_id_name=AI}}"
    await esl.bgapi(f"originate {variables}loopback/bridge_ai_leg/lab &conference({room}@default)")
    job = await esl.wait_event(named("BACKGROUND_JOB"))
    assert job.body == f"+OK {LEG}\n"
    added = await esl.wait_event(member_action("add-member", LEG))
    b_park = await esl.wait_event(lambda e: e.name == "CHANNEL_PARK" and e.unique_id != LEG)
    return added.get("Member-ID") or "", b_park.unique_id


async def test_loopback_originate_joins_a_leg_and_parks_the_other(sim, esl):
    member_id, b_uuid = await loopback_into_conference(esl)
    a, b = sim.snapshot(LEG), sim.snapshot(b_uuid)
    assert a is not None and b is not None
    assert a["name"] == "loopback/bridge_ai_leg-a" and a["direction"] == "outbound"
    assert b["name"] == "loopback/bridge_ai_leg-b" and b["direction"] == "inbound"
    assert a["conference"] == "room1" and str(a["member_id"]) == member_id
    assert b["conference"] is None and b["answered"] is True and b["destination"] == "bridge_ai_leg"
    # mod_loopback: each leg names the other; the originate's {vars} reach loopback-b too.
    assert a["variables"]["other_loopback_leg_uuid"] == b_uuid
    assert b["variables"]["other_loopback_leg_uuid"] == LEG
    assert b["variables"]["bridge_member_type"] == "ai_agent"
    park = next(e for e in esl.of(b_uuid) if e.name == "CHANNEL_PARK")
    assert park.get("Caller-Destination-Number") == "bridge_ai_leg" and park.get("Caller-Context") == "lab"
    assert park.var("bridge_tenant_id") == ""


async def test_member_events_carry_channel_variables_with_verbose_events(sim, esl):
    await loopback_into_conference(esl)
    added = next(e for e in esl.events if member_action("add-member", LEG)(e))
    assert added.var("bridge_member_type") == "ai_agent"
    assert added.var("conference_member_id") == added.get("Member-ID")
    assert added.get("Conference-Profile-Name") == "default"


async def test_member_events_have_basic_data_only_without_verbose_events(sim, esl):
    sim.core.conferences.profiles["default"]["verbose-events"] = "false"  # FreeSWITCH's stock profile
    await loopback_into_conference(esl)
    added = next(e for e in esl.events if member_action("add-member", LEG)(e))
    assert added.get("Member-ID") and added.unique_id == LEG
    assert not [h for h in added.headers if h.startswith("variable_")]


async def test_killing_either_loopback_leg_hangs_up_both_and_the_member_leaves(sim, esl):
    _member, b_uuid = await loopback_into_conference(esl)
    assert await esl.api(f"uuid_kill {LEG} NORMAL_CLEARING") == "+OK\n"
    await esl.wait_event(member_action("del-member", LEG))
    for uuid in (LEG, b_uuid):
        done = await esl.wait_event(lambda e, u=uuid: e.name == "CHANNEL_DESTROY" and e.unique_id == u)
        assert done.unique_id == uuid
    assert sim.snapshot(b_uuid)["hangup_cause"] == "NORMAL_CLEARING"
    assert "room1" not in sim.core.conferences.rooms


async def test_loopback_to_an_unrouted_extension_fails_the_originate(sim, esl):
    await esl.bgapi("originate loopback/nowhere/lab &conference(room1@default)")
    job = await esl.wait_event(named("BACKGROUND_JOB"))
    assert job.body == "-ERR NO_ROUTE_DESTINATION\n"
    assert "room1" not in sim.core.conferences.rooms


async def test_audio_fork_with_mixed_audio_on_the_loopback_leg(sim, esl):
    from aiohttp import WSMsgType, web

    texts: list[str] = []
    frames: list[int] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("audio.drachtio.org",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                texts.append(msg.data)
            elif msg.type == WSMsgType.BINARY:
                frames.append(len(msg.data))
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await loopback_into_conference(esl)
        meta = json.dumps({"type": "metadata", "conference_id": "room1"}, separators=(",", ":"))
        reply = await esl.api(f"uuid_audio_fork ^^|{LEG}|start|ws://127.0.0.1:{port}/ws|mixed|16k|ai_fork|{meta}")
        assert reply == "+OK Success\n"
        await esl.wait_event(lambda e: e.key == "mod_audio_fork::connect" and e.unique_id == LEG)
        await esl.wait_for(lambda: texts and frames)
        assert json.loads(texts[0]) == {"type": "metadata", "conference_id": "room1"}
        assert frames[0] == 16000 * 20 // 1000 * 2  # one mono L16 frame: `mixed` is one channel
        fork = sim.snapshot(LEG)["audio_fork"]
        assert fork["mix"] == "mixed" and fork["bugname"] == "ai_fork" and fork["connected"] is True
    finally:
        await esl.api(f"uuid_kill {LEG}")
        await runner.cleanup()
