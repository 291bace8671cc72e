"""Group 2 scenarios, one test code for both switches (the `lab` fixture, ids "sim" and
"freeswitch"): conference_start / conference_add / conference_remove / conference_leave, checked
with the switch's own `conference <name> list`; monitor_start's second fork, monitor_stop,
whisper to one member and barge.

On the real switch the added member is dialled through the `pstn` gateway and answered by the
lab's SIPp UAS, which sends a 660 Hz tone; the caller (SIPp) sends 440 Hz. So what the AI hears
is checked by pitch: its loopback leg's fork carries the room (both tones), the monitor fork the
member's own voice on the left and what the member hears (the caller) on the right, and a
whisper (880 Hz) is on that right channel but not in the room. The simulator does not mix a
room's audio, so there the forks' frames are checked for their format.

    .venv/bin/pytest -m freeswitch tests/freeswitch/test_conference.py   # the real switch only
"""

from __future__ import annotations

import array
import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.freeswitch.lab import (
    CALLER,
    FRAME_BYTES,
    TONE_HZ,
    Fork,
    FreeSwitchLab,
    Lab,
    LabCall,
    SimLab,
    l16_tone,
    wav_file,
)
from tests.freeswitch.test_calls import assert_fork_audio, is_real, wait_for

MEMBER_NUMBER = "+15557654321"
MEMBER_HZ = 660.0  # tests/freeswitch/lab.py SippGateway: the far end's tone
WHISPER_HZ = 880.0
RATE = 16000


# ---------------------------------------------------------------- the switch's view


async def switch_api(lab: Lab, command: str) -> str:
    """An API command on the lab's switch, as ESL answers it."""
    if isinstance(lab, FreeSwitchLab):
        return await lab.fs_api(command)
    assert isinstance(lab, SimLab)
    return await lab.sim.api(command)


async def room(lab: Lab, name: str) -> dict[str, list[str]]:
    """`conference <name> list` by channel uuid: a line a member,
    `<id>;<channel name>;<uuid>;<cid name>;<cid number>;<flags>;<vol in>;<vol out>;<energy>`."""
    reply = await switch_api(lab, f"conference {name} list")
    members = {}
    for line in reply.splitlines():
        fields = line.split(";")
        if len(fields) == 9 and fields[0].isdigit():
            members[fields[2]] = fields
    return members


async def wait_room(lab: Lab, name: str, uuids: set[str], timeout: float = 5.0) -> dict[str, list[str]]:
    return await wait_for(lambda: room(lab, name), lambda found: set(found) == uuids, timeout)


# ---------------------------------------------------------------- audio


def tone_level(samples: array.array, hz: float, rate: int = RATE) -> float:
    """The amplitude of one frequency in `samples` (Goertzel), in sample units."""
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / n


def pcm(frames: list[bytes]) -> array.array:
    samples = array.array("h")
    samples.frombytes(b"".join(frames))
    return samples


async def fork_frames(fork: Fork, seconds: float) -> list[bytes]:
    start = time.monotonic()
    await asyncio.sleep(seconds)
    return fork.between(start, time.monotonic())


HEARD = 1000.0  # a tone at ~7000 RMS has an amplitude near 10000; the leakage of the other is < 300


# ---------------------------------------------------------------- a conference with a member


@dataclass
class Room:
    call: LabCall
    conference_id: str
    ai_leg: str
    ai_fork: Fork  # the AI's fork on its loopback leg
    member_id: str = ""  # the added member
    member_call_id: str = ""
    pstn: Any = None


async def start_conference(lab: Lab) -> Room:
    call = await lab.call()
    reply = await lab.ai(call, "conference_start")
    conf_id = reply["result"]["conference_id"]
    conf = await lab.services.conferences.get(conf_id)
    # the AI's fork moves to its loopback leg: a new fork, with a metadata frame that says so
    forks = await lab.agent.wait_for(lambda: len(f := lab.agent.forks_of(call.call_id)) > 1 and f)
    meta = forks[1].texts[0]
    assert meta["resumed"] is True and meta["conference_id"] == conf_id, meta
    assert meta["callback_token"] != call.token
    await lab.agent.wait_for(lambda: forks[0].closed)  # the caller's own fork is stopped
    call.token = meta["callback_token"]
    return Room(call, conf_id, conf.ai_leg_uuid, forks[1])


