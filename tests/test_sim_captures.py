"""Pin the switch simulator to real FreeSWITCH 1.10.12 frames (/work/shared/esl-captures).

For each capture family the same commands go to the simulator over a real TCP socket. The
reply text must be identical (uuids, member and job ids substituted) and, per target channel,
the same events must arrive in the same order with the same key header values, each carrying
at least the capture's core header names. Events that exist only because the capture's other
leg was a second FreeSWITCH (its A-leg, the far-end legs it created, their DTMF/re-INVITEs)
are not targets; conference talk toggles caused by the A-leg's 1 s on / 1 s off test tone
are ignored after the join.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.esl.protocol import Event, Frame
from bridge.sim.captures import Capture, Step, parse
from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import RawEsl

CAPTURES = Path(os.environ.get("ESL_CAPTURES_DIR", "/work/shared/esl-captures"))
pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason=f"no ESL captures at {CAPTURES}")

# The far end of the captures was another FreeSWITCH that answered at once (no 180).
CAPTURE_FAR_END = "sofia/internal/5000@127.0.0.1:5080"

KEY_HEADERS = (
    "Channel-State",
    "Channel-State-Number",
    "Channel-Call-State",
    "Original-Channel-Call-State",
    "Answer-State",
    "Call-Direction",
    "Channel-Name",
    "Hangup-Cause",
    "Event-Subclass",
    "Action",
    "Member-ID",
    "Member-Type",
    "Conference-Name",
    "Conference-Size",
    "Hear",
    "Speak",
    "Talking",
    "Floor",
    "Old-ID",
    "New-ID",
    "Media-Bug-Function",
    "Media-Bug-Target",
    "Playback-Status",
    "Playback-File-Path",
    "Record-File-Path",
    "Record-Completion-Cause",
    "Application",
    "Application-Data",
    "Application-Response",
    "Caller-Caller-ID-Number",
    "Caller-Destination-Number",
    "Job-Command",
    "Job-Command-Arg",
    "Result",
)
# Headers that depend on the call's history before the capture started (it was transferred
# from context public, bridged to a SIP A-leg): not part of the core every event must carry.
HISTORY_HEADERS = {
    "Caller-Transfer-Source",
    "Caller-RDNIS",
    "Caller-Callee-ID-Name",
    "Caller-Callee-ID-Number",
    "Caller-Caller-ID-Name",
    "Caller-Orig-Caller-ID-Name",
    "Caller-Dialplan",
}
CORE_VARIABLES = {
    "variable_uuid",
    "variable_direction",
    "variable_channel_name",
    "variable_call_uuid",
    "variable_hangup_cause",
    "variable_hangup_cause_q850",
    "variable_duration",
    "variable_billsec",
    "variable_current_application",
    "variable_playback_ms",
    "variable_record_ms",
}


# ---------------------------------------------------------------- capture files


def load(name: str) -> Capture:
    """One of the shared captures, read with the capture writer's own parser."""
    return parse((CAPTURES / name).read_bytes())


def shape(text: str) -> list[str]:
    """`status` output with every number (and its plural) abstracted away."""
    lines = [re.sub(r"\d+(\.\d+)?( [a-z]+?)s?\b", r"N\2", line) for line in text.splitlines()]
    return [re.sub(r"\d+(\.\d+)?", "N", line) for line in lines]


def reply_text(frame: Frame) -> str:
    return frame.body_text() if frame.content_type == "api/response" else frame.reply_text


# ---------------------------------------------------------------- comparison


class Mapping:
    """Capture identifiers -> simulator identifiers (uuids, member ids)."""

    def __init__(self) -> None:
        self.uuids: dict[str, str] = {}
        self.members: dict[str, str] = {}

    def text(self, text: str) -> str:
        for cap, sim in self.uuids.items():
            text = text.replace(cap, sim)
        return text

    def member_lines(self, text: str) -> str:
        return re.sub(r"^(\d+);", lambda m: self.members.get(m.group(1), m.group(1)) + ";", text, flags=re.M)

    def value(self, header: str, value: str) -> str:
        if header in ("Member-ID", "Old-ID", "New-ID"):
            return self.members.get(value, value)
        return self.text(value)


def core_headers(event: Event) -> set[str]:
    names = set(event.headers) - HISTORY_HEADERS
    return {n for n in names if not n.startswith("variable_")} | (names & CORE_VARIABLES)


def talk_toggle(event: Event) -> bool:
    return event.key == "conference::maintenance" and event.get("Action") in ("start-talking", "stop-talking")


def targets(events: list[Event], uuid: str, *, keep_first_talk: bool) -> list[Event]:
    out = [e for e in events if e.unique_id == uuid]
    if keep_first_talk:
        joined = [e for e in out if not talk_toggle(e)]
        first = next((e for e in out if talk_toggle(e) and e.get("Action") == "start-talking"), None)
        return [e for e in out if e in joined or e is first]
    return [e for e in out if not talk_toggle(e)]


