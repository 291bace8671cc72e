"""Call control on the simulator: what a voice-AI developer sees in sandbox mode."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import RawEsl, named, running_sim

PSTN = "sofia/gateway/pstn/"


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    async with running_sim(answer_delay_s=0.02, playback_duration_s=0.05) as switch:
        yield switch


async def answered_call(sim: SwitchSimulator, esl: RawEsl, caller: str = "+15550001") -> str:
    uuid = await sim.place_inbound_call(caller, "+15559999")
    assert await esl.api(f"uuid_answer {uuid}") == "+OK\n"
    await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "CHANNEL_ANSWER")
    return uuid


def actions(esl: RawEsl, subclass: str, field: str = "Action") -> list[str]:
    return [e.get(field) for e in esl.events if e.key == subclass]


# ---------------------------------------------------------------- inbound, answer, hangup


async def test_inbound_call_is_created_gets_its_variables_and_parks_ringing(sim, esl):
    uuid = await sim.place_inbound_call("+14155550100", "+14155550199", {"bridge_tenant_id": "acme"})
    await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "CHANNEL_PARK")
    names = esl.names(uuid)
    assert names.index("CHANNEL_CREATE") < names.index("CHANNEL_PARK")
    park = next(e for e in esl.of(uuid) if e.name == "CHANNEL_PARK")
    assert park.get("Answer-State") == "ringing" and park.get("Channel-Call-State") == "RINGING"
    assert park.var("bridge_tenant_id") == "acme"
    assert park.var("park_after_bridge") == "true" and park.var("hangup_after_bridge") == "false"
    assert park.get("Caller-Caller-ID-Number") == "+14155550100"
    assert park.get("Caller-Destination-Number") == "+14155550199"
    create = next(e for e in esl.of(uuid) if e.name == "CHANNEL_CREATE")
    assert create.var("bridge_tenant_id") == ""  # set by the dialplan, after CHANNEL_CREATE
    snap = sim.snapshot(uuid)
    assert snap["answered"] is False and snap["state"] == "CS_EXECUTE" and snap["answer_state"] == "ringing"
    assert snap["variables"]["bridge_tenant_id"] == "acme"


async def test_uuid_answer_answers_and_is_logged_on_the_channel(sim, esl):
    uuid = await answered_call(sim, esl)
    answer = next(e for e in esl.of(uuid) if e.name == "CHANNEL_ANSWER")
    assert answer.get("Answer-State") == "answered"
    assert (
        esl.names(uuid)[-1] == "CHANNEL_CALLSTATE" and esl.of(uuid)[-1].get("Channel-Call-State") == "ACTIVE"
    )
    assert sim.snapshot(uuid)["answered"] is True
    assert sim.snapshot(uuid)["commands"] == [f"uuid_answer {uuid}"]


async def test_far_end_hangup_reports_cause_and_cdr_variables(sim, esl):
    uuid = await answered_call(sim, esl)
    await sim.hangup(uuid, "USER_BUSY")
    complete = await esl.wait_event(named("CHANNEL_HANGUP_COMPLETE"))
    assert complete.get("Hangup-Cause") == "USER_BUSY"
    assert complete.var("hangup_cause") == "USER_BUSY" and complete.var("hangup_cause_q850") == "17"
    assert complete.var("sip_hangup_disposition") == "recv_bye"
    assert complete.var("duration").isdigit() and complete.var("billsec").isdigit()
    await esl.wait_event(named("CHANNEL_DESTROY"))
    snap = sim.snapshot(uuid)
    assert snap["hangup_cause"] == "USER_BUSY" and snap["state"] == "CS_DESTROY"
    assert sim.channel(uuid) is not None
    assert await esl.api(f"uuid_exists {uuid}") == "false"


@pytest.mark.parametrize(
    ("given", "cause"), [("NOT_A_CAUSE", "NORMAL_CLEARING"), ("17", "USER_BUSY"), ("", "NORMAL_CLEARING")]
)
async def test_uuid_kill_cause_names_numbers_and_unknown_names(sim, esl, given, cause):
    uuid = await sim.place_inbound_call("+15550001", "+15559999")
    assert await esl.api(f"uuid_kill {uuid} {given}".strip()) == "+OK\n"
    hangup = await esl.wait_event(named("CHANNEL_HANGUP"))
    assert hangup.get("Hangup-Cause") == cause
    assert await esl.api(f"uuid_kill {uuid}") in ("-ERR No such channel!\n", "+OK\n")


# ---------------------------------------------------------------- originate


async def test_originate_answers_rings_first_and_parks(sim, esl):
    leg = "7d3f6f6a-1111-4222-8333-944455556666"
    variables = f"{{origination_uuid={leg},origination_caller_id_number=+15550100}}"
    cmd = f"originate {variables}{PSTN}+15551234567 &park()"
    await esl.bgapi(cmd)
    done = await esl.wait_event(named("BACKGROUND_JOB"))
    assert done.body == f"+OK {leg}\n"
    await esl.wait_event(lambda e: e.unique_id == leg and e.name == "CHANNEL_PARK")
    names = esl.names(leg)
    order = [
        "CHANNEL_OUTGOING",
        "CHANNEL_CREATE",
        "CHANNEL_PROGRESS",
        "CHANNEL_ANSWER",
        "CALL_UPDATE",
        "CHANNEL_PARK",
    ]
    assert [n for n in names if n in order] == order
    create = next(e for e in esl.of(leg) if e.name == "CHANNEL_CREATE")
    assert create.get("Call-Direction") == "outbound"
    assert create.get("Caller-Caller-ID-Number") == "+15550100"
    assert create.var("origination_uuid") == leg
    snap = sim.snapshot(leg)
    assert snap["answered"] is True and any(c.startswith("originate ") for c in snap["commands"])


@pytest.mark.parametrize("cause", ["USER_BUSY", "CALL_REJECTED", "NO_ROUTE_DESTINATION"])
async def test_originate_outcome_failure_is_an_err_job_and_a_hangup_with_the_cause(sim, esl, cause):
    sim.set_originate_outcome(f"{PSTN}+1555", cause, answer_delay_s=0.01)
    await esl.bgapi(f"originate {PSTN}+15551234567 &park()")
    done = await esl.wait_event(named("BACKGROUND_JOB"))
    assert done.body == f"-ERR {cause}\n"
    complete = await esl.wait_event(named("CHANNEL_HANGUP_COMPLETE"))
    assert complete.get("Hangup-Cause") == cause
    assert "CHANNEL_ANSWER" not in esl.names(complete.unique_id)


async def test_originate_times_out_with_no_answer(sim, esl):
    sim.set_originate_outcome(PSTN, None, answer_delay_s=5)
    reply = await esl.api(f"originate {{originate_timeout=1}}{PSTN}+15551234567 &park()", timeout=5)
    assert reply == "-ERR NO_ANSWER\n"


async def test_originate_error_endpoint_and_usage(sim, esl):
    assert await esl.api("originate error/user_busy &park()") == "-ERR USER_BUSY\n"
    assert (await esl.api("originate")).startswith("-USAGE: <call url>")


async def test_originate_to_an_extension_runs_the_dialplan(sim, esl):
    reply = await esl.api(f"originate {PSTN}+15551234567 9196 XML lab")
    leg = reply.removeprefix("+OK ").strip()
    execute = await esl.wait_event(lambda e: e.unique_id == leg and e.get("Application") == "echo")
    assert execute.get("Caller-Destination-Number") == "9196"


# ---------------------------------------------------------------- transfer


async def test_transfer_inline_bridge_then_the_caller_parks_when_the_agent_hangs_up(sim, esl):
    caller = await answered_call(sim, esl)
    bridge_to = f"{{origination_caller_id_number=+15550100}}{PSTN}+15557654321"
    dest = f"'m:^:set:continue_on_fail=true^bridge:{bridge_to}^park'"
    assert await esl.api(f"uuid_transfer {caller} {dest} inline") == "+OK\n"
    bridge = await esl.wait_event(named("CHANNEL_BRIDGE"))
    agent = bridge.get("Bridge-B-Unique-ID")
    assert bridge.unique_id == caller and bridge.get("Bridge-A-Unique-ID") == caller
    assert bridge.get("Other-Type") == "originatee" and bridge.get("Other-Leg-Unique-ID") == agent
    agent_create = next(e for e in esl.of(agent) if e.name == "CHANNEL_CREATE")
    assert agent_create.get("Other-Leg-Unique-ID") == caller
    assert sim.snapshot(caller)["bridged_to"] == agent and sim.snapshot(agent)["bridged_to"] == caller

    await sim.hangup(agent)
    await esl.wait_event(lambda e: e.unique_id == caller and e.name == "CHANNEL_UNBRIDGE")
    await esl.wait_event(lambda e: e.unique_id == caller and e.name == "CHANNEL_PARK")
    snap = sim.snapshot(caller)
    assert snap["hangup_cause"] is None and snap["bridged_to"] is None
    assert snap["variables"]["last_bridge_hangup_cause"] == "NORMAL_CLEARING"


async def test_transfer_bridge_failure_with_continue_on_fail_parks_the_caller(sim, esl):
    sim.set_originate_outcome(f"{PSTN}+1555", "USER_BUSY")
    caller = await answered_call(sim, esl)
    dest = f"'m:^:set:continue_on_fail=true^bridge:{PSTN}+15557654321^park'"
    await esl.api(f"uuid_transfer {caller} {dest} inline")
    done = await esl.wait_event(lambda e: e.unique_id == caller and e.get("Application") == "bridge"
                                and e.name == "CHANNEL_EXECUTE_COMPLETE")  # fmt: skip
    assert done.var("originate_disposition") == "USER_BUSY" and done.var("DIALSTATUS") == "BUSY"
    await esl.wait_event(lambda e: e.unique_id == caller and e.name == "CHANNEL_PARK")
    assert sim.snapshot(caller)["hangup_cause"] is None


async def test_transfer_bridge_failure_without_continue_on_fail_hangs_up_with_the_cause(sim, esl):
    sim.set_originate_outcome(PSTN, "GATEWAY_DOWN", answer_delay_s=0)
    caller = await answered_call(sim, esl)
    await esl.api(f"uuid_transfer {caller} 'bridge:{PSTN}+15557654321' inline")
    hangup = await esl.wait_event(lambda e: e.unique_id == caller and e.name == "CHANNEL_HANGUP_COMPLETE")
    assert hangup.get("Hangup-Cause") == "GATEWAY_DOWN"


async def test_transfer_to_an_unknown_extension_is_ok_then_no_route(sim, esl):
    caller = await answered_call(sim, esl)
    assert await esl.api(f"uuid_transfer {caller} nowhere XML lab") == "+OK\n"
    hangup = await esl.wait_event(lambda e: e.unique_id == caller and e.name == "CHANNEL_HANGUP")
    assert hangup.get("Hangup-Cause") == "NO_ROUTE_DESTINATION"


async def test_transferring_one_leg_out_of_a_bridge_hangs_up_the_other_with_blind_transfer(sim, esl):
    caller = await answered_call(sim, esl)
    await esl.api(f"uuid_transfer {caller} 'bridge:{PSTN}+15557654321' inline")
    bridge = await esl.wait_event(named("CHANNEL_BRIDGE"))
    agent = bridge.get("Bridge-B-Unique-ID")
    await esl.api(f"uuid_transfer {caller} park inline")
    hangup = await esl.wait_event(lambda e: e.unique_id == agent and e.name == "CHANNEL_HANGUP")
    assert hangup.get("Hangup-Cause") == "BLIND_TRANSFER"
    await esl.wait_event(
        lambda e: (
            e.unique_id == caller and e.name == "CHANNEL_PARK" and "CHANNEL_UNBRIDGE" in esl.names(caller)
        )
    )


async def test_uuid_bridge_two_parked_calls_and_the_survivor_parks(sim, esl):
    a = await answered_call(sim, esl, "+15550001")
    b = await answered_call(sim, esl, "+15550002")
    assert await esl.api(f"uuid_bridge {a} {b}") == f"+OK {b}\n"
    bridge = await esl.wait_event(named("CHANNEL_BRIDGE"))
    assert (bridge.get("Bridge-A-Unique-ID"), bridge.get("Bridge-B-Unique-ID")) == (a, b)
    await esl.api(f"uuid_kill {b}")
    await esl.wait_event(lambda e: e.unique_id == a and e.name == "CHANNEL_UNBRIDGE")
    await esl.wait_event(
        lambda e: e.unique_id == a and e.name == "CHANNEL_PARK" and e.get("Channel-State") == "CS_PARK"
    )
    assert sim.snapshot(a)["hangup_cause"] is None


async def test_uuid_bridge_refuses_when_neither_leg_is_answered(sim, esl):
    a = await sim.place_inbound_call("+15550001", "+15559999")
    b = await sim.place_inbound_call("+15550002", "+15559999")
    assert await esl.api(f"uuid_bridge {a} {b}") == "-ERR Invalid uuid\n"
    assert await esl.api(f"uuid_bridge {a} 00000000-0000-0000-0000-000000000000") == "-ERR Invalid uuid\n"


async def test_hold_plays_hold_music_to_the_bridged_partner(sim, esl):
    a = await answered_call(sim, esl, "+15550001")
    b = await answered_call(sim, esl, "+15550002")
    await esl.api(f"uuid_bridge {a} {b}")
    await esl.wait_event(named("CHANNEL_BRIDGE"))
    assert await esl.api(f"uuid_setvar {a} hold_music http_cache://http://moh.example/wait.wav") == "+OK\n"
    assert await esl.api(f"uuid_hold {a}") == "+OK Success\n"
    start = await esl.wait_event(lambda e: e.unique_id == b and e.name == "PLAYBACK_START")
    assert start.get("Playback-File-Path") == "http_cache://http://moh.example/wait.wav"
    assert await esl.api(f"uuid_hold {a}") == "-ERR Operation Failed\n"
    assert await esl.api(f"uuid_hold toggle {a}") == "+OK Success\n"
    stop = await esl.wait_event(lambda e: e.unique_id == b and e.name == "PLAYBACK_STOP")
    assert stop.get("Playback-Status") == "break"
    assert await esl.api(f"uuid_hold off {a}") == "-ERR Operation Failed\n"
    assert sim.snapshot(a)["held"] is False


# ---------------------------------------------------------------- media


async def test_broadcast_of_an_http_file_plays_and_carries_its_variables(sim, esl):
    uuid = await answered_call(sim, esl)
    path = "playback::{playback_id=p-1}http_cache://http://tts.example/hi.wav"
    assert await esl.api(f"uuid_broadcast {uuid} {path} aleg") == "+OK Message sent\n"
    stop = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_STOP")
    start = next(e for e in esl.of(uuid) if e.name == "PLAYBACK_START")
    for ev in (start, stop):
        # the path as given, {var=value} prefix included (the real 1.10.12: test_sim_real_texts.py)
        assert ev.get("Playback-File-Path") == "{playback_id=p-1}http_cache://http://tts.example/hi.wav"
        assert ev.get("playback_id") == "p-1"
    assert stop.get("Playback-Status") == "done"
    complete = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "CHANNEL_EXECUTE_COMPLETE"
                                    and e.get("Application") == "playback")  # fmt: skip
    assert complete.get("Application-Response") == "FILE PLAYED"


async def test_broadcast_of_speech_plays_for_its_text_length_with_playback_events(sim, esl):
    """mod_ssml's tts:// through uuid_broadcast in the delimited form the bridge sends (v1.1 TTS):
    the same PLAYBACK_START/STOP as a file, lasting tts_ms_per_char per character."""
    uuid = await answered_call(sim, esl)
    text = "Hello, caller: your order ships today!"
    path = f"playback::{{playback_id=pb-9}}tts://flite|kal|{text}"
    assert await esl.api(f"uuid_broadcast ^^`{uuid}`{path}`aleg") == "+OK Message sent\n"
    start = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_START")
    stop = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_STOP")
    for ev in (start, stop):
        assert ev.get("Playback-File-Path") == f"{{playback_id=pb-9}}tts://flite|kal|{text}"
        assert ev.get("playback_id") == "pb-9"
    assert stop.get("Playback-Status") == "done"
    played_ms = int(stop.get("variable_playback_ms") or sim.snapshot(uuid)["variables"]["playback_ms"])
    assert played_ms >= len(text) * 75 - 20


async def test_the_speak_app_lasts_as_long_as_its_text_and_fires_no_playback_events(sim, esl):
    """mod_dptools' speak (switch_ivr_speak_text) opens no file: no PLAYBACK_START/STOP, unlike
    playback of tts://, which is why the bridge uses the latter."""
    uuid = await answered_call(sim, esl)
    text = "Hello there, caller."
    sent = time.monotonic()
    assert await esl.api(f"uuid_broadcast ^^`{uuid}`speak::flite|kal|{text}`aleg") == "+OK Message sent\n"
    await esl.wait_event(
        lambda e: e.unique_id == uuid
        and e.name == "CHANNEL_EXECUTE_COMPLETE"
        and e.get("Application") == "speak"
    )
    assert time.monotonic() - sent >= len(text) * 0.075 - 0.05
    assert not [e for e in esl.of(uuid) if e.name.startswith("PLAYBACK_")]


