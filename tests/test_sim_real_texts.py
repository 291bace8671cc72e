"""Replies the real FreeSWITCH 1.10.12 gave where the simulator used to differ (issue 9 §3).

Each expected text is the real one; the source line it comes from is named next to it
(signalwire/freeswitch v1.10.12, drachtio mod_audio_fork 88e1465).
"""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bridge.sim.conference import PROFILES
from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import RawEsl, named, running_sim
from tests.test_sim_audio_fork import call, start_cmd

CONF_XML = Path(__file__).resolve().parent.parent / "freeswitch-conf/autoload_configs/conference.conf.xml"
NOWHERE = "00000000-0000-0000-0000-000000000000"
# conference_api.c conference_api_sub_commands[]: "play" / "relate" syntax, written by
# conference_api_dispatch as "%s %s" (no newline) when the command returns an error.
PLAY_USAGE = "play <file_path> [async|<member_id> [nomux]]"
RELATE_USAGE = "relate <member_id>[,<member_id>] <other_member_id>[,<other_member_id>] [nospeak|nohear|clear]"


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    async with running_sim(answer_delay_s=0.01, playback_duration_s=0.2) as switch:
        yield switch


async def room(sim: SwitchSimulator, esl: RawEsl, name: str, legs: int = 2) -> list[str]:
    """`legs` answered calls in conference `name`; their member ids, oldest first."""
    uuids = []
    for i in range(legs):
        uuid = await sim.place_inbound_call(f"+1555000{i}", "+15559999")
        assert await esl.api(f"uuid_answer {uuid}") == "+OK\n"
        await esl.api(f"uuid_transfer {uuid} 'conference:{name}@default' inline")
        uuids.append(uuid)
    await esl.wait_for(lambda: len([e for e in esl.events if e.get("Action") == "add-member"]) == legs)
    by_uuid = {e.unique_id: e.get("Member-ID") for e in esl.events if e.get("Action") == "add-member"}
    esl.clear()
    return [by_uuid[u] for u in uuids]


# ---------------------------------------------------------------- conference play


async def test_conference_play_answers_ok_with_and_without_a_member(sim, esl):
    _, b = await room(sim, esl, "lab")
    # conference_api_sub_play: "+OK (play) Playing file %s\n"
    assert await esl.api("conference lab play /tmp/beep.wav") == "+OK (play) Playing file /tmp/beep.wav\n"
    started = await esl.wait_event(named("conference::maintenance", Action="play-file"))
    assert started.get("Async") == "false"
    # "+OK (play) Playing file %s to member %u\n"
    assert await esl.api(f"conference lab play /tmp/beep.wav {b}") == (
        f"+OK (play) Playing file /tmp/beep.wav to member {b}\n"
    )
    member = await esl.wait_event(named("conference::maintenance", Action="play-file-member"))
    assert member.get("Member-ID") == b and "Async" not in member.headers
    # `async` as the last argument: to the whole conference, Async: true
    esl.clear()
    assert (
        await esl.api("conference lab play /tmp/beep.wav async") == "+OK (play) Playing file /tmp/beep.wav\n"
    )
    assert (await esl.wait_event(named("conference::maintenance", Action="play-file"))).get("Async") == "true"


async def test_conference_play_of_a_missing_file_is_an_err_with_or_without_a_member(sim, esl):
    _, b = await room(sim, esl, "lab")
    sim.set_playback_outcome("/tmp/missing", "FILE NOT FOUND")
    # "-ERR (play) File: %s not found.\n", both branches; no usage line (the command succeeded)
    assert (
        await esl.api("conference lab play /tmp/missing.wav")
        == "-ERR (play) File: /tmp/missing.wav not found.\n"
    )
    assert await esl.api(f"conference lab play /tmp/missing.wav {b}") == (
        "-ERR (play) File: /tmp/missing.wav not found.\n"
    )
    await esl.settle(0.1)
    assert not [e for e in esl.events if (e.get("Action") or "").startswith("play-file")]