async def add_member(lab: Lab, r: Room) -> None:
    if isinstance(lab, FreeSwitchLab):
        r.pstn = lab.gateway("answer")
        await r.pstn.start()
    else:
        assert isinstance(lab, SimLab)
        lab.sim.set_originate_outcome(f"sofia/gateway/pstn/{MEMBER_NUMBER}", None, answer_delay_s=0.2)
    added = await lab.ai(r.call, "conference_add", participant_type="e164", destination=MEMBER_NUMBER)
    r.member_id, r.member_call_id = added["result"]["member_id"], added["result"]["call_id"]
    if r.pstn is not None:
        invite = await r.pstn.invite()
        assert invite.request_user == MEMBER_NUMBER


async def conference_actions(lab: Lab, r: Room) -> list[tuple[str, str]]:
    found = await lab.outbox(r.call.call_id, "ai_session.conference_changed")
    return [(e.data["action"], e.data["member_id"]) for e in found]


# ---------------------------------------------------------------- the scenarios


async def test_conference_start_add_remove_and_leave(lab: Lab):
    r = await start_conference(lab)
    call = r.call
    # the switch's own list: the caller and the AI's loopback leg
    members = await wait_room(lab, r.conference_id, {call.call_id, r.ai_leg})
    # an originated leg is listed as its callee (switch_channel_flip_cid): "Outbound Call" and
    # the dial string's last part (loopback/bridge_ai_leg/lab: "lab")
    assert members[r.ai_leg][1] == "loopback/bridge_ai_leg-a"
    assert members[r.ai_leg][3:5] == ["Outbound Call", "lab"], members[r.ai_leg]
    assert members[call.call_id][4] == CALLER
    # the AI hears the room on its new fork: 50 frames a second, and on the real switch the
    # caller's tone through the conference's mix
    if isinstance(lab, SimLab):
        lab.sim.speak(r.ai_leg, l16_tone(1.0))  # (the simulator does not mix rooms)
    start = time.monotonic()
    frames = await fork_frames(r.ai_fork, 1.0)
    assert_fork_audio(frames, time.monotonic() - start)
    if is_real(lab):
        assert tone_level(pcm(frames), TONE_HZ) > HEARD, tone_level(pcm(frames), TONE_HZ)

    # conference_add: the number dialled through the gateway, answered, in the room
    await add_member(lab, r)
    members = await wait_room(lab, r.conference_id, {call.call_id, r.ai_leg, r.member_call_id})
    assert f"mem-{members[r.member_call_id][0]}" == r.member_id
    assert members[r.member_call_id][3:5] == ["Outbound Call", MEMBER_NUMBER], members[r.member_call_id]
    state = await lab.ai(call, "get_call_state")
    assert sorted(state["result"]["current_participants"]) == ["ai_agent", "caller", "e164"], state
    if is_real(lab):
        await asyncio.sleep(0.3)  # the far end's media starts after its 200 OK
        heard = pcm(await fork_frames(r.ai_fork, 1.0))
        assert tone_level(heard, MEMBER_HZ) > HEARD and tone_level(heard, TONE_HZ) > HEARD

    # conference_remove: a kick; the member leaves the room and its call ends
    await lab.ai(call, "conference_remove", member_id=r.member_id)
    await wait_room(lab, r.conference_id, {call.call_id, r.ai_leg})
    await lab.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == r.member_call_id)
    if r.pstn is not None:
        assert await r.pstn.wait(10) == 0  # the switch sent the far end its BYE
        assert r.pstn.received("BYE")
    actions = await wait_for(
        lambda: conference_actions(lab, r), lambda found: ("member_left", r.member_id) in found
    )
    assert ("member_joined", r.member_id) in actions

    # conference_leave: the AI's leg goes, the conference goes on with the caller
    await lab.ai(call, "conference_leave")
    await wait_room(lab, r.conference_id, {call.call_id})
    await lab.agent.wait_for(lambda: r.ai_fork.closed)
    session = await lab.session(call)
    assert (session.state, session.outcome) == ("ended", "conference_left")
    assert not lab.events_of(call.call_id, "CHANNEL_HANGUP_COMPLETE")  # the caller is still there
    assert len(lab.agent.forks_of(call.call_id)) == 2