async def test_speech_with_an_unknown_module_or_flite_voice_is_not_found(sim, esl):
    uuid = await answered_call(sim, esl)
    for spec in ("festival|kal|hi", "flite|nobody|hi", "flite|kal"):
        await esl.api(f"uuid_broadcast ^^`{uuid}`playback::tts://{spec}`aleg")
        complete = await esl.wait_event(
            lambda e, spec=spec: e.unique_id == uuid
            and e.name == "CHANNEL_EXECUTE_COMPLETE"
            and spec in (e.get("Application-Data") or "")
        )
        assert complete.get("Application-Response") == "FILE NOT FOUND"
    assert not [e for e in esl.of(uuid) if e.name == "PLAYBACK_START"]


async def test_broadcast_of_a_missing_file_fails_without_playback_start(sim, esl):
    sim.set_playback_outcome("http://missing", "FILE NOT FOUND")
    uuid = await answered_call(sim, esl)
    assert await esl.api(f"uuid_broadcast {uuid} http://missing/x.wav aleg") == "+OK Message sent\n"
    complete = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "CHANNEL_EXECUTE_COMPLETE"
                                    and e.get("Application") == "playback")  # fmt: skip
    assert complete.get("Application-Response") == "FILE NOT FOUND"
    assert "PLAYBACK_START" not in esl.names(uuid)


