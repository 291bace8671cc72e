"""Group 2, supervision of another leg: monitor_start, monitor_stop, whisper, barge
(freeswitch.md §2.9, §2.13: none of them is one native command).

Every one of them names a `target_call_id` (a channel uuid) and needs a relationship between the
AI's call and that channel, the way Twilio's "coach" needs the coached call in the same
conference:

- by conference: the target is a member (Participant.call_id) of the AI session's current
  conference, as FreeSWITCH's conference::maintenance events report it;
- by monitor: a monitor_start of this AI on that target is active (bridge.calls.monitors).

Anything else (no relationship, an unknown channel, another tenant's call, a channel that is gone)
is the same 403 conference_membership_required, so the answer says nothing about calls the AI
may not see. Which verb needs which relationship:

| verb          | conference | monitor                     |
|---------------|------------|-----------------------------|
| monitor_start | required   | a second one is 409         |
| monitor_stop  | 409 alone  | required                    |
| whisper       | enough     | enough in listen_and_whisper |
| barge         | enough     | enough                      |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from bridge.calls.commands import command, delimited_command, join, url
from bridge.calls.conferences import Conference, Participant, freeswitch_member_id
from bridge.calls.monitors import Monitor, new_monitor
from bridge.errors import ApiError, SwitchError, SwitchUnavailable
from bridge.tts import speech_source
from bridge.verbs.base import VerbContext, verb
from bridge.verbs.common import PENDING, audit, require_answered
from bridge.verbs.conference import conference_dialplan, start_conference
from bridge.verbs.models import Barge, MonitorStart, MonitorStop, Whisper

log = structlog.get_logger(__name__)

FORBIDDEN = "conference_membership_required"


@dataclass(slots=True)
class Relation:
    target: str
    conference: Conference | None  # the AI's current conference, if it is in one
    member: Participant | None  # the target as a member of that conference
    monitor: Monitor | None  # this AI's monitor on the target


def forbidden(target: str, why: str = "") -> ApiError:
    message = (
        f"target_call_id {target} is neither a member of this AI session's conference nor a call it monitors"
    )
    return ApiError(403, FORBIDDEN, f"{message}: {why}" if why else message)


async def _conference(ctx: VerbContext) -> Conference | None:
    conf_id = ctx.session.conference_id
    if not conf_id or conf_id == PENDING:
        return None
    conf = await ctx.svc.conferences.get(conf_id)
    if conf is None or conf.ai_left or conf.tenant_id != ctx.session.tenant_id:
        return None
    return conf


async def relation(ctx: VerbContext, target: str) -> Relation:
    """What links the AI's call to `target` now. Never raises for an unrelated target: the verbs
    decide, so each can say 403 or 409 as its row in the table above says."""
    conf = await _conference(ctx)
    member = None
    if conf is not None:
        member = await ctx.svc.conferences.participant_by_call(conf.conference_id, target)
        if member is not None and (member.type == "ai_agent" or target == conf.ai_leg_uuid):
            member = None  # the AI's own leg is not another call
    monitor = await ctx.svc.monitors.store.get(ctx.call_id, target)
    if monitor is not None and member is None and not await _alive(ctx, target):
        # The target is gone and its hangup was not seen (a bridge restart): forget it now.
        await ctx.svc.monitors.store.release(ctx.call_id, target)
        monitor = None
    if member is None and monitor is None:
        # A call of this tenant on another box cannot be joined to this one's media (yet): say
        # so rather than "not a member". Other tenants' calls stay as unknown as made-up ids.
        other = await ctx.svc.sessions.get(target)
        if other is not None and other.tenant_id == ctx.session.tenant_id:
            ctx.svc.switches.same_box(ctx.session, other)
    return Relation(target, conf, member, monitor)


async def _alive(ctx: VerbContext, uuid: str) -> bool:
    try:
        return await ctx.switch.exists(uuid)
    except SwitchError:
        return False


def _require_any(rel: Relation) -> None:
    if rel.member is None and rel.monitor is None:
        raise forbidden(rel.target)


# ---------------------------------------------------------------- monitor_start / monitor_stop


@verb("monitor_start", idempotency="strong")
async def monitor_start(ctx: VerbContext, cmd: MonitorStart) -> dict[str, Any]:
    require_answered(ctx)
    svc, session, target = ctx.svc, ctx.session, cmd.target_call_id
    rel = await relation(ctx, target)
    if rel.member is None or rel.conference is None:
        raise forbidden(target, "monitor_start needs the target in the AI's conference")
    if rel.monitor is not None:
        raise ApiError(409, "already_monitoring", f"this AI session already monitors {target}")
    agent = await svc.voice_agents.get(session.voice_agent_id or "")
    if agent is None or not session.ws_url:
        raise ApiError(409, "no_voice_agent", "this call has no voice agent WebSocket to send audio to")
    conf = rel.conference
    monitor = new_monitor(ctx.call_id, target, cmd.mode, conf.conference_id)
    if not await svc.monitors.store.claim(monitor):
        raise ApiError(409, "already_monitoring", f"this AI session already monitors {target}")
    metadata = {
        "type": "monitor",
        "call_id": ctx.call_id,
        "target_call_id": target,
        "mode": cmd.mode,
        "tenant_id": session.tenant_id,
        "voice_agent_id": agent.id,
        "conference_id": conf.conference_id,
        "member_id": rel.member.member_id,
        "participant_type": rel.member.type,
        # stereo, interleaved: the target's own voice (left), what the target hears (right)
        "audio_format": {**agent.audio_format, "channels": 2},
        "channels": ["target", "heard_by_target"],
    }
    try:
        # The target channel is another leg: it does not carry the AI call's fork settings.
        await ctx.switch.setvar(target, "mod_audio_fork_subprotocol", agent.subprotocol)
        if agent.auth_token:
            await ctx.switch.setvar(target, "mod_audio_fork_auth_token", agent.auth_token)
        await ctx.switch.fork_start(
            target,
            agent.ws_url,
            sample_rate_hz=agent.sample_rate_hz,
            metadata=metadata,
            mix="stereo",
            bugname=monitor.bugname,
        )
    except BaseException:
        await svc.monitors.store.release(ctx.call_id, target)
        raise
    await svc.monitors.store.activate(monitor)
    await audit(ctx, "monitor_start", target_call_id=target, mode=cmd.mode, conference_id=conf.conference_id)
    return {}


@verb("monitor_stop", idempotency="strong")
async def monitor_stop(ctx: VerbContext, cmd: MonitorStop) -> dict[str, Any]:
    target = cmd.target_call_id
    rel = await relation(ctx, target)
    if rel.monitor is None:
        if rel.member is not None:
            raise ApiError(409, "not_monitoring", f"this AI session does not monitor {target}")
        raise forbidden(target)
    # A stop refused because the bug is gone already leaves the wanted state: not monitoring.
    await ctx.svc.monitors.end(rel.monitor, "monitor_stop")
    await audit(ctx, "monitor_stop", target_call_id=target)
    return {}


# ---------------------------------------------------------------- whisper


def _played(reply: str) -> bool:
    """`conference play` answers without +OK/-ERR in some versions ("(play) File: x not found.")."""
    return "Playing file" in reply


@verb("whisper", idempotency="action")
async def whisper(ctx: VerbContext, cmd: Whisper) -> dict[str, Any]:
    require_answered(ctx)
    target = cmd.target_call_id
    rel = await relation(ctx, target)
    if rel.member is None:
        if rel.monitor is None:
            raise forbidden(target)
        if rel.monitor.mode != "listen_and_whisper":
            raise forbidden(
                target, "the monitor is listen-only; start it with mode listen_and_whisper to whisper"
            )
    if cmd.tts_text is not None:
        # v1.1: mod_ssml's tts:// file, opened like an audio file by both commands below; its
        # text holds spaces, so the commands are split on a delimiter it cannot hold.
        settings = ctx.svc.settings
        audio = speech_source(settings.tts, settings.tts_voice, cmd.tts_text, cmd.voice)
        make = delimited_command
    else:
        assert cmd.audio_url is not None  # exactly one of the two (Whisper's validator)
        audio = join("http_cache://", url(cmd.audio_url, "audio_url"))
        make = command
    switch = ctx.switch
    # bgapi: both commands open the file (an HTTP fetch, or the whole synthesis) before they answer.
    if rel.member is not None and rel.conference is not None:
        fs_id = freeswitch_member_id(rel.member.member_id)
        play = make("conference", rel.conference.name, "play", audio, fs_id)
        reply = await switch.bgapi(play)
        if not _played(reply):
            raise SwitchError(play, reply.strip() or "-ERR no reply")
        how = "conference_play"
    else:
        # Mixed ('m') into what the target hears only; no loop, so it ends with the file.
        await switch.bgapi(make("uuid_displace", target, "start", audio, "0", "m"))
        how = "displace"
    source = {"audio_url": cmd.audio_url} if cmd.tts_text is None else {"tts_chars": len(cmd.tts_text)}
    await audit(ctx, "whisper", target_call_id=target, via=how, **source)
    return {}


# ---------------------------------------------------------------- barge


@verb("barge", idempotency="strong")
async def barge(ctx: VerbContext, cmd: Barge) -> dict[str, Any]:
    require_answered(ctx)
    svc, target = ctx.svc, cmd.target_call_id
    rel = await relation(ctx, target)
    _require_any(rel)
    conf = rel.conference
    if conf is None:
        # Monitoring without a conference: start one the way conference_start does.
        conf = await start_conference(ctx)
    member = rel.member
    if member is None:
        # Outside the AI's conference: pull the target in with whoever it is bridged to.
        joined = svc.conferences.expect_member(target)
        try:
            room = conference_dialplan(conf)
            await ctx.switch.api(command("uuid_transfer", target, "-both", room, "inline"))
        except BaseException:
            svc.conferences.forget(target, joined)
            raise
        member = await svc.conferences.wait_member(
            conf.conference_id, target, joined, svc.settings.esl_command_timeout_s
        )
    elif conf.ai_member_id:
        # Both sides must hear the AI: lift a nospeak the AI may have had toward this member.
        ai_id, target_id = freeswitch_member_id(conf.ai_member_id), freeswitch_member_id(member.member_id)
        try:
            await ctx.switch.api(command("conference", conf.name, "relate", ai_id, target_id, "clear"))
        except SwitchError as exc:
            log.info("barge_relate_clear_refused", target=target, reply=exc.reply)
    if rel.monitor is not None:
        # The AI hears the target through its conference leg now; the extra fork would double it.
        try:
            await svc.monitors.end(rel.monitor, "barge")
        except SwitchUnavailable:
            await svc.monitors.store.release(ctx.call_id, target)
    await audit(ctx, "barge", target_call_id=target, conference_id=conf.conference_id)
    return {
        "conference_id": conf.conference_id,
        "member_id": member.member_id if member is not None else None,
    }
