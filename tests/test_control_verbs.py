"""Group 1 verbs end to end: the official SDK with the call's callback token drives a sandbox call;
each test checks the API answer, the commands the simulated FreeSWITCH received and its state."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import AgentServer, in_thread
from tests.helpers import (
    commands,
    control,
    end_call,
    events,
    sandbox_with,
    sdk,
    snapshot,
    start_call,
    wait_until,
)

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    # Many verbs on one call within a second: the rate limit has its own tests.
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000) as box:
        yield box


async def session_of(sandbox: Any, call_id: str) -> Any:
    return await sandbox.runtime.services.sessions.get(call_id)


def assert_envelope(reply: dict[str, Any], call_id: str) -> dict[str, Any]:
    assert reply["ok"] is True and reply["call_id"] == call_id
    assert ISO_MS_Z.match(reply["dispatched_at"]), reply["dispatched_at"]
    return reply["result"]


async def test_mute_and_unmute_each_party(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    cid, tok = call.call_id, call.token

    assert assert_envelope(await in_thread(ai.mute, cid, callback_token=tok), cid) == {}
    assert commands(sandbox, cid, "uuid_audio ") == [f"uuid_audio {cid} start read mute 1"]
    # The channel is checked first: uuid_audio answers +OK even for a channel that is gone.
    all_cmds = commands(sandbox, cid)
    assert all_cmds[all_cmds.index(f"uuid_audio {cid} start read mute 1") - 1] == f"uuid_exists {cid}"
    assert snapshot(sandbox, cid)["muted"] == {"read": True, "write": False}

    await in_thread(ai.mute, cid, target="agent", callback_token=tok)
    assert snapshot(sandbox, cid)["muted"] == {"read": True, "write": True}
    state = (await in_thread(ai.get_call_state, cid, callback_token=tok))["result"]
    assert state["is_muted"] == {"caller": True, "agent": True}

    # Muting a muted party is a no-op: 200, and nothing more is sent.
    await in_thread(ai.mute, cid, callback_token=tok)
    assert len(commands(sandbox, cid, "uuid_audio ")) == 2

    await in_thread(ai.unmute, cid, callback_token=tok)
    await in_thread(ai.unmute, cid, target="agent", callback_token=tok)
    assert commands(sandbox, cid, "uuid_audio ")[2:] == [
        f"uuid_audio {cid} start read mute 0",
        f"uuid_audio {cid} start write mute 0",
    ]
    assert snapshot(sandbox, cid)["muted"] == {"read": False, "write": False}
    session = await session_of(sandbox, cid)
    assert (session.muted_caller, session.muted_agent) == (False, False)


async def test_hold_with_music_url_and_unhold(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    cid, tok = call.call_id, call.token
    moh = "https://cdn.example.com/moh.wav"

    assert assert_envelope(await in_thread(ai.hold, cid, moh_url=moh, callback_token=tok), cid) == {}
    music = f"http_cache://{moh}"
    assert commands(sandbox, cid)[-4:] == [
        f"uuid_exists {cid}",
        f"uuid_hold {cid}",
        f"uuid_displace {cid} start {music} 0 lm",
        f"uuid_audio_fork {cid} pause ai_fork",
    ]
    snap = snapshot(sandbox, cid)
    assert snap["held"] is True
    assert {"function": "displace", "target": music} in snap["media_bugs"]
    assert snap["audio_fork"]["paused"] is True
    state = (await in_thread(ai.get_call_state, cid, callback_token=tok))["result"]
    assert state["is_held"] is True

    await in_thread(ai.unhold, cid, callback_token=tok)
    assert commands(sandbox, cid)[-4:] == [
        f"uuid_exists {cid}",
        f"uuid_hold off {cid}",
        f"uuid_displace {cid} stop {music}",
        f"uuid_audio_fork {cid} resume ai_fork",
    ]
    snap = snapshot(sandbox, cid)
    assert snap["held"] is False and snap["audio_fork"]["paused"] is False
    assert not [b for b in snap["media_bugs"] if b["function"] == "displace"]
    assert (await session_of(sandbox, cid)).held is False


async def test_hold_without_url_plays_the_switch_music(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    await in_thread(ai.hold, call.call_id, callback_token=call.token)
    assert f"uuid_displace {call.call_id} start local_stream://moh 0 lm" in commands(sandbox, call.call_id)
    await in_thread(ai.unhold, call.call_id, callback_token=call.token)
    assert f"uuid_displace {call.call_id} stop local_stream://moh" in commands(sandbox, call.call_id)


async def test_send_dtmf(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    reply = await in_thread(ai.send_dtmf, call.call_id, digits="1234#", callback_token=call.token)
    assert assert_envelope(reply, call.call_id) == {}
    assert commands(sandbox, call.call_id, "uuid_send_dtmf") == [f"uuid_send_dtmf {call.call_id} 1234#"]
    assert snapshot(sandbox, call.call_id)["dtmf_sent"] == "1234#"


async def test_play_audio_broadcasts_to_the_a_leg_with_a_playback_id(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    url = "https://cdn.example.com/prompts/greeting.wav"
    result = assert_envelope(
        await in_thread(ai.play_audio, call.call_id, audio_url=url, callback_token=call.token), call.call_id
    )
    playback_id = result["playback_id"]
    assert playback_id.startswith("pb_")
    assert commands(sandbox, call.call_id, "uuid_broadcast") == [
        f"uuid_broadcast {call.call_id} playback::{{playback_id={playback_id}}}http_cache://{url} aleg"
    ]


@pytest.fixture
async def tts_sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000, tts="flite", tts_voice="slt") as box:
        yield box


async def test_play_audio_speaks_tts_text_with_a_playback_id_and_playback_events(
    tts_sandbox, agent_server: AgentServer
):
    """v1.1 TTS: the text plays as mod_ssml's tts:// file, in uuid_broadcast's delimited form."""
    sandbox = tts_sandbox
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    text = "Hello!  Your\norder #42 ships today, don't worry."
    spoken = "Hello! Your order #42 ships today, don\u2019t worry."
    result = assert_envelope(
        await in_thread(ai.play_audio, call.call_id, tts_text=text, callback_token=call.token), call.call_id
    )
    playback_id = result["playback_id"]
    assert playback_id.startswith("pb_")
    file = f"{{playback_id={playback_id}}}tts://flite|slt|{spoken}"
    assert commands(sandbox, call.call_id, "uuid_broadcast") == [
        f"uuid_broadcast ^^`{call.call_id}`playback::{file}`aleg"
    ]
    # The request's voice wins over BRIDGE_TTS_VOICE.
    await in_thread(ai.play_audio, call.call_id, tts_text="Bye.", voice="awb", callback_token=call.token)
    assert commands(sandbox, call.call_id, "uuid_broadcast")[-1].endswith("tts://flite|awb|Bye.`aleg")


async def test_play_audio_tts_is_deduplicated_like_an_audio_url(tts_sandbox, agent_server: AgentServer):
    sandbox = tts_sandbox
    call = await start_call(sandbox, agent_server)
    body = {"event": "play_audio", "tts_text": "Once only."}
    first = await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="say-1")
    again = await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="say-1")
    assert first.status == again.status == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert first.body["result"] == again.body["result"]
    assert len(commands(sandbox, call.call_id, "uuid_broadcast")) == 1


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"tts_text": "${uuid_kill(x)}"}, "tts_text"),
        ({"tts_text": "a`b"}, "tts_text"),
        ({"tts_text": "line\x00"}, "tts_text"),
        ({"tts_text": "x" * 1001}, "tts_text"),
        ({"tts_text": "  \n "}, "tts_text"),
        ({"tts_text": "hi", "voice": "en-us"}, "voice"),
        ({"tts_text": "hi", "voice": "kal|x"}, "voice"),
    ],
)
async def test_play_audio_tts_refuses_hostile_text_and_unknown_voices_with_400(
    tts_sandbox, agent_server: AgentServer, body: dict[str, Any], loc: str
):
    sandbox = tts_sandbox
    call = await start_call(sandbox, agent_server)
    reply = await control(sandbox, call.call_id, {"event": "play_audio", **body}, auth=call.token)
    assert reply.status == 400 and reply.code == "validation_error"
    assert reply.body["detail"]["errors"][0]["loc"] == [loc]
    assert commands(sandbox, call.call_id, "uuid_broadcast") == []


async def test_recording_pause_and_resume(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    cid, tok = call.call_id, call.token
    path = (await session_of(sandbox, cid)).recording_path
    assert path and path.endswith(f"/{cid}.wav")
    assert snapshot(sandbox, cid)["recording"]["active"] is True

    await in_thread(ai.recording_pause, cid, reason="pci", callback_token=tok)
    assert commands(sandbox, cid, "uuid_record")[-1] == f"uuid_record {cid} mask {path}"
    assert snapshot(sandbox, cid)["recording"]["masked"] is True
    state = (await in_thread(ai.get_call_state, cid, callback_token=tok))["result"]
    assert state["is_recording"] is False

    await in_thread(ai.recording_resume, cid, callback_token=tok)
    assert commands(sandbox, cid, "uuid_record")[-1] == f"uuid_record {cid} unmask {path}"
    assert snapshot(sandbox, cid)["recording"]["masked"] is False
    assert (await in_thread(ai.get_call_state, cid, callback_token=tok))["result"]["is_recording"] is True

    logs = (await in_thread(sdk(sandbox).ai_sessions.get, cid))["metadata"]["logs"]
    assert [(e["event"], e.get("reason")) for e in logs] == [
        ("recording_pause", "pci"),
        ("recording_resume", None),
    ]


async def test_log_appends_to_the_audit_log_and_changes_nothing_else(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    before_cmds = commands(sandbox, call.call_id)
    before_events = await events(sandbox, call.call_id)
    await in_thread(ai.log, call.call_id, metadata={"step": "intent_classified"}, callback_token=call.token)
    await in_thread(
        ai.log, call.call_id, metadata={"step": "renewal", "score": 0.9}, callback_token=call.token
    )
    logs = (await in_thread(sdk(sandbox).ai_sessions.get, call.call_id))["metadata"]["logs"]
    assert [{k: v for k, v in e.items() if k != "ts"} for e in logs] == [
        {"step": "intent_classified"},
        {"step": "renewal", "score": 0.9},
    ]
    assert all(ISO_MS_Z.match(e["ts"]) for e in logs)
    listed = await in_thread(sdk(sandbox).ai_sessions.list)
    assert [s["metadata"]["logs"] for s in listed if s["call_id"] == call.call_id] == [logs]
    assert commands(sandbox, call.call_id) == before_cmds
    assert len(await events(sandbox, call.call_id)) == len(before_events)


async def test_set_disposition_shows_in_call_state_and_call_ended(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    await in_thread(
        ai.set_disposition,
        call.call_id,
        disposition="interested",
        notes="Asked for callback Tue 2pm",
        callback_token=call.token,
    )
    state = (await in_thread(ai.get_call_state, call.call_id, callback_token=call.token))["result"]
    assert state["disposition"] == "interested"
    session = await session_of(sandbox, call.call_id)
    assert session.notes == "Asked for callback Tue 2pm" and session.extra["disposition_source"] == "ai"

    await end_call(sandbox, call.call_id)
    [ended] = await wait_until(lambda: events(sandbox, call.call_id, "call.ended"))
    assert ended.data["disposition"] == "interested"
    assert ended.data["notes"] == "Asked for callback Tue 2pm"


async def test_get_call_state_has_exactly_the_contract_shape(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    reply = await in_thread(sdk(sandbox).ai_sessions.get_call_state, call.call_id, callback_token=call.token)
    assert assert_envelope(reply, call.call_id) == {
        "state": "in_progress",
        "duration_s": reply["result"]["duration_s"],
        "answered": True,
        "current_participants": ["caller", "ai_agent"],
        "is_recording": True,
        "is_muted": {"caller": False, "agent": False},
        "is_held": False,
        "conference_id": None,
        "disposition": None,
    }
    assert isinstance(reply["result"]["duration_s"], int)


async def test_hangup_ends_the_session_and_the_call(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    reply = await in_thread(
        ai.hangup, call.call_id, metadata={"reason": "task_complete"}, callback_token=call.token
    )
    assert assert_envelope(reply, call.call_id) == {}
    assert commands(sandbox, call.call_id, "uuid_kill") == [f"uuid_kill {call.call_id} NORMAL_CLEARING"]
    await wait_until(lambda: _hung_up(sandbox, call.call_id))
    assert snapshot(sandbox, call.call_id)["hangup_cause"] == "NORMAL_CLEARING"

    session = await session_of(sandbox, call.call_id)
    assert (session.state, session.outcome, session.reason) == ("ended", "hangup", "ai_hangup")
    [ended] = await wait_until(lambda: events(sandbox, call.call_id, "ai_session.ended"))
    assert ended.data["outcome"] == "hangup"
    [entry] = ended.data["metadata"]["logs"]
    assert entry["event"] == "hangup" and entry["metadata"] == {"reason": "task_complete"}
    # The call's own end is still reported once, after the channel is gone.
    await wait_until(lambda: events(sandbox, call.call_id, "call.ended"))


async def _hung_up(sandbox: Any, call_id: str) -> bool:
    return snapshot(sandbox, call_id)["hangup_cause"] is not None


@pytest.mark.parametrize(
    ("destination_type", "destination", "dialplan"),
    [
        ("agent_queue", "tier1", "callcenter:tier1@default"),
        (
            "e164",
            "+14155550123",
            "m:^:set:continue_on_fail=true^set:hangup_after_bridge=true"
            "^bridge:{origination_caller_id_number=+14155550100,ignore_early_media=true,originate_timeout=30}"
            "sofia/gateway/pstn/+14155550123^park",
        ),
        (
            "sip_uri",
            "sip:agent@pbx.example.com:5060",
            "m:^:set:continue_on_fail=true^set:hangup_after_bridge=true"
            "^bridge:{origination_caller_id_number=+14155550100,ignore_early_media=true,originate_timeout=30}"
            "sofia/lab/sip:agent@pbx.example.com:5060^park",
        ),
    ],
)
async def test_transfer(sandbox, agent_server: AgentServer, destination_type, destination, dialplan):
    call = await start_call(sandbox, agent_server)
    cid = call.call_id
    reply = await in_thread(
        sdk(sandbox).ai_sessions.transfer,
        cid,
        destination_type=destination_type,
        destination=destination,
        metadata={"intent": "billing"},
        callback_token=call.token,
    )
    assert assert_envelope(reply, cid) == {}
    # The AI's fork is stopped before the call leaves.
    assert commands(sandbox, cid)[-2:] == [
        f"uuid_audio_fork {cid} stop ai_fork",
        f"uuid_transfer {cid} '{dialplan}' inline",
    ]
    assert snapshot(sandbox, cid)["audio_fork"] is None
    await agent_server.wait_for(lambda: agent_server.connection(cid)["closed"])

    # A number or a SIP URI ends the session once the far end answers (the simulator's does).
    await wait_until(lambda: events(sandbox, cid, "ai_session.ended"))
    session = await session_of(sandbox, cid)
    assert (session.state, session.outcome) == ("ended", f"transferred_{destination_type}")
    assert session.transfer is not None
    assert session.transfer["destination"] == destination and session.transfer["metadata"] == {
        "intent": "billing"
    }
    types = [e.event_type for e in await events(sandbox, cid)]
    assert types.index("ai_session.transferred") < types.index("ai_session.ended")
    [transferred] = await events(sandbox, cid, "ai_session.transferred")
    assert transferred.data == {
        "call_id": cid,
        "destination_type": destination_type,
        "destination": destination,
        "metadata": {"intent": "billing"},
    }
    [ended] = await events(sandbox, cid, "ai_session.ended")
    assert ended.data["outcome"] == f"transferred_{destination_type}"
    [entry] = ended.data["metadata"]["logs"]
    assert entry["event"] == "transfer" and entry["metadata"] == {"intent": "billing"}
    stored = await in_thread(sdk(sandbox).ai_sessions.get, cid)
    assert stored["outcome"] == f"transferred_{destination_type}"
    assert stored["transfer"]["destination_type"] == destination_type
