"""Group 2, conferencing: conference_start, conference_add, conference_remove, conference_leave.

On a two-party call the AI is not a FreeSWITCH leg, only an audio fork on the caller's channel.
To be in a conference it gets a leg of its own: `loopback/<exten>/<context>`. loopback-a joins
the conference and carries the AI's fork (mix `mixed`: what the conference sends it, the mix of
everyone else, plus what it says); loopback-b parks on the lab dialplan's bridge-ai-leg extension,
and what is played to loopback-b is what loopback-a speaks into the conference. Members are
tracked from conference::maintenance events (bridge.calls.conferences), never from our own
commands, so `participants` is what FreeSWITCH says is in the room.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from ulid import ULID

from bridge.calls.commands import (
    Arg,
    UnsafeValue,
    command,
    inline_dialplan,
    join,
    literal,
    var_block,
    word,
)
from bridge.calls.conferences import (
    UNREMOVABLE_TYPES,
    VAR_AI_CALL,
    VAR_CONFERENCE,
    VAR_MEMBER_DESTINATION,
    VAR_MEMBER_TYPE,
    Conference,
    freeswitch_member_id,
)
from bridge.calls.manager import FORK_BUGNAME
from bridge.errors import ApiError, SwitchError, SwitchUnavailable
from bridge.verbs.base import VerbContext, verb
from bridge.verbs.call_control import PRESENTABLE_RE, customer_number, dial_endpoint, reopen_fork
from bridge.verbs.common import PENDING, audit, begin, in_progress, require_answered, settle, terminated
from bridge.verbs.models import ConferenceAdd, ConferenceLeave, ConferenceRemove, ConferenceStart

log = structlog.get_logger(__name__)

def _room(conf: Conference) -> Arg:
    return join(word(conf.name, "conference"), "@", word(conf.profile, "conference profile"))


def _conference_app(conf: Conference) -> Arg:
    """`&conference(<room>@<profile>)`: what an originated leg runs once it answers."""
    return join(literal("&conference("), _room(conf), literal(")"))


def conference_dialplan(conf: Conference) -> Arg:
    """`'conference:<room>@<profile>'` for `uuid_transfer … inline` (barge moves a target in too)."""
    return inline_dialplan(("conference", _room(conf)))


def _reply_cause(exc: SwitchError) -> str:
    """`-ERR USER_BUSY` -> `USER_BUSY` (originate's reply is the hangup cause)."""
    text = exc.reply.strip().removeprefix("-ERR").strip()
    return text.split()[0] if text else "UNKNOWN"


async def current_conference(ctx: VerbContext) -> Conference:
    """The conference the AI is in now, or 409 no_conference."""
    conf_id = ctx.session.conference_id
    conf = await ctx.svc.conferences.get(conf_id) if conf_id and conf_id != PENDING else None
    if conf is None or conf.ai_left:
        raise ApiError(409, "no_conference", "this AI session is not in a conference; conference_start first")
    return conf


# ---------------------------------------------------------------- conference_start


@verb("conference_start", idempotency="strong")
async def conference_start(ctx: VerbContext, cmd: ConferenceStart) -> dict[str, Any]:
    conf = await start_conference(ctx)
    return {"conference_id": conf.conference_id}


async def start_conference(ctx: VerbContext) -> Conference:
    """Move the caller and the AI into a new conference (barge reuses this)."""
    require_answered(ctx)
    svc, session, call_id = ctx.svc, ctx.session, ctx.call_id
    agent = await svc.voice_agents.get(session.voice_agent_id or "")
    if agent is None or not session.ws_url:
        raise ApiError(409, "no_voice_agent", "this call has no voice agent whose audio could be moved")
    claimed, current = await begin(ctx, "conference_id", ("",))
    if not claimed:
        if current == PENDING:
            raise in_progress("conference_start")
        raise ApiError(409, "conference_already_started", f"this AI session is already in {current}")

    settings = svc.settings
    conf_id = f"conf_{ULID()}"
    leg = str(uuid.uuid4())
    conf = Conference(
        conference_id=conf_id,
        name=conf_id,
        profile=settings.conference_profile,
        call_id=call_id,
        tenant_id=session.tenant_id,
        ai_leg_uuid=leg,
        ai_member_id=None,
    )
    # Stored before any command so the add-member events find it.
    await svc.conferences.create(conf)
    variables = {
        "origination_uuid": leg,
        "origination_caller_id_name": "ai_agent",
        VAR_AI_CALL: call_id,
        VAR_CONFERENCE: conf_id,
        VAR_MEMBER_TYPE: "ai_agent",
        "mod_audio_fork_subprotocol": agent.subprotocol,
    }
    exten, context = word(settings.conference_ai_exten), word(settings.conference_ai_context)
    loopback = join("loopback/", exten, "/", context)
    originate = command("originate", join(var_block(variables), loopback), _conference_app(conf))
    ai_joined = svc.conferences.expect_member(leg)
    caller_joined = svc.conferences.expect_member(call_id)
    stage = "originate"
    speech_leg = ""
    try:
        # bgapi: an api originate would hold the ESL socket until the leg answers.
        await ctx.switch.bgapi(originate)
        stage = "leg"
        if agent.auth_token:
            await ctx.switch.setvar(leg, "mod_audio_fork_auth_token", agent.auth_token)
        # loopback-b: what is played to it is what the AI says into the conference (play_audio).
        speech_leg = (await ctx.switch.api(command("uuid_getvar", leg, "other_loopback_leg_uuid"))).strip()
        if speech_leg == "_undef_":
            speech_leg = ""
        if speech_leg:
            await svc.conferences.update(conf_id, ai_speech_uuid=speech_leg)
        await ctx.switch.api(command("uuid_transfer", call_id, conference_dialplan(conf), "inline"))
        stage = "transferred"
        # Media bugs survive a transfer: the caller's fork would keep feeding the AI the caller
        # alone. The manager ignores this fork's end once conference_id is set (pending counts).
        try:
            await ctx.switch.fork_stop(call_id, FORK_BUGNAME)
        except SwitchError as exc:
            log.info("conference_no_caller_fork_to_stop", call_id=call_id, reply=exc.reply)
        token = await svc.tokens.mint(
            call_id=call_id, tenant_id=session.tenant_id, ttl_s=svc.calls.token_ttl_s(agent)
        )
        metadata = await svc.calls.metadata_frame(session, agent, token, resumed=True, conference_id=conf_id)
        await ctx.switch.fork_start(
            leg,
            agent.ws_url,
            sample_rate_hz=agent.sample_rate_hz,
            metadata=metadata,
            mix="mixed",
            bugname=FORK_BUGNAME,
        )
    except (SwitchError, SwitchUnavailable):
        svc.conferences.forget(leg, ai_joined)
        svc.conferences.forget(call_id, caller_joined)
        await _undo_start(ctx, conf, stage)
        raise

    fields = {"ai_fork_uuid": leg, "ai_speech_uuid": speech_leg or leg}
    await settle(ctx, "conference_id", conf_id, also=fields)
    # The verb answers once FreeSWITCH has reported both members, so a conference_remove or a
    # monitor right after it sees them. Their absence in time is not a failure of the move.
    timeout = settings.esl_command_timeout_s
    await svc.conferences.wait_member(conf_id, leg, ai_joined, timeout)
    await svc.conferences.wait_member(conf_id, call_id, caller_joined, timeout)
    await audit(ctx, "conference_start", conference_id=conf_id)
    return (await svc.conferences.get(conf_id)) or conf


async def _undo_start(ctx: VerbContext, conf: Conference, stage: str) -> None:
    """Put the call back the way it was: no AI leg, the caller parked with the AI's fork."""
    svc, call_id = ctx.svc, ctx.call_id
    if stage != "originate" and conf.ai_leg_uuid:
        try:
            await ctx.switch.kill(conf.ai_leg_uuid, "NORMAL_CLEARING")
        except (SwitchError, SwitchUnavailable) as exc:
            log.warning("conference_ai_leg_not_killed", call_id=call_id, error=str(exc))
    if stage == "transferred":
        try:
            await ctx.switch.api(command("uuid_transfer", call_id, "park", "inline"))
        except (SwitchError, SwitchUnavailable) as exc:
            log.error("conference_caller_not_parked", call_id=call_id, error=str(exc))
        await reopen_fork(ctx)
    await svc.conferences.update(conf.conference_id, ai_left="1")
    await settle(ctx, "conference_id", "")


# ---------------------------------------------------------------- conference_add


async def _endpoint(ctx: VerbContext, cmd: ConferenceAdd) -> Arg:
    settings = ctx.svc.settings
    if cmd.participant_type in ("e164", "sip_uri"):
        return dial_endpoint(settings, cmd.participant_type, cmd.destination)
    if cmd.participant_type == "agent":
        user = cmd.destination if "@" in cmd.destination else f"{cmd.destination}@{settings.directory_domain}"
        return join("user/", word(user, "agent"))
    supervisors = getattr(ctx.svc, "supervisors", None)
    sup = await supervisors.get(ctx.session.tenant_id, cmd.destination) if supervisors is not None else None
    if sup is None:
        raise ApiError(404, "supervisor_not_found", f"no supervisor {cmd.destination} in this tenant")
    contact = (sup.contact or "").strip()
    who = f"supervisor {cmd.destination}"
    if not sup.on_duty or not contact:
        raise ApiError(409, "supervisor_unavailable", f"{who} is off duty or has no contact")
    try:
        dial = word(contact, "contact")
    except UnsafeValue:
        dial = None
    if dial is None or "/" not in contact:
        raise ApiError(409, "supervisor_unavailable", f"{who}'s contact is not a dial string")
    return dial


@verb("conference_add", idempotency="strong")
async def conference_add(ctx: VerbContext, cmd: ConferenceAdd) -> dict[str, Any]:
    svc, session, call_id = ctx.svc, ctx.session, ctx.call_id
    conf = await current_conference(ctx)
    endpoint = await _endpoint(ctx, cmd)
    settings = svc.settings
    leg = str(uuid.uuid4())
    variables = {
        "origination_uuid": leg,
        VAR_AI_CALL: call_id,
        VAR_CONFERENCE: conf.conference_id,
        VAR_MEMBER_TYPE: cmd.participant_type,
        VAR_MEMBER_DESTINATION: cmd.destination,
        "originate_timeout": str(settings.originate_timeout_s),
        "ignore_early_media": "true",
    }
    number = customer_number(session)
    if PRESENTABLE_RE.match(number or ""):
        # Whoever picks up sees which customer the conference is about.
        variables["origination_caller_id_number"] = number
    originate = command("originate", join(var_block(variables), endpoint), _conference_app(conf))
    joined = svc.conferences.expect_member(leg)
    try:
        # The job ends when the far end answers or gives up: allow the whole ring time.
        ring = settings.originate_timeout_s + settings.esl_command_timeout_s
        await ctx.switch.bgapi(originate, timeout=ring)
    except SwitchError as exc:
        svc.conferences.forget(leg, joined)
        cause = _reply_cause(exc)
        raise ApiError(
            502,
            "conference_add_failed",
            f"FreeSWITCH could not add {cmd.destination}: {cause}",
            extra={"cause": cause},
        ) from exc
    except SwitchUnavailable:
        svc.conferences.forget(leg, joined)
        raise
    wait_s = settings.esl_command_timeout_s
    member = await svc.conferences.wait_member(conf.conference_id, leg, joined, wait_s)
    if member is None:
        # Answered, yet never in the room (it hung up at once, or the room is gone).
        raise ApiError(
            502,
            "conference_add_failed",
            f"{cmd.destination} answered but did not join the conference",
            extra={"cause": "NOT_JOINED"},
        )
    await audit(
        ctx,
        "conference_add",
        conference_id=conf.conference_id,
        member_id=member.member_id,
        participant_type=cmd.participant_type,
        destination=cmd.destination,
        metadata=cmd.metadata or {},
    )
    return {"member_id": member.member_id, "call_id": leg}


# ---------------------------------------------------------------- conference_remove


@verb("conference_remove", idempotency="strong")
async def conference_remove(ctx: VerbContext, cmd: ConferenceRemove) -> dict[str, Any]:
    svc = ctx.svc
    conf = await current_conference(ctx)
    member = await svc.conferences.participant(conf.conference_id, cmd.member_id)
    fs_id = freeswitch_member_id(cmd.member_id)
    if member is None or fs_id is None:
        raise ApiError(404, "member_not_found", f"no member {cmd.member_id} in {conf.conference_id}")
    if member.type in UNREMOVABLE_TYPES:
        instead = "hangup" if member.type == "caller" else "conference_leave"
        raise ApiError(
            409, "member_not_removable", f"{cmd.member_id} is the {member.type}; use {instead} instead"
        )
    try:
        await ctx.switch.api(command("conference", conf.name, "kick", fs_id))
    except SwitchError as exc:
        if "Non-Existant" in exc.reply:  # sic: FreeSWITCH's spelling; it left meanwhile
            raise ApiError(404, "member_not_found", f"{cmd.member_id} already left") from exc
        if "not found" in exc.reply:
            raise ApiError(409, "no_conference", f"{conf.conference_id} no longer exists") from exc
        raise
    await audit(ctx, "conference_remove", conference_id=conf.conference_id, member_id=cmd.member_id)
    return {}


# ---------------------------------------------------------------- conference_leave


@verb("conference_leave", idempotency="strong")
async def conference_leave(ctx: VerbContext, cmd: ConferenceLeave) -> dict[str, Any]:
    svc, call_id = ctx.svc, ctx.call_id
    conf = await current_conference(ctx)
    await audit(ctx, "conference_leave", conference_id=conf.conference_id)
    # Marked first: the fork's end and the leg's hangup that follow are the AI leaving on purpose.
    await svc.conferences.update(conf.conference_id, ai_left="1")
    if not await svc.calls.finish(call_id, "conference_left", "ai_left_conference"):
        raise terminated(ctx)
    leg = conf.ai_leg_uuid or ""
    try:
        await ctx.switch.fork_stop(leg, FORK_BUGNAME)
    except SwitchError as exc:
        log.info("conference_leave_no_fork", call_id=call_id, reply=exc.reply)
    try:
        # Both loopback legs go; the conference goes on with the caller and the others.
        await ctx.switch.kill(leg, "NORMAL_CLEARING")
    except SwitchError as exc:
        if "No such channel" not in exc.reply:
            raise
    return {}