async def test_uuid_break_stops_an_endless_playback(sim, esl):
    uuid = await answered_call(sim, esl)
    await esl.api(f"uuid_broadcast {uuid} endless_playback::local_stream://moh aleg")
    await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_START")
    assert sim.snapshot(uuid)["playing"] == "local_stream://moh"
    assert await esl.api(f"uuid_break {uuid} all") == "+OK\n"
    stop = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "PLAYBACK_STOP")
    assert stop.get("Playback-Status") == "break"
    assert sim.snapshot(uuid)["playing"] is None


async def test_record_lifecycle_and_its_errors(sim, esl):
    uuid = await answered_call(sim, esl)
    path = "/tmp/rec-1.wav"
    assert await esl.api(f"uuid_record {uuid} stop {path}") == "-ERR Cannot stop record session!\n"
    assert await esl.api(f"uuid_record {uuid} pause {path}") == "-ERR Cannot pause recording session!\n"
    assert await esl.api(f"uuid_record {uuid} start") == (
        "-USAGE: <uuid> [start|stop|mask|unmask|pause|resume] <path> [<limit>] [<recording_vars>]\n"
    )
    assert await esl.api(f"uuid_record {uuid} start {path}") == "+OK Success\n"
    assert await esl.api(f"uuid_record {uuid} start {path}") == "-ERR Cannot record session!\n"
    await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "RECORD_START")
    esl.clear()
    assert await esl.api(f"uuid_record {uuid} pause {path}") == "+OK Success\n"
    assert sim.snapshot(uuid)["recording"] == {
        "active": True, "paused": True, "masked": False, "path": path, "paths": [path],
    }  # fmt: skip
    assert await esl.api(f"uuid_record {uuid} resume {path}") == "+OK Success\n"
    await esl.settle(0.05)
    assert esl.names(uuid) == []  # pause and resume fire no events
    await esl.api(f"uuid_kill {uuid}")
    stop = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "RECORD_STOP")
    assert stop.get("Record-File-Path") == path
    names = esl.names(uuid)
    assert names.index("RECORD_STOP") < names.index("MEDIA_BUG_STOP") < names.index("CHANNEL_HANGUP_COMPLETE")