def assert_same_events(
    cap_events: list[Event],
    sim_events: list[Event],
    mapping: Mapping,
    what: str,
    *,
    racing: tuple[str, ...] = (),
) -> None:
    """The same events, in order, with the key headers. Events named in `racing` are compared as a
    sequence of their own: their place among the others is not fixed on the real switch."""
    if racing:
        for part in (lambda e: e.key in racing, lambda e: e.key not in racing):
            assert_same_events(
                [e for e in cap_events if part(e)], [e for e in sim_events if part(e)], mapping, what
            )
        return
    assert [e.key for e in sim_events] == [e.key for e in cap_events], what
    for i, (cap, sim) in enumerate(zip(cap_events, sim_events, strict=True)):
        where = f"{what} #{i} {cap.key}"
        for header in KEY_HEADERS:
            if header in cap.headers:
                assert sim.get(header) == mapping.value(header, cap.headers[header]), f"{where}: {header}"
        missing = core_headers(cap) - set(sim.headers)
        assert not missing, f"{where}: missing headers {sorted(missing)}"


async def expect(
    esl: RawEsl,
    step: Step,
    mapping: Mapping,
    *,
    keep_first_talk: bool = False,
    settle: float = 0.25,
    racing: tuple[str, ...] = (),
) -> None:
    """Wait for the step's target events on the simulator and compare them with the capture."""
    wanted = {cap: targets(step.events, cap, keep_first_talk=keep_first_talk) for cap in mapping.uuids}

    def arrived() -> bool:
        return all(
            len(targets(esl.events, mapping.uuids[cap], keep_first_talk=keep_first_talk)) >= len(evs)
            for cap, evs in wanted.items()
        )

    await esl.wait_for(arrived, timeout=5.0)
    await esl.settle(settle)
    for cap, evs in wanted.items():
        sim = targets(esl.events, mapping.uuids[cap], keep_first_talk=keep_first_talk)
        assert_same_events(evs, sim, mapping, f"{step.sent!r} on {cap}", racing=racing)


async def send(esl: RawEsl, step: Step, mapping: Mapping) -> Frame:
    esl.clear()
    return await esl.send(mapping.text(step.sent), timeout=10.0)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    switch = SwitchSimulator(answer_delay_s=0.02, playback_duration_s=0.15, switchname="fs-lab")
    switch.set_originate_outcome(CAPTURE_FAR_END, None, answer_delay_s=0)
    await switch.start()
    try:
        yield switch
    finally:
        await switch.stop()


async def b_leg(sim: SwitchSimulator, esl: RawEsl) -> str:
    """The channel every capture targets: an inbound call from 1001, answered, parked."""
    uuid = await sim.place_inbound_call("1001", "5000", caller_name="Lab lab")
    assert await esl.api(f"uuid_answer {uuid}") == "+OK\n"
    await esl.wait_for(lambda: any(e.name == "CHANNEL_CALLSTATE" and e.get("Channel-Call-State") == "ACTIVE"
                                   for e in esl.of(uuid)))  # fmt: skip
    esl.clear()
    return uuid


async def run_simple(sim: SwitchSimulator, esl: RawEsl, name: str) -> tuple[Capture, Mapping]:
    """Commands on the B-leg only: reply text and the B-leg's events, step by step."""
    cap = load(name)
    mapping = Mapping()
    mapping.uuids[cap.uuid("B-leg")] = await b_leg(sim, esl)
    for step in cap.steps:
        reply = await send(esl, step, mapping)
        assert step.reply is not None
        assert reply_text(reply) == mapping.text(reply_text(step.reply)), step.sent
        await expect(esl, step, mapping)
    return cap, mapping


# ---------------------------------------------------------------- the families


async def test_uuid_hold_and_unhold_match_capture_01(sim, esl):
    await run_simple(sim, esl, "01_uuid_hold.txt")


async def test_uuid_audio_mute_matches_capture_02(sim, esl):
    _, mapping = await run_simple(sim, esl, "02_uuid_audio_mute.txt")
    b = next(iter(mapping.uuids.values()))
    assert sim.snapshot(b)["muted"] == {"read": False, "write": False}


async def test_uuid_send_dtmf_matches_capture_03_and_fires_nothing_on_the_target(sim, esl):
    _, mapping = await run_simple(sim, esl, "03_uuid_send_dtmf.txt")
    assert sim.snapshot(next(iter(mapping.uuids.values())))["dtmf_sent"] == "1234#"