async def test_conference_play_to_a_missing_member_prints_a_pointer_and_the_usage(sim, esl):
    await room(sim, esl, "lab", legs=1)
    # "-ERR Member: %u not found.\n" is passed the id string, so a pointer's low 32 bits are
    # printed, never the id; the error status makes conference_api_dispatch add the syntax line.
    for selector in ("999", "uuid=nobody", "abc"):
        reply = await esl.api(f"conference lab play /tmp/beep.wav {selector}")
        m = re.fullmatch(rf"-ERR Member: (\d+) not found\.\n{re.escape(PLAY_USAGE)}", reply)
        assert m, reply
        assert 0 <= int(m.group(1)) <= 0xFFFFFFFF
    # no file at all: only the syntax line
    assert await esl.api("conference lab play") == PLAY_USAGE


# ---------------------------------------------------------------- conference relate


async def test_relate_clear_is_ok_with_a_period_even_when_nothing_was_related(sim, esl):
    a, b = await room(sim, esl, "lab")
    # _conference_api_sub_relate_clear_member_relationship: "+OK relationship %u->%u cleared.\n"
    assert await esl.api(f"conference lab relate {a} {b} clear") == f"+OK relationship {a}->{b} cleared.\n"
    # ... when only the first member must exist
    assert await esl.api(f"conference lab relate {a} 99 clear") == f"+OK relationship {a}->99 cleared.\n"
    # ... otherwise "-ERR relationship %u->%u not found.\n"
    assert await esl.api(f"conference lab relate 99 {a} clear") == f"-ERR relationship 99->{a} not found.\n"
    # _conference_api_sub_relate_set_member_relationship: both must exist
    assert await esl.api(f"conference lab relate {a} 99 nohear") == f"-ERR relationship {a}->99 not found.\n"
    assert await esl.api(f"conference lab relate {a} {b} nohear") == f"+OK {a}->{b} nohear set\n"


async def test_relate_lists_relationships_and_answers_usage_without_an_action(sim, esl):
    a, b = await room(sim, esl, "lab")
    assert await esl.api("conference lab relate") == "+OK No relationships\n"
    pairs = [(a, b), (a, a), (b, b), (b, a)]
    assert await esl.api(f"conference lab relate {a},{b} {b},{a} nospeak") == "".join(
        f"+OK {x}->{y} nospeak set\n" for x, y in pairs
    )
    # _conference_api_sub_relate_show_member_relationships: "%d -> %d %s%s%s\n", newest first
    assert await esl.api(f"conference lab relate {a} {b} nohear") == f"+OK {a}->{b} nohear set\n"
    assert await esl.api(f"conference lab relate {a}") == (
        f"{a} -> {a} NOSPEAK HEAR NOSENDVIDEO \n{a} -> {b} SPEAK NOHEAR NOSENDVIDEO \n"
    )
    assert await esl.api(f"conference lab relate {a} {b}") == RELATE_USAGE
    assert await esl.api(f"conference lab relate {a} {b} bogus") == RELATE_USAGE
    # other member id 0 clears them all; listing nobody's writes nothing, which ESL words so
    assert await esl.api(f"conference lab relate {a} 0 clear") == f"+OK relationship {a}->0 cleared.\n"
    assert await esl.api(f"conference lab relate {a}") == "-ERR no reply\n"
    assert await esl.api(f"conference lab relate {b}") == (
        f"{b} -> {a} NOSPEAK HEAR NOSENDVIDEO \n{b} -> {b} NOSPEAK HEAR NOSENDVIDEO \n"
    )


# ---------------------------------------------------------------- conference list


async def test_conference_list_header_has_the_profile_rate_and_the_real_flags(sim, esl):
    a, b = await room(sim, esl, "lab")
    listed = (await esl.api("conference list")).splitlines()
    # conference_api_sub_list: "+OK Conference %s (%u member%s rate: %u%s flags: " + flags + ")\n"
    assert listed[0] == (
        "+OK Conference lab (2 members rate: 16000 flags: "
        "running|answered|enforce_min|dynamic|exit_sound|enter_sound|json_status)"
    )
    assert [line.split(";")[0] for line in listed[1:]] == [b, a]
    assert await esl.api("conference lab lock") == "OK lab locked\n"
    assert (await esl.api("conference list")).splitlines()[0] == (
        "+OK Conference lab (2 members rate: 16000 locked flags: "
        "locked|running|answered|enforce_min|dynamic|exit_sound|enter_sound|json_status)"
    )
    assert json.loads(await esl.api("conference lab json_list"))[0]["rate"] == 16000