async def test_uuid_audio_mute_state_usage_and_no_event_for_unmute(sim, esl):
    uuid = await answered_call(sim, esl)
    assert (await esl.api(f"uuid_audio {uuid} start read mute")).startswith("-USAGE:")
    assert await esl.api(f"uuid_audio {uuid} start read mute 1") == "+OK\n"
    assert sim.snapshot(uuid)["muted"] == {"read": True, "write": False}
    esl.clear()
    assert await esl.api(f"uuid_audio {uuid} start read mute 0") == "+OK\n"
    await esl.settle(0.05)
    assert esl.names(uuid) == [] and sim.snapshot(uuid)["muted"]["read"] is False
    assert await esl.api(f"uuid_audio {uuid} stop") == "+OK\n"
    assert esl.names(uuid) == ["MEDIA_BUG_STOP"]


async def test_displace_start_and_stop(sim, esl):
    uuid = await answered_call(sim, esl)
    assert await esl.api(f"uuid_displace {uuid} start /tmp/moh.wav 0 lm") == "+OK Success\n"  # music loops
    bug = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "MEDIA_BUG_START")
    assert bug.get("Media-Bug-Function") == "displace" and bug.get("Media-Bug-Target") == "/tmp/moh.wav"
    assert await esl.api(f"uuid_displace {uuid} stop /tmp/moh.wav") == "+OK Success\n"
    assert await esl.api(f"uuid_displace {uuid} stop /tmp/moh.wav") == "-ERR Cannot stop displace session!\n"