async def test_uuid_broadcast_matches_capture_04_including_the_command_event_quirk(sim, esl):
    cap, mapping = await run_simple(sim, esl, "04_uuid_broadcast.txt")
    b_cap, b_sim = next(iter(mapping.uuids.items()))
    cap_command = next(e for e in cap.steps[0].events if e.name == "COMMAND")
    sim_command = await esl.wait_event(lambda e: e.name == "COMMAND")
    assert sim_command.get("execute-app-name") == cap_command.get("execute-app-name") == "playback"
    assert sim_command.get("execute-app-arg") == cap_command.get("execute-app-arg")
    assert sim_command.unique_id == cap_command.unique_id == ""
    assert [b.get("Event-Name") for b in sim_command.extra_blocks] == ["PRIVATE_COMMAND"]
    assert cap_command.extra_blocks[0]["Unique-ID"] == b_cap
    assert sim_command.extra_blocks[0]["Unique-ID"] == b_sim
    # it arrives after the playback, although its Event-Sequence is older
    order = [e.name for e in esl.events if e.name in ("CHANNEL_EXECUTE_COMPLETE", "COMMAND")]
    assert order == ["CHANNEL_EXECUTE_COMPLETE", "COMMAND"]
    complete = next(e for e in esl.events if e.name == "CHANNEL_EXECUTE_COMPLETE")
    assert int(sim_command.get("Event-Sequence")) < int(complete.get("Event-Sequence"))


async def test_uuid_record_start_mask_unmask_stop_match_capture_05(sim, esl):
    _, mapping = await run_simple(sim, esl, "05_uuid_record.txt")
    assert sim.snapshot(next(iter(mapping.uuids.values())))["recording"]["active"] is False


async def test_uuid_transfer_to_an_extension_matches_capture_08(sim, esl):
    _, mapping = await run_simple(sim, esl, "08_uuid_transfer.txt")
    snap = sim.snapshot(next(iter(mapping.uuids.values())))
    assert snap["playing"] == "tone_stream://%(1000,1000,440);loops=-1"


async def test_uuid_kill_matches_capture_09(sim, esl):
    _, mapping = await run_simple(sim, esl, "09_uuid_kill.txt")
    b = next(iter(mapping.uuids.values()))
    assert sim.snapshot(b)["hangup_cause"] == "NORMAL_CLEARING"
    assert await esl.api(f"uuid_exists {b}") == "false"
    complete = next(e for e in esl.of(b) if e.name == "CHANNEL_HANGUP_COMPLETE")
    assert complete.var("hangup_cause") == "NORMAL_CLEARING" and complete.var("billsec").isdigit()


async def test_conference_transfer_list_bgdial_kick_match_capture_06(sim, esl):
    cap = load("06_conference.txt")
    transfer, list1, bgdial, list2, kick, list3 = cap.steps
    mapping = Mapping()
    b_cap = cap.uuid("B-leg")
    mapping.uuids[b_cap] = await b_leg(sim, esl)

    await send(esl, transfer, mapping)
    cap_member = next(e.get("Member-ID") for e in transfer.events if e.get("Action") == "add-member")
    added = await esl.wait_event(lambda e: e.get("Action") == "add-member")
    mapping.members[cap_member] = added.get("Member-ID")
    await expect(esl, transfer, mapping, keep_first_talk=True)
    assert any(e.get("Action") == "conference-create" for e in esl.events)

    reply = await send(esl, list1, mapping)
    assert reply_text(reply) == mapping.member_lines(mapping.text(reply_text(list1.reply)))
    await expect(esl, list1, mapping)

    reply = await send(esl, bgdial, mapping)
    job = re.fullmatch(r"\+OK Job-UUID: ([0-9a-f-]{36})\n", reply_text(reply))
    assert job and re.fullmatch(r"\+OK Job-UUID: [0-9a-f-]{36}\n", reply_text(bgdial.reply))
    cap_result = next(e for e in bgdial.events if e.get("Action") == "bgdial-result")
    sim_result = await esl.wait_event(lambda e: e.get("Action") == "bgdial-result")
    assert sim_result.get("Result") == cap_result.get("Result") == "SUCCESS"
    assert sim_result.get("Job-UUID") == job.group(1)
    mapping.uuids[cap_result.get("Peer-UUID")] = sim_result.get("Peer-UUID")
    cap_new = next(e.get("Member-ID") for e in bgdial.events if e.get("Action") == "add-member")
    new = await esl.wait_event(lambda e: e.get("Action") == "add-member")
    mapping.members[cap_new] = new.get("Member-ID")
    await expect(esl, bgdial, mapping)

    reply = await send(esl, list2, mapping)
    assert reply_text(reply) == mapping.member_lines(mapping.text(reply_text(list2.reply)))
    await expect(esl, list2, mapping)

    kick_text = mapping.text(kick.sent)
    kick_text = re.sub(r"kick (\d+)$", lambda m: f"kick {mapping.members[m.group(1)]}", kick_text)
    esl.clear()
    reply = await esl.send(kick_text)
    assert reply_text(reply) == re.sub(
        r"kicked (\d+)", lambda m: f"kicked {mapping.members[m.group(1)]}", reply_text(kick.reply)
    )
    await expect(esl, kick, mapping)

    reply = await send(esl, list3, mapping)
    assert reply_text(reply) == mapping.member_lines(mapping.text(reply_text(list3.reply)))
    await expect(esl, list3, mapping)


