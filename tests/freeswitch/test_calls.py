"""Call scenarios (Group 1 and the call's lifecycle), one test code for both switches: the `lab`
fixture runs each against the simulator (id "sim") and the real FreeSWITCH with a SIPp caller
sending a 440 Hz tone over RTP (id "freeswitch", marker `freeswitch`). Everything goes through the
official SDK with the callback token of the metadata frame; what is asserted is what the switch
shows: its ESL events, the audio the fork delivers, and on the real switch its SIP signalling
(SIPp's trace) and the recording on disk.

    .venv/bin/pytest "tests/freeswitch/test_calls.py::test_hold_and_unhold[freeswitch]"
"""

from __future__ import annotations

import array
import asyncio
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.freeswitch.conftest import FreeSwitch
from tests.freeswitch.lab import CALLER, DIALED, FRAME_BYTES, FreeSwitchLab, Lab, l16_tone, rms, wav_file
from tests.webhook_receiver import subscribed

LOUD = 2000.0  # the caller's tone is ~7000 RMS at the fork; a muted frame is 0
QUIET = 50.0


async def wait_for(probe, accept, timeout: float = 5.0):
    """Poll the async `probe` until `accept` takes its value; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        assert time.monotonic() < deadline, value
        await asyncio.sleep(0.05)


def is_real(lab: Lab) -> bool:
    return isinstance(lab, FreeSwitchLab)


async def energy(lab: Lab, call_id: str, seconds: float = 1.0) -> list[float]:
    return [rms(f) for f in await lab.agent.frames(call_id, seconds)]


def mostly_loud(levels: list[float], at_least: int = 40) -> bool:
    """The caller's tone: at least 90% of the frames loud (a real call has the odd dip)."""
    return len(levels) >= at_least and sum(level > LOUD for level in levels) >= 0.9 * len(levels)


def assert_fork_audio(frames: list[bytes], seconds: float) -> None:
    """mod_audio_fork's stream: 640-byte frames (20 ms, 16 kHz mono L16) at 50 a second. Under
    load its lws thread sends two buffered frames as one message (1280 bytes, seen on the real
    switch), so: every message whole frames, nearly all single ones, 32000 bytes a second."""
    sizes = [len(f) for f in frames]
    assert sizes and all(size % FRAME_BYTES == 0 for size in sizes), set(sizes)
    assert sizes.count(FRAME_BYTES) >= 0.9 * len(sizes), sizes
    rate = sum(sizes) / FRAME_BYTES / seconds
    assert 40 <= rate <= 60, rate