async def test_setvar_getvar_with_escaped_spaces(sim, esl):
    uuid = await answered_call(sim, esl)
    assert await esl.api(f"uuid_setvar {uuid} greeting hello\\sthere") == "+OK\n"
    assert await esl.api(f"uuid_getvar {uuid} greeting") == "hello there"
    assert await esl.api(f"uuid_getvar {uuid} nothing") == "_undef_"
    assert await esl.api(f"uuid_setvar {uuid} greeting") == "+OK\n"
    assert await esl.api(f"uuid_getvar {uuid} greeting") == "_undef_"


async def test_recv_dtmf_fires_dtmf_events_and_says_no_reply(sim, esl):
    uuid = await answered_call(sim, esl)
    assert await esl.api(f"uuid_recv_dtmf {uuid} 12") == "-ERR no reply\n"
    await esl.wait_for(lambda: [e.get("DTMF-Digit") for e in esl.of(uuid) if e.name == "DTMF"] == ["1", "2"])
    assert (
        await esl.api("uuid_recv_dtmf 00000000-0000-0000-0000-000000000000 1")
        == "-ERR Cannot locate session!\n"
    )


# ---------------------------------------------------------------- conference


async def test_conference_membership_events_and_member_controls(sim, esl):
    a = await answered_call(sim, esl, "+15550001")
    b = await answered_call(sim, esl, "+15550002")
    await esl.api(f"uuid_transfer {a} 'conference:sales@default+flags{{moderator}}' inline")
    first = await esl.wait_event(named("conference::maintenance", Action="add-member"))
    await esl.api(f"uuid_transfer {b} 'm:^:conference:sales@default+flags{{mute}}^park' inline")
    second = await esl.wait_event(lambda e: e.get("Action") == "add-member" and e.unique_id == b)
    assert first.get("Member-Type") == "moderator" and first.get("Conference-Size") == "1"
    assert second.get("Speak") == "false" and second.get("Conference-Size") == "2"
    ids = int(first.get("Member-ID")), int(second.get("Member-ID"))
    assert ids[1] == ids[0] + 1
    assert actions(esl, "conference::maintenance")[:2] == ["conference-create", "add-member"]
    assert sim.snapshot(b)["conference"] == "sales" and sim.snapshot(b)["member_id"] == ids[1]

    listed = await esl.api("conference sales list")
    assert listed.splitlines()[0].startswith(f"{ids[1]};sofia/external/+15550002@127.0.0.1;{b};")
    assert listed.splitlines()[1].endswith(";hear|speak|talking|floor|moderator;0;0;100")
    assert await esl.api(f"conference sales unmute {ids[1]}") == f"+OK unmute {ids[1]}\n"
    assert await esl.api(f"conference sales deaf uuid={b}") == f"+OK deaf {ids[1]}\n"
    assert await esl.api("conference sales mute 999") == "-ERR Non-Existant ID 999\n"
    assert await esl.api("conference nope list") == "-ERR Conference nope not found\n"
    members = json.loads(await esl.api("conference sales json_list"))[0]["members"]
    assert {m["uuid"]: m["flags"]["can_hear"] for m in members} == {a: True, b: False}

    assert await esl.api(f"conference sales kick {ids[1]}") == f"+OK kicked {ids[1]}\n"
    await esl.wait_event(
        lambda e: (
            e.unique_id == b
            and e.name == "CHANNEL_PARK"
            and "del-member" in actions(esl, "conference::maintenance")
        )
    )
    assert sim.snapshot(b)["conference"] is None and sim.snapshot(b)["hangup_cause"] is None
    assert await esl.api(f"conference sales hup {ids[0]}") == f"+OK hup {ids[0]}\n"
    await esl.wait_event(named("conference::maintenance", Action="conference-destroy"))
    kinds = actions(esl, "conference::maintenance")
    assert kinds.index("unmute-member") < kinds.index("deaf-member") < kinds.index("kick-member")
    assert kinds.index("kick-member") < kinds.index("del-member") < kinds.index("hup-member")
    await esl.wait_event(lambda e: e.unique_id == a and e.name == "CHANNEL_HANGUP_COMPLETE")


