"""Group 1, what the caller hears and what is kept: mute/unmute, hold/unhold, send_dtmf,
play_audio, recording_pause/recording_resume (freeswitch.md §2.3-2.7).

None of these commands fires an event FreeSWITCH-side, and uuid_audio and uuid_hold answer +OK
for a channel that does not exist, so the bridge checks the channel first and keeps the state
itself (session fields muted_caller, muted_agent, held, recording_state).
"""

from __future__ import annotations

from typing import Any

from ulid import ULID

from bridge.calls.commands import command, delimited_command, join, url, var_block, word
from bridge.calls.manager import FORK_BUGNAME
from bridge.errors import ApiError
from bridge.tts import speech_source
from bridge.verbs.base import VerbContext, verb
from bridge.verbs.common import (
    PENDING,
    Step,
    audit,
    begin,
    in_progress,
    require_answered,
    run_steps,
    settle,
)
from bridge.verbs.models import (
    Hold,
    Mute,
    PlayAudio,
    RecordingPause,
    RecordingResume,
    SendDtmf,
    Unhold,
    Unmute,
)

# The switch's own music (vanilla conf: local_stream://moh) when the AI names none.
DEFAULT_MOH = "local_stream://moh"

# ---------------------------------------------------------------- mute / unmute

# caller: what the caller says (read side: silent for the AI, the recording and any partner);
# agent: what the caller hears from the AI (write side).
_MUTE = {"caller": ("muted_caller", "read"), "agent": ("muted_agent", "write")}


async def _set_mute(ctx: VerbContext, target: str, on: bool) -> dict[str, Any]:
    require_answered(ctx)
    field, direction = _MUTE[target]
    claimed, current = await begin(ctx, field, ("", "0") if on else ("1",))
    if not claimed:
        if current == PENDING:
            raise in_progress("mute/unmute")
        if on:
            return {}  # already muted: muting again changes nothing
        raise ApiError(409, "not_muted", f"the {target} is not muted")
    switch = ctx.switch
    try:
        await switch.require_channel(ctx.call_id)
        await switch.api(command("uuid_audio", ctx.call_id, "start", direction, "mute", "1" if on else "0"))
    except BaseException:
        await settle(ctx, field, current)
        raise
    await settle(ctx, field, "1" if on else "0")
    return {}


@verb("mute", idempotency="strong")
async def mute(ctx: VerbContext, cmd: Mute) -> dict[str, Any]:
    return await _set_mute(ctx, cmd.target, True)


@verb("unmute", idempotency="strong")
async def unmute(ctx: VerbContext, cmd: Unmute) -> dict[str, Any]:
    return await _set_mute(ctx, cmd.target, False)


# ---------------------------------------------------------------- hold / unhold


def _moh(moh_url: str | None) -> str:
    """The music: the AI's moh_url through FreeSWITCH's HTTP cache, or the switch's own."""
    return join("http_cache://", url(moh_url, "moh_url")) if moh_url else DEFAULT_MOH


def _hold_steps(call_id: str, moh: str) -> list[Step]:
    # uuid_hold alone plays music only to a bridged partner; the AI's caller is parked, so the
    # music is displaced into the channel, and the fork pauses so the AI does not hear it.
    return [
        Step(command("uuid_hold", call_id), undo=command("uuid_hold", "off", call_id)),
        Step(
            command("uuid_displace", call_id, "start", moh, "0", "lm"),
            undo=command("uuid_displace", call_id, "stop", moh),
        ),
        Step(
            command("uuid_audio_fork", call_id, "pause", FORK_BUGNAME),
            undo=command("uuid_audio_fork", call_id, "resume", FORK_BUGNAME),
            required=False,
        ),
    ]


def _unhold_steps(call_id: str, moh: str) -> list[Step]:
    # Only taking the hold off decides the outcome: the music and the fork can only fail here
    # because they are already gone, which is where unhold wants them.
    return [
        Step(command("uuid_hold", "off", call_id), undo=command("uuid_hold", call_id)),
        Step(command("uuid_displace", call_id, "stop", moh), required=False),
        Step(command("uuid_audio_fork", call_id, "resume", FORK_BUGNAME), required=False),
    ]


@verb("hold", idempotency="strong")
async def hold(ctx: VerbContext, cmd: Hold) -> dict[str, Any]:
    require_answered(ctx)
    claimed, current = await begin(ctx, "held", ("", "0"))
    if not claimed:
        if current == PENDING:
            raise in_progress("hold/unhold")
        raise ApiError(409, "already_held", "the caller is already on hold")
    moh = _moh(cmd.moh_url)
    switch = ctx.switch
    try:
        await switch.require_channel(ctx.call_id)
        await run_steps(switch, _hold_steps(ctx.call_id, moh))
    except BaseException:
        await settle(ctx, "held", current)
        raise
    await settle(ctx, "held", "1", also={"hold_moh": cmd.moh_url or ""})
    return {}