async def test_the_session_starts_on_channel_park_and_the_audio_arrives(lab: Lab):
    call = await lab.call()
    # the switch parked the call and the bridge answered it
    [park] = lab.events_of(call.call_id, "CHANNEL_PARK")
    assert park.var("bridge_tenant_id") == lab.info.tenant_id
    assert lab.events_of(call.call_id, "CHANNEL_ANSWER")
    meta = call.metadata
    assert meta["call_id"] == call.call_id and meta["tenant_id"] == lab.info.tenant_id
    assert meta["callback_token"].startswith("yt_cb_") and meta["direction"] == "inbound"
    assert (meta["from"], meta["to"]) == (CALLER, DIALED)
    assert lab.agent.connection(call.call_id).protocol == "audio.drachtio.org"
    # 20 ms of 16 kHz mono L16 a frame, 50 a second, and the caller's voice (the tone) in them
    start = time.monotonic()
    frames = await lab.agent.frames(call.call_id, 2.0)
    assert_fork_audio(frames, time.monotonic() - start)
    assert sorted(rms(f) for f in frames)[len(frames) // 2] > LOUD
    state = await lab.ai(call, "get_call_state")
    assert state["result"]["answered"] is True and state["result"]["is_recording"] is True
    types = [e.event_type for e in await lab.outbox(call.call_id)]
    assert types[:3] == ["call.started", "call.answered", "ai_session.started"], types


async def test_mute_silences_the_fork_and_unmute_brings_the_caller_back(lab: Lab):
    call = await lab.call()
    await asyncio.sleep(0.5)  # past the first frames of the stream (a real one starts with a dip)
    before = await energy(lab, call.call_id)
    assert mostly_loud(before), before
    await lab.ai(call, "mute", target="caller")
    await asyncio.sleep(0.3)  # frames already on their way
    muted = await energy(lab, call.call_id)
    assert len(muted) >= 40 and max(muted) < QUIET, muted
    await lab.ai(call, "unmute", target="caller")
    await asyncio.sleep(0.3)
    after = await energy(lab, call.call_id)
    assert mostly_loud(after), after


async def test_hold_and_unhold(lab: Lab):
    call = await lab.call()
    await lab.ai(call, "hold")
    hold = await lab.wait_event(lambda e: e.name == "CHANNEL_HOLD" and e.unique_id == call.call_id)
    assert hold.get("Channel-Call-State") == "HELD"
    await asyncio.sleep(0.3)
    assert await lab.agent.frames(call.call_id, 1.0) == []  # the fork is paused: the AI hears no music
    if is_real(lab):
        # the switch put the caller on hold in SIP: a sendonly re-INVITE, answered recvonly
        caller = lab.caller(call)
        [reinvite] = caller.reinvites()
        assert reinvite.sdp_direction == "sendonly", reinvite.text
        ok = await caller.wait_for_message(
            lambda m: m.direction == "sent" and m.status == 200 and m.cseq_method == "INVITE"
        )
        assert ok.sdp_direction == "recvonly", ok.text
    await lab.ai(call, "unhold")
    await lab.wait_event(lambda e: e.name == "CHANNEL_UNHOLD" and e.unique_id == call.call_id)
    await asyncio.sleep(0.3)
    after = await energy(lab, call.call_id)
    assert mostly_loud(after), after
    if is_real(lab):
        caller = lab.caller(call)
        reinvites = caller.reinvites()
        assert [m.sdp_direction for m in reinvites] == ["sendonly", "sendrecv"]


async def test_play_audio_fires_playback_start_and_stop_with_its_playback_id(lab: Lab, tmp_path: Path):
    prompt = wav_file(tmp_path / "prompt.wav", l16_tone(0.5, rate=8000, hz=880.0))
    url = await lab.serve("prompt.wav", prompt.read_bytes())
    reply = await lab.ai(await lab.call(), "play_audio", audio_url=url)
    playback_id = reply["result"]["playback_id"]
    assert playback_id.startswith("pb_")

    def ours(name: str):
        return lambda e: e.name == name and e.get("playback_id") == playback_id

    start = await lab.wait_event(ours("PLAYBACK_START"))
    stop = await lab.wait_event(ours("PLAYBACK_STOP"))
    assert start.unique_id == stop.unique_id == reply["call_id"]
    assert stop.get("Playback-Status") == "done"
    # the path as given to playback, its {variables} included
    assert start.get("Playback-File-Path") == f"{{playback_id={playback_id}}}http_cache://{url}"
    assert "Playback-File-Type" not in start.headers
    if is_real(lab):
        assert lab.file_requests == ["prompt.wav"]  # mod_http_cache fetched it from us


@pytest.mark.parametrize(
    ("lab_settings", "engine"),
    [({"tts": "flite"}, "flite|kal"), ({"tts": "espeak"}, "tts_commandline|en-us")],
    ids=["flite", "espeak"],
)
async def test_play_audio_speaks_tts_text_with_playback_events_and_audible_speech(lab: Lab, engine: str):
    """v1.1 TTS (BRIDGE_TTS=flite: mod_flite's kal; espeak: espeak-ng through mod_tts_commandline):
    mod_ssml's tts:// file plays like an audio_url, with the same PLAYBACK_START/STOP and
    playback_id, and the caller hears speech (the recording's right channel, what the caller is
    sent, is loud only while it plays)."""
    call = await lab.call()
    session = await lab.session(call)
    await asyncio.sleep(1.0)
    text = "Hello! Your order ships today, don't worry."
    spoken = "Hello! Your order ships today, don\u2019t worry."
    reply = await lab.ai(call, "play_audio", tts_text=text)
    playback_id = reply["result"]["playback_id"]
    assert playback_id.startswith("pb_")

    def ours(name: str):
        return lambda e: e.name == name and e.get("playback_id") == playback_id

    start = await lab.wait_event(ours("PLAYBACK_START"))
    stop = await lab.wait_event(ours("PLAYBACK_STOP"), timeout=20)
    assert start.unique_id == stop.unique_id == call.call_id
    assert stop.get("Playback-Status") == "done"
    assert start.get("Playback-File-Path") == f"{{playback_id={playback_id}}}tts://{engine}|{spoken}"
    assert "Playback-File-Type" not in start.headers
    played = (int(stop.get("Event-Date-Timestamp")) - int(start.get("Event-Date-Timestamp"))) / 1e6
    # the simulator: tts_ms_per_char (75 ms) a character; measured on 1.10.12: kal and espeak-ng's en-us
    # both 75-77 ms (3.2-3.3 s for these 43 characters)
    assert 0.5 * len(spoken) * 0.075 <= played <= 2.0 * len(spoken) * 0.075, played
    await asyncio.sleep(0.5)
    await lab.hang_up(call)
    rec_stop = await lab.wait_event(lambda e: e.name == "RECORD_STOP" and e.unique_id == call.call_id)
    if not is_real(lab):
        return  # the simulator's recording holds the caller's tone only
    rec_start = next(e for e in lab.events_of(call.call_id, "RECORD_START"))
    began = int(rec_start.get("Event-Date-Timestamp")) / 1e6
    assert rec_stop.get("Record-File-Path") == session.recording_path
    levels = heard_levels(session.recording_path)
    first = int((int(start.get("Event-Date-Timestamp")) / 1e6 - began) / 0.02)
    last = int((int(stop.get("Event-Date-Timestamp")) / 1e6 - began) / 0.02)
    before, during = levels[: max(first - 5, 0)], levels[first:last]
    assert before and max(before) < QUIET, before  # nothing was sent to the caller before
    assert sum(level > 300 for level in during) >= 0.5 * len(during), during  # speech, with pauses


@pytest.mark.parametrize("lab_settings", [{"tts": "flite"}])
async def test_tts_text_with_every_character_the_switch_parses_reaches_the_speech_engine_whole(lab: Lab):
    """Each character some FreeSWITCH layer reads that speech text may hold (`,` `:` `::` `!`
    `"` `%` `=` `;` `#` `(` `)`...), and non-ASCII, reach mod_ssml's tts:// as they were sent:
    PLAYBACK_START's path (the file the switch opened) holds exactly the text."""
    logged = len(lab.switch.log_text()) if is_real(lab) else 0  # the switch serves the whole session
    call = await lab.call()
    text = 'A, b: c::d! "e" 100% f=g; #h (i) j&k *l* m+n o/p q? r@s t_u.'
    text += " \u00bfQu\u00e9? \u201cx\u201d \u2014 \u00e9t\u00e9"
    reply = await lab.ai(call, "play_audio", tts_text=text)
    playback_id = reply["result"]["playback_id"]
    start = await lab.wait_event(lambda e: e.name == "PLAYBACK_START" and e.get("playback_id") == playback_id)
    assert start.get("Playback-File-Path") == f"{{playback_id={playback_id}}}tts://flite|kal|{text}"
    stop = await lab.wait_event(
        lambda e: e.name == "PLAYBACK_STOP" and e.get("playback_id") == playback_id, timeout=30
    )
    assert stop.get("Playback-Status") == "done"
    if is_real(lab):
        assert not FreeSwitch.severe_lines(lab.switch.log_text()[logged:])


def heard_levels(path: str) -> list[float]:
    """The RMS of each 20 ms of a stereo recording's right channel: what the caller was sent."""
    with wave.open(path, "rb") as recording:
        channels, rate = recording.getnchannels(), recording.getframerate()
        samples = array.array("h")
        samples.frombytes(recording.readframes(recording.getnframes()))
    assert channels == 2
    right = samples[1::2]
    step = rate // 50
    return [rms(right[i : i + step].tobytes()) for i in range(0, len(right) - step + 1, step)]


def recording_levels(path: str) -> tuple[int, float, list[float]]:
    """(channels, seconds, the RMS of each 20 ms of the left channel: the caller) of a WAV."""
    with wave.open(path, "rb") as recording:
        channels, rate = recording.getnchannels(), recording.getframerate()
        samples = array.array("h")
        samples.frombytes(recording.readframes(recording.getnframes()))
        seconds = recording.getnframes() / rate
    left = samples[0::channels]
    step = rate // 50
    return (
        channels,
        seconds,
        [rms(left[i : i + step].tobytes()) for i in range(0, len(left) - step + 1, step)],
    )


def longest_quiet(levels: list[float]) -> tuple[int, int]:
    """The longest run of silent 20 ms frames: (first, end) indexes."""
    best, start = (0, 0), None
    for i, level in enumerate([*levels, LOUD + 1]):
        if level < QUIET:
            start = i if start is None else start
        elif start is not None:
            best = max(best, (start, i), key=lambda run: run[1] - run[0])
            start = None
    return best


async def test_recording_pause_and_resume(lab: Lab):
    call = await lab.call()
    session = await lab.session(call)
    path = session.recording_path
    await asyncio.sleep(1.0)
    await lab.ai(call, "recording_pause", reason="card number")
    paused_at = time.time()
    assert (await lab.session(call)).recording_state == "paused"
    await asyncio.sleep(2.0)
    resuming_at = time.time()
    await lab.ai(call, "recording_resume")
    assert (await lab.session(call)).recording_state == "recording"
    await asyncio.sleep(1.0)
    await lab.hang_up(call)
    stop = await lab.wait_event(lambda e: e.name == "RECORD_STOP" and e.unique_id == call.call_id)
    assert stop.get("Record-File-Path") == path
    # The WAV on disk (the real switch writes it into BRIDGE_RECORDINGS_DIR; so does the
    # simulator): stereo, the caller on the left, the paused stretch silent for as long as it
    # lasted (the verb masks: uuid_record mask/unmask) and where it was in the call, the file as
    # long as the recording ran. (With FreeSWITCH's default 25-frame pre-buffer the file lagged
    # the call by 0.5 s: the silence came half a second early and the file was 0.5 s short.)
    start = next(e for e in lab.events_of(call.call_id, "RECORD_START"))
    started = int(start.get("Event-Date-Timestamp")) / 1e6
    recorded = int(stop.get("Event-Date-Timestamp")) / 1e6 - started
    channels, seconds, levels = recording_levels(path)
    assert channels == 2
    assert recorded - 0.25 <= seconds <= recorded + 0.1, (seconds, recorded)
    first, end = longest_quiet(levels)
    assert abs(first * 0.02 - (paused_at - started)) < 0.25, (first * 0.02, paused_at - started)
    paused = resuming_at - paused_at
    assert paused - 0.2 <= (end - first) * 0.02 <= paused + 0.3, ((end - first) * 0.02, paused)
    # the tone before and after it (the real file opens with a few frames of silence: media not yet in)
    sound = next(i for i, level in enumerate(levels) if level > LOUD)
    assert mostly_loud(levels[sound : first - 2], 15) and mostly_loud(levels[end + 2 : -3], 40), levels


async def test_transfer_to_the_support_queue(lab: Lab):
    call = await lab.call()
    await lab.ai(call, "transfer", destination_type="agent_queue", destination="support")
    joined = await lab.wait_event(
        lambda e: (
            e.key == "callcenter::info"
            and e.get("CC-Action") == "member-queue-start"
            and e.get("CC-Member-Session-UUID") == call.call_id
        )
    )
    assert joined.get("CC-Queue") == "support@default"
    # the queue's music: local_stream://moh (callcenter.conf.xml moh-sound $${hold_music})
    moh = await lab.wait_event(lambda e: e.name == "PLAYBACK_START" and e.unique_id == call.call_id)
    assert moh.get("Playback-File-Path") == "local_stream://moh"
    assert moh.get("Playback-File-Type") == "local_stream"
    session = await lab.session(call)
    assert (session.state, session.outcome) == ("ended", "transferred_agent_queue")
    await lab.agent.wait_for(lambda: lab.agent.connection(call.call_id).closed)  # the AI is off the call
    if is_real(lab):
        members = await lab.fs_api("callcenter_config queue list members support@default")
        assert call.call_id in members, members


@pytest.mark.freeswitch
async def test_transfer_to_the_gateway_dials_the_number(fs_lab: FreeSwitchLab):
    pstn = fs_lab.gateway("answer")
    await pstn.start()
    call = await fs_lab.call()
    await fs_lab.ai(call, "transfer", destination_type="e164", destination="+15557654321")
    invite = await pstn.invite()
    assert invite.request_user == "+15557654321"
    assert invite.header("From").startswith('"') or CALLER in invite.header("From")
    bridged = await fs_lab.wait_event(lambda e: e.name == "CHANNEL_BRIDGE" and e.unique_id == call.call_id)
    assert bridged.get("Other-Leg-Destination-Number") == "+15557654321"
    # the session ends once the switch bridged the caller to the far end (bridge/calls/transfers.py)
    session = await wait_for(lambda: fs_lab.session(call), lambda s: s.outcome is not None)
    assert (session.state, session.outcome) == ("ended", "transferred_e164"), session
    assert session.transfer["state"] == "connected"
    await fs_lab.caller(call).hang_up()
    assert await pstn.wait(10) == 0  # the switch hung the far end up after the caller's BYE


@pytest.mark.freeswitch
async def test_schedule_callback_dials_out_at_its_time(fs_lab: FreeSwitchLab):
    pstn = fs_lab.gateway("answer")
    await pstn.start()
    call = await fs_lab.call()
    due = datetime.now(UTC) + timedelta(seconds=2)
    reply = await fs_lab.ai(
        call, "schedule_callback", scheduled_at=due.isoformat().replace("+00:00", "Z"), reason="asked"
    )
    assert reply["result"]["callback_id"].startswith("cb_")
    await fs_lab.caller(call).hang_up()
    invite = await pstn.invite(timeout=15)
    assert invite.at >= due.timestamp() - 0.1, (invite.at, due.timestamp())
    assert invite.request_user == CALLER  # no lead: the caller is called back
    # answered: an outbound AI session with its own fork and token
    callback = await fs_lab.wait_event(
        lambda e: e.name == "CHANNEL_ANSWER" and e.get("Caller-Destination-Number") == CALLER
    )
    meta = await fs_lab.agent.metadata(callback.unique_id, timeout=10)
    assert meta["direction"] == "outbound" and meta["to"] == CALLER
    assert meta["callback_token"] != call.token
    start = time.monotonic()
    frames = await fs_lab.agent.frames(callback.unique_id, 1.0)
    assert_fork_audio(frames, time.monotonic() - start)


async def test_the_callers_bye_ends_the_session_with_signed_webhooks(lab: Lab):
    async with subscribed(lab, ["call.ended", "ai_session.ended"]) as hooks:
        call = await lab.call()
        await asyncio.sleep(1.0)
        await lab.hang_up(call)
        await lab.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == call.call_id)

        async def delivered() -> bool:
            return bool(hooks.of("call.ended", call.call_id) and hooks.of("ai_session.ended", call.call_id))

        deadline = time.monotonic() + 10
        while not await delivered():
            assert time.monotonic() < deadline, [r.json["event_type"] for r in hooks.requests]
            await asyncio.sleep(0.05)
        [ended] = hooks.of("ai_session.ended", call.call_id)  # each checked with the SDK's verifier
        [call_ended] = hooks.of("call.ended", call.call_id)
    assert (ended["outcome"], ended["reason"]) == ("hangup", "caller_hangup")
    assert call_ended["hangup_cause"] == "NORMAL_CLEARING"
    assert call_ended["talk_duration_s"] >= 1
    assert call.call_id in call_ended["recording_url"]
    await lab.agent.wait_for(lambda: lab.agent.connection(call.call_id).closed)
    if is_real(lab):
        caller = lab.caller(call)
        assert await caller.wait(10) == 0
        byes = [m for m in caller.messages() if m.method == "BYE"]
        assert [m.direction for m in byes] == ["sent"]  # the caller hung up, not the switch


async def test_the_ai_hangs_up(lab: Lab):
    call = await lab.call()
    await lab.ai(call, "hangup")
    done = await lab.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == call.call_id)
    assert done.get("Hangup-Cause") == "NORMAL_CLEARING"
    session = await lab.session(call)
    assert (session.outcome, session.reason) == ("hangup", "ai_hangup")
    await lab.agent.wait_for(lambda: lab.agent.connection(call.call_id).closed)
    if is_real(lab):
        caller = lab.caller(call)
        assert await caller.wait(10) == 0
        assert [m.direction for m in caller.messages() if m.method == "BYE"] == [
            "received"
        ]  # from the switch