async def test_conference_bgdial_and_play(sim, esl):
    a = await answered_call(sim, esl)
    await esl.api(f"uuid_transfer {a} conf-demo XML lab")
    await esl.wait_event(named("conference::maintenance", Action="add-member"))
    reply = await esl.api(f"conference demo bgdial {PSTN}+15551112222 +15550100 Support")
    job = reply.removeprefix("+OK Job-UUID: ").strip()
    result = await esl.wait_event(named("conference::maintenance", Action="bgdial-result"))
    assert result.get("Job-UUID") == job and result.get("Result") == "SUCCESS"
    peer = result.get("Peer-UUID")
    await esl.wait_event(lambda e: e.unique_id == peer and e.get("Action") == "add-member")
    assert await esl.api("conference demo play /tmp/beep.wav") == "+OK (play) Playing file /tmp/beep.wav\n"
    await esl.wait_event(named("conference::maintenance", Action="play-file-done"))
    sim.set_originate_outcome(f"{PSTN}+1666", "USER_BUSY", answer_delay_s=0)
    assert (
        await esl.api(f"conference demo dial {PSTN}+16660000 1 x")
        == "+OK Call Requested: result: [USER_BUSY]\n"
    )


# ---------------------------------------------------------------- eavesdrop and callcenter


async def test_eavesdrop_modes_switch_by_dtmf_and_star_ends_it(sim, esl):
    target = await answered_call(sim, esl)
    reply = await esl.api(
        f"originate {{origination_caller_id_name=Supervisor}}user/1000 &eavesdrop({target})"
    )
    spy = reply.removeprefix("+OK ").strip()
    bug = await esl.wait_event(lambda e: e.unique_id == target and e.name == "MEDIA_BUG_START")
    assert bug.get("Media-Bug-Function") == "eavesdrop" and bug.get("Media-Bug-Target") == target
    assert sim.snapshot(spy)["eavesdrop"] == {"target": target, "mode": "listen"}
    await esl.api(f"uuid_recv_dtmf {spy} 2")
    await esl.wait_for(lambda: (sim.snapshot(spy)["eavesdrop"] or {}).get("mode") == "whisper_target")
    await esl.api(f"uuid_recv_dtmf {spy} 3")
    await esl.wait_for(lambda: (sim.snapshot(spy)["eavesdrop"] or {}).get("mode") == "three_way")
    await esl.api(f"uuid_recv_dtmf {spy} *")
    await esl.wait_event(lambda e: e.unique_id == target and e.name == "MEDIA_BUG_STOP")
    # &eavesdrop was the spy leg's only application: it hangs up when eavesdrop ends
    await esl.wait_event(lambda e: e.unique_id == spy and e.name == "CHANNEL_HANGUP_COMPLETE")