async def test_originated_members_are_listed_by_their_flipped_caller_id(sim, esl):
    """Seen in the real-switch tier (tests/freeswitch/test_conference.py): a leg the switch
    originates is listed as its callee, "Outbound Call" <its number>, whatever
    origination_caller_id_name said. switch_ivr_originate.c:2971 makes every leg's callee
    "Outbound Call" <switch_sanitize_number(its dial string)>, and switch_channel_flip_cid
    (switch_channel.c:3236) swaps it in on answer. Real 1.10.12, conference_add through the pstn
    gateway and conference_start's loopback/bridge_ai_leg/lab leg:
    3;sofia/lab/+15557654321;<uuid>;Outbound Call;+15557654321;hear|speak;0;0;100
    1;loopback/bridge_ai_leg-a;<uuid>;Outbound Call;lab;hear|speak;0;0;100
    and the AI leg's add-member: Caller-Caller-ID-Name: Outbound Call, -Number: lab,
    Caller-Callee-ID-Name: ai_agent, -Number: 0000000000, variable_pre_transfer_caller_id_name:
    ai_agent. (The simulator used to list them as "+15557654321;+15557654321" and
    "bridge_ai_leg;bridge_ai_leg".)"""
    ai = await esl.api(
        "originate {origination_caller_id_name=ai_agent}loopback/bridge_ai_leg/lab &conference(lab@default)"
    )
    number = await esl.api("originate sofia/gateway/pstn/+15557654321 &conference(lab@default)")
    await esl.wait_for(lambda: len([e for e in esl.events if e.get("Action") == "add-member"]) == 2)
    listed = {
        line.split(";")[2]: line.split(";") for line in (await esl.api("conference lab list")).splitlines()
    }
    ai_uuid, number_uuid = ai.removeprefix("+OK ").strip(), number.removeprefix("+OK ").strip()
    assert listed[ai_uuid][1] == "loopback/bridge_ai_leg-a"
    assert listed[ai_uuid][3:5] == ["Outbound Call", "lab"]
    assert listed[number_uuid][3:5] == ["Outbound Call", "+15557654321"]
    joined = next(e for e in esl.events if e.get("Action") == "add-member" and e.unique_id == number_uuid)
    assert (joined.get("Caller-Caller-ID-Name"), joined.get("Caller-Caller-ID-Number")) == (
        "Outbound Call",
        "+15557654321",
    )
    # the caller id it was given is the callee now, and kept as pre_transfer_caller_id_name
    assert joined.get("Caller-Callee-ID-Number") == "0000000000"
    ai_joined = next(e for e in esl.events if e.get("Action") == "add-member" and e.unique_id == ai_uuid)
    assert ai_joined.get("Caller-Callee-ID-Name") == "ai_agent"
    assert ai_joined.var("pre_transfer_caller_id_name") == "ai_agent"


def test_the_simulated_profiles_have_the_rate_of_freeswitch_conf():
    for profile in ET.parse(CONF_XML).getroot().iter("profile"):
        params = {p.get("name"): p.get("value") for p in profile.iter("param")}
        assert PROFILES[profile.get("name")]["rate"] == params["rate"]


# ---------------------------------------------------------------- show channels as json


async def test_show_channels_as_json_empty_and_not(sim, esl):
    # mod_commands.c show_function: "{\"row_count\": 0}\n" / cJSON_PrintUnformatted, no newline
    assert await esl.api("show channels as json") == '{"row_count": 0}\n'
    await sim.place_inbound_call("+15550001", "+15550002")
    text = await esl.api("show channels as json")
    assert text.startswith('{"row_count":1,"rows":[{"uuid":"') and text.endswith("}]}")
    assert json.loads(text)["row_count"] == 1


# ---------------------------------------------------------------- uuid_answer


async def test_uuid_answer_and_pre_answer_of_a_missing_uuid_answer_error(sim, esl):
    # mod_commands.c uuid_answer_function / uuid_pre_answer_function: "-ERROR\n"
    assert await esl.api(f"uuid_answer {NOWHERE}") == "-ERROR\n"
    assert await esl.api(f"uuid_pre_answer {NOWHERE}") == "-ERROR\n"
    assert await esl.api("uuid_answer") == "-ERROR\n"


# ---------------------------------------------------------------- mod_audio_fork::connect_failed