async def test_originate_eavesdrop_matches_capture_07(sim, esl):
    cap = load("07_eavesdrop.txt")
    (step,) = cap.steps
    mapping = Mapping()
    mapping.uuids[cap.uuid("B-leg")] = await b_leg(sim, esl)
    reply = await send(esl, step, mapping)
    cap_spy = reply_text(step.reply).removeprefix("+OK ").strip()
    sim_spy = reply_text(reply).removeprefix("+OK ").strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", sim_spy), reply_text(reply)
    mapping.uuids[cap_spy] = sim_spy
    await expect(esl, step, mapping)
    assert sim.snapshot(sim_spy)["eavesdrop"] == {
        "target": mapping.uuids[cap.uuid("B-leg")],
        "mode": "listen",
    }


async def test_bgapi_jobs_match_capture_10(sim, esl):
    cap = load("10_bgapi_background_job.txt")
    originate, status, kill = cap.steps
    mapping = Mapping()

    reply = await send(esl, originate, mapping)
    assert reply.content_type == "command/reply"
    job = reply.headers["Job-UUID"]
    assert reply.reply_text == f"+OK Job-UUID: {job}"
    assert originate.reply.reply_text == f"+OK Job-UUID: {originate.reply.headers['Job-UUID']}"
    cap_job = next(e for e in originate.events if e.name == "BACKGROUND_JOB")
    sim_job = await esl.wait_event(lambda e: e.name == "BACKGROUND_JOB")
    assert sim_job.get("Job-UUID") == job
    for header in ("Job-Command", "Job-Command-Arg"):
        assert sim_job.get(header) == cap_job.get(header)
    cap_leg = cap_job.body.removeprefix("+OK ").strip()
    sim_leg = sim_job.body.removeprefix("+OK ").strip()
    assert sim_job.body == f"+OK {sim_leg}\n" and cap_job.body == f"+OK {cap_leg}\n"
    mapping.uuids[cap_leg] = sim_leg
    await expect(esl, originate, mapping)
    # the job event comes after the leg's answer, before it starts its application
    names = [e.name for e in esl.events if e.unique_id in ("", sim_leg) and e.name != "API"]
    assert names.index("CALL_UPDATE") < names.index("BACKGROUND_JOB") < names.index("CHANNEL_PARK")

    for step in (status, kill):
        reply = await send(esl, step, mapping)
        assert reply.reply_text == f"+OK Job-UUID: {reply.headers['Job-UUID']}"
        cap_done = next(e for e in step.events if e.name == "BACKGROUND_JOB")
        sim_done = await esl.wait_event(lambda e: e.name == "BACKGROUND_JOB")
        assert sim_done.get("Job-Command") == cap_done.get("Job-Command")
        assert sim_done.get("Job-Command-Arg") == cap_done.get("Job-Command-Arg")
        assert ("Job-Command-Arg" in sim_done.headers) == ("Job-Command-Arg" in cap_done.headers)
        assert core_headers(cap_done) <= set(sim_done.headers)
        if step is kill:
            assert sim_done.body == cap_done.body == "-ERR No such channel!\n"
        else:
            assert shape(sim_done.body) == shape(cap_done.body)


async def test_every_command_on_a_nonexistent_uuid_replies_like_capture_11(sim, esl):
    cap = load("11_nonexistent_uuid.txt")
    assert len(cap.steps) == 8
    for step in cap.steps:
        esl.clear()
        reply = await esl.send(step.sent)
        assert reply_text(reply) == reply_text(step.reply), step.sent


async def test_every_api_command_also_fires_an_api_event_like_the_captures(sim, esl):
    cap = load("11_nonexistent_uuid.txt")
    cap_api = [e for s in cap.steps for e in s.events if e.name == "API"]
    for step in cap.steps:
        await esl.send(step.sent)
    await esl.wait_for(lambda: len([e for e in esl.events if e.name == "API"]) >= len(cap_api))
    sim_api = [e for e in esl.events if e.name == "API"]
    assert [(e.get("API-Command"), e.get("API-Command-Argument")) for e in sim_api] == [
        (e.get("API-Command"), e.get("API-Command-Argument")) for e in cap_api
    ]
    for cap_ev, sim_ev in zip(cap_api, sim_api, strict=True):
        assert set(cap_ev.headers) == set(sim_ev.headers)