async def test_monitor_whisper_and_barge(lab: Lab, tmp_path: Path):
    r = await start_conference(lab)
    await add_member(lab, r)
    call, target = r.call, r.member_call_id
    await wait_room(lab, r.conference_id, {call.call_id, r.ai_leg, target})

    # monitor_start: a second fork, on the member's channel, into the AI's ws_url, in stereo
    await lab.ai(call, "monitor_start", target_call_id=target)
    forks = await lab.agent.wait_for(lambda: len(f := lab.agent.forks_of(call.call_id)) > 2 and f)
    monitor = forks[2]
    meta = monitor.texts[0]
    assert (meta["type"], meta["target_call_id"], meta["member_id"]) == ("monitor", target, r.member_id)
    assert meta["conference_id"] == r.conference_id and meta["audio_format"]["channels"] == 2
    if isinstance(lab, SimLab):
        lab.sim.speak(target, l16_tone(1.0))
    await lab.agent.wait_for(lambda: len(monitor.frames) > 5)
    start = time.monotonic()
    frames = await fork_frames(monitor, 1.0)
    sizes = {len(f) for f in frames}
    assert sizes and all(size % (2 * FRAME_BYTES) == 0 for size in sizes), sizes  # 20 ms of stereo
    assert 40 <= sum(len(f) for f in frames) / (2 * FRAME_BYTES) / (time.monotonic() - start) <= 60
    if is_real(lab):
        samples = pcm(frames)
        left, right = samples[0::2], samples[1::2]
        # left: the member's own voice (the far end's 660 Hz); right: what it hears (the caller)
        assert tone_level(left, MEMBER_HZ) > HEARD and tone_level(left, TONE_HZ) < HEARD / 3
        assert tone_level(right, TONE_HZ) > HEARD and tone_level(right, MEMBER_HZ) < HEARD / 3

    # whisper to the member: `conference <room> play <file> <member>`, which the member hears
    # (the monitor's right channel) and the room does not (the AI's fork on its loopback leg)
    prompt = wav_file(tmp_path / "whisper.wav", l16_tone(1.0, rate=8000, hz=WHISPER_HZ))
    url = await lab.serve("whisper.wav", prompt.read_bytes())
    await lab.ai(call, "whisper", target_call_id=target, audio_url=url)
    if is_real(lab):
        # the verb answers once the switch opened the file and started playing it
        await asyncio.sleep(0.15)
        heard_by_target, room_frames = await asyncio.gather(
            fork_frames(monitor, 0.6), fork_frames(r.ai_fork, 0.6)
        )
        right = pcm(heard_by_target)[1::2]
        assert tone_level(right, WHISPER_HZ) > HEARD, tone_level(right, WHISPER_HZ)
        assert tone_level(pcm(room_frames), WHISPER_HZ) < HEARD / 3
    fs_id = r.member_id.removeprefix("mem-")
    job = await lab.wait_event(
        lambda e: (
            e.name == "BACKGROUND_JOB"
            and (e.get("Job-Command-Arg") or "").endswith(f" play http_cache://{url} {fs_id}")
        )
    )
    assert job.body == f"+OK (play) Playing file http_cache://{url} to member {fs_id}\n", job.body
    played = await lab.wait_event(
        lambda e: e.key == "conference::maintenance" and e.get("Action") == "play-file-member"
    )
    assert played.get("Member-ID") == fs_id and played.unique_id == target
    await lab.wait_event(
        lambda e: e.key == "conference::maintenance" and e.get("Action") == "play-file-member-done"
    )

    # monitor_stop: that fork closes; the AI's own stays
    await lab.ai(call, "monitor_stop", target_call_id=target)
    await lab.agent.wait_for(lambda: monitor.closed)
    assert not r.ai_fork.closed

    # barge on a monitored member: the monitor fork goes (the AI hears the member in the room)
    await lab.ai(call, "monitor_start", target_call_id=target)
    forks = await lab.agent.wait_for(lambda: len(f := lab.agent.forks_of(call.call_id)) > 3 and f)
    reply = await lab.ai(call, "barge", target_call_id=target)
    assert reply["result"] == {"conference_id": r.conference_id, "member_id": r.member_id}
    await lab.agent.wait_for(lambda: forks[3].closed)
    assert not r.ai_fork.closed
    await wait_room(lab, r.conference_id, {call.call_id, r.ai_leg, target})