@verb("unhold", idempotency="strong")
async def unhold(ctx: VerbContext, cmd: Unhold) -> dict[str, Any]:
    require_answered(ctx)
    claimed, current = await begin(ctx, "held", ("1",))
    if not claimed:
        if current == PENDING:
            raise in_progress("hold/unhold")
        raise ApiError(409, "not_held", "the caller is not on hold")
    moh = _moh(ctx.session.extra.get("hold_moh"))
    switch = ctx.switch
    try:
        await switch.require_channel(ctx.call_id)
        await run_steps(switch, _unhold_steps(ctx.call_id, moh))
    except BaseException:
        await settle(ctx, "held", current)
        raise
    await settle(ctx, "held", "0", also={"hold_moh": ""})
    return {}


# ---------------------------------------------------------------- DTMF and prompts


@verb("send_dtmf", idempotency="action")
async def send_dtmf(ctx: VerbContext, cmd: SendDtmf) -> dict[str, Any]:
    require_answered(ctx)
    # uuid_send_dtmf fails on its own for a missing channel (-ERR Cannot locate session!).
    await ctx.switch.api(command("uuid_send_dtmf", ctx.call_id, word(cmd.digits, "digits")))
    return {}


@verb("play_audio", idempotency="action")
async def play_audio(ctx: VerbContext, cmd: PlayAudio) -> dict[str, Any]:
    require_answered(ctx)
    playback_id = f"pb_{ULID()}"
    # {playback_id=...} rides on PLAYBACK_START/STOP for correlation; `aleg` explicitly, or a
    # bridged partner would be put on hold music while the prompt plays.
    playback = join("playback::", var_block({"playback_id": playback_id}))
    # In a conference the AI speaks through its own leg (loopback-b), so everyone hears it.
    target = ctx.session.extra.get("ai_speech_uuid") or ctx.call_id
    if cmd.tts_text is not None:
        # v1.1: the speech is a file too (mod_ssml's tts://), so it plays, is interrupted and is
        # reported exactly like an audio_url; its text holds spaces, hence the delimited form.
        settings = ctx.svc.settings
        speech = speech_source(settings.tts, settings.tts_voice, cmd.tts_text, cmd.voice)
        play = delimited_command("uuid_broadcast", target, join(playback, speech), "aleg")
    else:
        assert cmd.audio_url is not None  # exactly one of the two (PlayAudio's validator)
        source = join("http_cache://", url(cmd.audio_url, "audio_url"))
        play = command("uuid_broadcast", target, join(playback, source), "aleg")
    await ctx.switch.api(play)
    return {"playback_id": playback_id}


# ---------------------------------------------------------------- recording
# `mask`/`unmask`, not `pause`/`resume`: FreeSWITCH writes a masked stretch as zeros of its real
# length (record_callback: `mask ? null_data : data`), while a paused bug is skipped altogether
# (SMBF_PAUSE), leaving the stretch out of the file. Either keeps the card number out; masking also
# keeps the file's timeline the call's, so a transcript's timestamps and a player's seek line up
# with the call, and the pause shows in the artifact as silence (docs/recordings.md).


@verb("recording_pause", idempotency="strong")
async def recording_pause(ctx: VerbContext, cmd: RecordingPause) -> dict[str, Any]:
    path = ctx.session.recording_path
    claimed, current = await begin(ctx, "recording_state", ("recording",))
    if not claimed:
        if current == PENDING:
            raise in_progress("recording_pause/recording_resume")
        detail = (
            "the recording is already paused" if current == "paused" else "the call is not being recorded"
        )
        raise ApiError(409, "recording_not_active", detail)
    try:
        if not path:
            raise ApiError(409, "recording_not_active", "the call has no recording to pause")
        await ctx.switch.api(command("uuid_record", ctx.call_id, "mask", path))
    except BaseException:
        await settle(ctx, "recording_state", current)
        raise
    await settle(ctx, "recording_state", "paused")
    await audit(ctx, "recording_pause", reason=cmd.reason)
    return {}


@verb("recording_resume", idempotency="strong")
async def recording_resume(ctx: VerbContext, cmd: RecordingResume) -> dict[str, Any]:
    path = ctx.session.recording_path
    claimed, current = await begin(ctx, "recording_state", ("paused",))
    if not claimed:
        if current == PENDING:
            raise in_progress("recording_pause/recording_resume")
        raise ApiError(409, "recording_not_paused", "the recording is not paused")
    try:
        if not path:
            raise ApiError(409, "recording_not_paused", "the call has no recording to resume")
        await ctx.switch.api(command("uuid_record", ctx.call_id, "unmask", path))
    except BaseException:
        await settle(ctx, "recording_state", current)
        raise
    await settle(ctx, "recording_state", "recording")
    await audit(ctx, "recording_resume")
    return {}
