"""What monitor, whisper and barge use on the simulated switch: a second (stereo) audio fork on
a channel that already has one, `uuid_displace ... m` that ends with its file, `conference play`
to one member, `conference relate`, and a conference member pulled out by a bridge and back in
with `uuid_transfer -both`."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import pytest

from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import RawEsl, named, running_sim

# `agent`: the AI WebSocket server fixture of the audio fork tests, reused as is.
from tests.test_sim_audio_fork import agent as agent
from tests.test_sim_audio_fork import start_cmd

PSTN = "sofia/gateway/pstn/"


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    async with running_sim(answer_delay_s=0.01, audio_frame_ms=20, playback_duration_s=0.3) as switch:
        yield switch


async def answered(sim: SwitchSimulator, esl: RawEsl, caller: str = "+15550001") -> str:
    uuid = await sim.place_inbound_call(caller, "+15559999")
    assert await esl.api(f"uuid_answer {uuid}") == "+OK\n"
    return uuid


def bugs(sim: SwitchSimulator, uuid: str, function: str) -> list[str]:
    return [b["target"] for b in sim.snapshot(uuid)["media_bugs"] if b["function"] == function]


# ---------------------------------------------------------------- a second, stereo fork


async def test_a_stereo_monitor_fork_next_to_the_ai_fork_and_stopping_it_leaves_the_other(sim, esl, agent):
    uuid = await answered(sim, esl)
    assert await esl.api(start_cmd(uuid, agent.url, {"type": "metadata"})) == "+OK Success\n"
    await agent.wait(lambda: len(agent.conns) == 1 and agent.texts(0))
    monitor = "uuid_audio_fork ^^|" + "|".join(
        [uuid, "start", agent.url, "stereo", "16k", "monitor_x", json.dumps({"type": "monitor", "a": "b c"})]
    )
    assert await esl.api(monitor) == "+OK Success\n"
    bug = await esl.wait_event(lambda e: e.unique_id == uuid and e.get("Media-Bug-Function") == "monitor_x")
    assert bug.name == "MEDIA_BUG_START"
    await agent.wait(lambda: len(agent.conns) == 2 and len(agent.binaries(1)) >= 3)
    assert json.loads(agent.texts(1)[0]) == {"type": "monitor", "a": "b c"}
    assert set(agent.binaries(1)) == {1280}  # 20 ms of 16 kHz, 16-bit, two channels
    assert set(agent.binaries(0)) == {640}  # the AI's own fork is still mono
    forks = {f["bugname"]: f for f in sim.snapshot(uuid)["audio_forks"]}
    assert forks["monitor_x"]["mix"] == "stereo" and forks["ai_fork"]["mix"] == "mono"

    assert await esl.api(f"uuid_audio_fork {uuid} stop monitor_x") == "+OK Success\n"
    await agent.wait(lambda: agent.conns[1]["closed"])
    await esl.wait_event(lambda e: e.name == "MEDIA_BUG_STOP" and e.get("Media-Bug-Function") == "monitor_x")
    assert [f["bugname"] for f in sim.snapshot(uuid)["audio_forks"]] == ["ai_fork"]
    assert not agent.conns[0]["closed"]
    assert not [e for e in esl.of(uuid) if e.key == "mod_audio_fork::disconnect"]  # a stop is graceful
    assert await esl.api(f"uuid_audio_fork {uuid} stop monitor_x") == "-ERR Operation Failed\n"


async def test_the_monitor_fork_closes_when_its_channel_hangs_up(sim, esl, agent):
    uuid = await answered(sim, esl)
    await esl.api(start_cmd(uuid, agent.url, {"type": "monitor"}, bug="monitor_x"))
    await agent.wait(lambda: agent.conns and agent.texts(0))
    await sim.hangup(uuid)
    await agent.wait(lambda: agent.conns[0]["closed"])
    await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "CHANNEL_HANGUP_COMPLETE")
    assert not [e for e in esl.of(uuid) if e.key == "mod_audio_fork::disconnect"]


# ---------------------------------------------------------------- uuid_displace


async def test_displace_mux_ends_with_its_file_and_the_same_file_can_start_again(sim, esl):
    uuid = await answered(sim, esl)
    tip = "http_cache://http://cdn.example.com/tip.wav"
    assert await esl.api(f"uuid_displace {uuid} start {tip} 0 m") == "+OK Success\n"
    assert sim.snapshot(uuid)["displace"] == {tip: "m"}
    assert bugs(sim, uuid, "displace") == [tip]
    # one displace per file and channel while it plays ("Only 1 of the same file per channel")
    assert await esl.api(f"uuid_displace {uuid} start {tip} 0 m") == "-ERR Cannot displace session!\n"
    stop = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "MEDIA_BUG_STOP")
    assert stop.get("Media-Bug-Function") == "displace" and stop.get("Media-Bug-Target") == tip
    assert sim.snapshot(uuid)["displace"] == {} and bugs(sim, uuid, "displace") == []
    assert await esl.api(f"uuid_displace {uuid} start {tip} 0 m") == "+OK Success\n"


async def test_displace_loops_until_stopped_and_a_missing_file_fails(sim, esl):
    uuid = await answered(sim, esl)
    assert await esl.api(f"uuid_displace {uuid} start /tmp/moh.wav 0 lm") == "+OK Success\n"
    await esl.settle(0.5)  # longer than the file: a loop keeps going
    assert bugs(sim, uuid, "displace") == ["/tmp/moh.wav"]
    assert await esl.api(f"uuid_displace {uuid} stop /tmp/moh.wav") == "+OK Success\n"
    sim.set_playback_outcome("/tmp/missing", "FILE NOT FOUND")
    assert (
        await esl.api(f"uuid_displace {uuid} start /tmp/missing.wav 0 m") == "-ERR Cannot displace session!\n"
    )
    assert bugs(sim, uuid, "displace") == []


async def test_displace_limit_ends_an_endless_stream(sim, esl):
    uuid = await answered(sim, esl)
    assert await esl.api(f"uuid_displace {uuid} start local_stream://moh 1 m") == "+OK Success\n"
    await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "MEDIA_BUG_STOP", timeout=3)


# ---------------------------------------------------------------- conference play / relate


async def two_members(sim: SwitchSimulator, esl: RawEsl, room: str) -> tuple[str, str, dict[str, str]]:
    a = await answered(sim, esl, "+15550001")
    b = await answered(sim, esl, "+15550002")
    for leg in (a, b):
        await esl.api(f"uuid_transfer {leg} 'conference:{room}@default' inline")
    await esl.wait_for(lambda: len([e for e in esl.events if e.get("Action") == "add-member"]) == 2)
    ids = {e.unique_id: e.get("Member-ID") for e in esl.events if e.get("Action") == "add-member"}
    return a, b, ids


async def test_conference_play_to_one_member(sim, esl):
    a, b, ids = await two_members(sim, esl, "coach")
    tip = "http_cache://http://cdn.example.com/tip.wav"
    reply = await esl.api(f"conference coach play {tip} {ids[b]}")
    assert reply == f"+OK (play) Playing file {tip} to member {ids[b]}\n"
    started = await esl.wait_event(named("conference::maintenance", Action="play-file-member"))
    assert started.unique_id == b and started.get("Member-ID") == ids[b] and started.get("File") == tip
    assert sim.snapshot(b)["conference_member"]["playing"] == tip
    assert sim.snapshot(a)["conference_member"]["playing"] is None  # only that member hears it
    done = await esl.wait_event(named("conference::maintenance", Action="play-file-member-done"))
    assert done.unique_id == b
    assert sim.snapshot(b)["conference_member"]["playing"] is None
    missing = await esl.api(f"conference coach play {tip} 999")
    usage = re.escape("play <file_path> [async|<member_id> [nomux]]")
    assert re.fullmatch(rf"-ERR Member: \d+ not found\.\n{usage}", missing)


async def test_conference_relate_nospeak_and_clear_show_in_the_member_state(sim, esl):
    a, b, ids = await two_members(sim, esl, "rel")
    assert await esl.api(f"conference rel relate {ids[a]} {ids[b]} nospeak") == (
        f"+OK {ids[a]}->{ids[b]} nospeak set\n"
    )
    assert sim.snapshot(a)["conference_member"]["relations"] == {ids[b]: "nospeak"}
    assert sim.snapshot(b)["conference_member"]["relations"] == {}
    assert await esl.api(f"conference rel relate {ids[a]} {ids[b]} clear") == (
        f"+OK relationship {ids[a]}->{ids[b]} cleared.\n"
    )
    assert sim.snapshot(a)["conference_member"]["relations"] == {}


# ---------------------------------------------------------------- out of the conference and back


async def test_a_member_bridged_out_of_the_conference_comes_back_with_its_partner(sim, esl):
    """The barge path for a target outside the AI's conference: both its legs are transferred in."""
    a, b, ids = await two_members(sim, esl, "room")
    other = (await esl.api(f"originate {PSTN}+15557654321 &park()")).removeprefix("+OK ").strip()
    assert await esl.api(f"uuid_bridge {b} {other}") == f"+OK {other}\n"
    left = await esl.wait_event(lambda e: e.unique_id == b and e.get("Action") == "del-member")
    assert left.get("Member-ID") == ids[b]
    await esl.wait_for(lambda: sim.snapshot(b)["bridged_to"] == other)
    assert sim.snapshot(b)["conference"] is None

    esl.clear()
    assert await esl.api(f"uuid_transfer {b} -both 'conference:room@default' inline") == "+OK\n"
    await esl.wait_for(
        lambda: {e.unique_id for e in esl.events if e.get("Action") == "add-member"} == {b, other}
    )
    assert sim.snapshot(b)["conference"] == sim.snapshot(other)["conference"] == "room"
    assert sim.snapshot(b)["hangup_cause"] is None and sim.snapshot(other)["hangup_cause"] is None
    assert sim.snapshot(a)["conference"] == "room"