async def test_transfer_to_a_callcenter_queue_then_break_out(sim, esl):
    caller = await answered_call(sim, esl)
    await esl.api(f"uuid_transfer {caller} 'callcenter:support@default' inline")
    start = await esl.wait_event(named("callcenter::info", CC_Action="member-queue-start"))
    assert start.get("CC-Queue") == "support@default" and start.get("CC-Member-Session-UUID") == caller
    await esl.api(f"uuid_transfer {caller} park inline")
    end = await esl.wait_event(named("callcenter::info", CC_Action="member-queue-end"))
    assert end.get("CC-Cause") == "Cancel" and end.get("CC-Cancel-Reason") == "BREAK_OUT"
    await esl.wait_event(lambda e: e.unique_id == caller and e.name == "CHANNEL_PARK")


async def test_callcenter_offers_the_call_to_an_agent_the_scenario_added(sim, esl):
    sim.add_callcenter_agent("support@default", "{origination_caller_id_name=Agent}user/1001", name="alice")
    caller = await answered_call(sim, esl)
    await esl.api(f"uuid_transfer {caller} queue-support XML lab")
    started = await esl.wait_event(named("callcenter::info", CC_Action="bridge-agent-start"))
    agent_leg = started.get("CC-Agent-UUID")
    assert started.get("CC-Agent") == "alice"
    assert sim.snapshot(caller)["bridged_to"] == agent_leg
    await sim.hangup(agent_leg)
    await esl.wait_event(named("callcenter::info", CC_Action="bridge-agent-end"))
    end = await esl.wait_event(named("callcenter::info", CC_Action="member-queue-end"))
    assert end.get("CC-Cause") == "Terminated"
    offered = actions(esl, "callcenter::info", "CC-Action")
    assert offered[:3] == ["member-queue-start", "agent-offering", "bridge-agent-start"]


async def test_missing_queue_ends_the_inline_dialplan_and_hangs_up(sim, esl):
    sim.set_callcenter_queues({"support@default"})
    caller = await answered_call(sim, esl)
    await esl.api(f"uuid_transfer {caller} 'callcenter:nope@default' inline")
    await esl.wait_event(lambda e: e.unique_id == caller and e.name == "CHANNEL_HANGUP_COMPLETE")
    assert "callcenter::info" not in esl.names(caller)


async def test_eavesdrop_inline_transfer_of_an_existing_supervisor_call(sim, esl):
    target = await answered_call(sim, esl, "+15550001")
    supervisor = await answered_call(sim, esl, "+15550002")
    assert await esl.api(f"uuid_transfer {supervisor} 'eavesdrop:{target}' inline") == "+OK\n"
    await esl.wait_event(lambda e: e.unique_id == target and e.name == "MEDIA_BUG_START")
    # leaving: park the supervisor again; the bug on the target goes away
    await esl.api(f"uuid_transfer {supervisor} park inline")
    await esl.wait_event(lambda e: e.unique_id == target and e.name == "MEDIA_BUG_STOP")
    await esl.wait_event(lambda e: e.unique_id == supervisor and e.name == "CHANNEL_PARK"
                         and "MEDIA_BUG_STOP" in esl.names(target))  # fmt: skip
    assert sim.snapshot(supervisor)["eavesdrop"] is None