async def test_connect_failed_body_is_lws_reason(sim, esl):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    uuid = await call(sim, esl)
    assert await esl.api(start_cmd(uuid, f"ws://127.0.0.1:{dead}/x", None)) == "+OK Success\n"
    event = await esl.wait_event(named("mod_audio_fork::connect_failed"))
    # lws_glue.cpp: json << "{\"reason\":\"" << message << "\"}"
    assert event.body == '{"reason":"Unable to connect"}'


@pytest.mark.parametrize(
    ("status", "reason"), [(401, "HS: ws upgrade unauthorized"), (404, "HS: ws upgrade response not 101")]
)
async def test_connect_failed_on_a_refused_upgrade_has_the_lws_handshake_text(sim, esl, status, reason):
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=status)

    app = web.Application()
    app.router.add_get("/ws", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        uuid = await call(sim, esl)
        assert await esl.api(start_cmd(uuid, f"ws://127.0.0.1:{port}/ws", None)) == "+OK Success\n"
        event = await esl.wait_event(named("mod_audio_fork::connect_failed"))
        assert event.body == json.dumps({"reason": reason}, separators=(",", ":"))
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- playback events


async def answered(sim: SwitchSimulator, esl: RawEsl) -> str:
    uuid = await sim.place_inbound_call("+15550001", "+15559999")
    assert await esl.api(f"uuid_answer {uuid}") == "+OK\n"
    return uuid


async def test_playback_events_name_the_path_as_given_with_its_variables(sim, esl):
    """Seen on the real switch (tests/freeswitch/test_calls.py, play_audio): `uuid_broadcast <uuid>
    playback::{playback_id=pb_01M8T6DWTNTJWEACX8XNPPVXHN}http_cache://http://127.0.0.1:45695/prompt.wav
    aleg` fired PLAYBACK_START and PLAYBACK_STOP with
        Playback-File-Path: {playback_id=pb_01M8T6DWTNTJWEACX8XNPPVXHN}http_cache://http://127.0.0.1:45695/prompt.wav
        playback_id: pb_01M8T6DWTNTJWEACX8XNPPVXHN
    and no Playback-File-Type (switch_ivr_play_say.c:1646-1656: the type only for a path starting
    local_stream: or tone_stream:, the path and fh->params as they are)."""
    uuid = await answered(sim, esl)
    given = "{playback_id=pb_01M8T6DWTNTJWEACX8XNPPVXHN}http_cache://http://127.0.0.1:45695/prompt.wav"
    assert await esl.api(f"uuid_broadcast {uuid} playback::{given} aleg") == "+OK Message sent\n"
    stop = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_STOP")
    start = next(e for e in esl.of(uuid) if e.name == "PLAYBACK_START")
    for event in (start, stop):
        assert event.get("Playback-File-Path") == given
        assert event.get("playback_id") == "pb_01M8T6DWTNTJWEACX8XNPPVXHN"
        assert "Playback-File-Type" not in event.headers
    assert stop.get("Playback-Status") == "done"


async def test_playback_of_a_tone_stream_has_its_file_type(sim, esl):
    """esl-captures/08_uuid_transfer.txt: Playback-File-Type: tone_stream before the path."""
    uuid = await answered(sim, esl)
    tone = "tone_stream://%(100,0,440)"
    assert await esl.api(f"uuid_broadcast {uuid} playback::{tone} aleg") == "+OK Message sent\n"
    start = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_START")
    assert start.get("Playback-File-Type") == "tone_stream"
    assert start.get("Playback-File-Path") == tone
    names = list(start.headers)
    assert names.index("Playback-File-Type") == names.index("Playback-File-Path") - 1


async def test_a_queue_members_music_is_a_local_stream_playback(sim, esl):
    """Seen on the real switch (tests/freeswitch/test_calls.py, transfer to support@default): the
    member's music is a PLAYBACK_START with Playback-File-Type: local_stream and
    Playback-File-Path: local_stream://moh (mod_callcenter plays it with switch_ivr_play_file)."""
    uuid = await answered(sim, esl)
    await esl.api(f"uuid_transfer {uuid} 'callcenter:support@default' inline")
    start = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_START")
    assert start.get("Playback-File-Type") == "local_stream"
    assert start.get("Playback-File-Path") == "local_stream://moh"
    await sim.hangup(uuid)
    stop = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_STOP")
    assert stop.get("Playback-File-Type") == "local_stream"