@pytest.mark.parametrize("lab_settings", [{"tts": "flite"}])
async def test_whisper_speaks_tts_text_to_one_member(lab: Lab):
    """v1.1 TTS: whisper with tts_text is `conference ^^`<room>`play`tts://flite|kal|<text>`<id>`:
    the conference API splits on the backtick, so the text's spaces and punctuation stay whole,
    the switch plays it to that member (its reply and play-file-member say so; that a member's
    file stays out of the room is test_monitor_whisper_and_barge's 880 Hz check), and the member
    hears speech: the monitor's right channel, what the member hears, carries more than the
    caller's tone while it plays."""
    r = await start_conference(lab)
    await add_member(lab, r)
    call, target = r.call, r.member_call_id
    await wait_room(lab, r.conference_id, {call.call_id, r.ai_leg, target})
    await lab.ai(call, "monitor_start", target_call_id=target)
    monitor = (await lab.agent.wait_for(lambda: len(f := lab.agent.forks_of(call.call_id)) > 2 and f))[2]
    await lab.agent.wait_for(lambda: len(monitor.frames) > 5)

    text = 'Psst: offer "Gold" (20% off), then ask: ready?'
    heard_before = await fork_frames(monitor, 1.0)
    await lab.ai(call, "whisper", target_call_id=target, tts_text=text)
    speech = f"tts://flite|kal|{text}"
    fs_id = r.member_id.removeprefix("mem-")
    if is_real(lab):
        heard_during = await fork_frames(monitor, 1.5)
        # 100 ms windows of what is left once the caller's tone is taken out: speech (with its
        # pauses) in many while the whisper plays, in few before (the odd glitch of the tone)
        before = speech_windows(pcm(heard_before)[1::2])
        during = speech_windows(pcm(heard_during)[1::2])
        assert sum(during) >= 0.4 * len(during) and sum(before) <= 0.2 * len(before), (before, during)
        job = await lab.wait_event(
            lambda e: e.name == "BACKGROUND_JOB" and (e.get("Job-Command-Arg") or "").endswith(f"`{fs_id}")
        )
        assert job.body == f"+OK (play) Playing file {speech} to member {fs_id}\n", job.body
    played = await lab.wait_event(
        lambda e: e.key == "conference::maintenance" and e.get("Action") == "play-file-member"
    )
    assert played.get("Member-ID") == fs_id and played.unique_id == target
    assert played.get("File") == speech
    await lab.wait_event(
        lambda e: e.key == "conference::maintenance" and e.get("Action") == "play-file-member-done",
        timeout=15,
    )


def speech_windows(samples: array.array, window: int = RATE // 10) -> list[bool]:
    """For each 100 ms: does it hold more than the caller's tone (a residual RMS over 500, the
    power of TONE_HZ taken out: a tone of amplitude A has power A²/2)?"""
    out = []
    for i in range(0, len(samples) - window + 1, window):
        chunk = samples[i : i + window]
        power = sum(s * s for s in chunk) / window - tone_level(chunk, TONE_HZ) ** 2 / 2
        out.append(math.sqrt(max(power, 0.0)) > 500)
    return out