async def test_transfer_both_legs_of_a_bridge_into_a_conference(sim, esl):
    caller = await answered_call(sim, esl)
    await esl.api(f"uuid_transfer {caller} 'bridge:{PSTN}+15557654321' inline")
    agent = (await esl.wait_event(named("CHANNEL_BRIDGE"))).get("Bridge-B-Unique-ID")
    assert await esl.api(f"uuid_transfer {caller} -both 'conference:both@default' inline") == "+OK\n"
    await esl.wait_for(
        lambda: {e.unique_id for e in esl.events if e.get("Action") == "add-member"} == {caller, agent}
    )
    assert sim.snapshot(caller)["conference"] == sim.snapshot(agent)["conference"] == "both"
    assert sim.snapshot(agent)["hangup_cause"] is None
    json.dumps(sim.snapshot(caller))  # the sandbox serves it as JSON


async def test_conference_hold_relate_and_three_way_barge(sim, esl):
    a = await answered_call(sim, esl, "+15550001")
    b = await answered_call(sim, esl, "+15550002")
    for leg in (a, b):
        await esl.api(f"uuid_transfer {leg} conf-coach XML lab")
    await esl.wait_for(lambda: len([e for e in esl.events if e.get("Action") == "add-member"]) == 2)
    ids = {e.unique_id: e.get("Member-ID") for e in esl.events if e.get("Action") == "add-member"}
    assert await esl.api(f"conference coach hold {ids[a]}") == f"+OK hold {ids[a]}\n"
    held = await esl.wait_event(named("conference::maintenance", Action="hold-member"))
    assert held.get("Hold") == "true" and held.unique_id == a
    assert sim.snapshot(a)["conference_member"]["hold"] is True
    assert await esl.api(f"conference coach unhold {ids[a]}") == f"+OK unhold {ids[a]}\n"
    relate = await esl.api(f"conference coach relate {ids[a]} {ids[b]} nospeak")
    assert relate == f"+OK {ids[a]}->{ids[b]} nospeak set\n"

    spy = (await esl.api(f"originate user/1000 &three_way({a})")).removeprefix("+OK ").strip()
    await esl.wait_for(
        lambda: (sim.snapshot(spy) or {}).get("eavesdrop") == {"target": a, "mode": "three_way"}
    )
    await esl.api(f"uuid_recv_dtmf {spy} 0")
    await esl.wait_for(lambda: sim.snapshot(spy)["eavesdrop"]["mode"] == "listen")


async def test_transfer_bleg_moves_the_partner_and_the_caller_parks_after_bridge(sim, esl):
    caller = await answered_call(sim, esl)
    await esl.api(f"uuid_transfer {caller} 'bridge:{PSTN}+15557654321' inline")
    agent = (await esl.wait_event(named("CHANNEL_BRIDGE"))).get("Bridge-B-Unique-ID")
    esl.clear()
    assert await esl.api(f"uuid_transfer {caller} -bleg 9196 XML lab") == "+OK\n"
    await esl.wait_event(lambda e: e.unique_id == agent and e.get("Application") == "echo")
    await esl.wait_event(lambda e: e.unique_id == caller and e.name == "CHANNEL_PARK")
    assert sim.snapshot(caller)["hangup_cause"] is None and sim.snapshot(agent)["hangup_cause"] is None
    assert sim.snapshot(caller)["bridged_to"] is None


async def test_originate_into_a_conference(sim, esl):
    reply = await esl.api(f"originate {PSTN}+15551112222 &conference(standup@default+flags{{mute}})")
    leg = reply.removeprefix("+OK ").strip()
    added = await esl.wait_event(named("conference::maintenance", Action="add-member"))
    assert (
        added.unique_id == leg and added.get("Speak") == "false" and added.get("Conference-Name") == "standup"
    )


async def test_caller_key_presses_arrive_as_rtp_dtmf_events(sim, esl):
    uuid = await answered_call(sim, esl)
    await sim.press_digits(uuid, "4#")
    await esl.wait_for(lambda: [e.get("DTMF-Digit") for e in esl.of(uuid) if e.name == "DTMF"] == ["4", "#"])
    dtmf = next(e for e in esl.of(uuid) if e.name == "DTMF")
    assert dtmf.get("DTMF-Source") == "RTP" and dtmf.get("DTMF-Duration") == "2080"
