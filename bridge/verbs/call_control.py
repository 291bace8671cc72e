"""Group 1, the call itself: transfer, hangup, log, set_disposition, get_call_state.

hangup and a queue transfer end the AI session at once (CallManager.finish: once, whoever wins,
and it fires ai_session.ended). A transfer to a number or a SIP URI ends it only when the far end
answers, and gives the caller back to the AI when it does not (bridge.calls.transfers). The others
only read or annotate the session.
"""

from __future__ import annotations

import json
import re
from typing import Any

import structlog

from bridge.calls.commands import Arg, command, inline_dialplan, join, var_block, word
from bridge.calls.conferences import ADDED_TYPES
from bridge.calls.manager import FORK_BUGNAME
from bridge.calls.sessions import Session
from bridge.calls.switch import queue_dialplan
from bridge.calls.transfers import DIALING
from bridge.config import Settings
from bridge.errors import ApiError, SwitchError, SwitchUnavailable
from bridge.verbs.base import VerbContext, verb
from bridge.verbs.common import PENDING, append_log, audit, now_iso, require_answered, terminated
from bridge.verbs.models import GetCallState, Hangup, Log, SetDisposition, Transfer

log = structlog.get_logger(__name__)

# A caller id FreeSWITCH can present as is; anything else (withheld, "anonymous") is left out.
PRESENTABLE_RE = re.compile(r"^\+?[0-9]{3,20}$")


# ---------------------------------------------------------------- transfer


def customer_number(session: Session) -> str:
    """The number of the person on the call (inbound: who called; outbound: who we called)."""
    return session.from_ if session.direction == "inbound" else session.to


def transfer_dialplan(settings: Settings, session: Session, cmd: Transfer) -> Arg:
    """The inline dialplan for uuid_transfer (freeswitch.md §2.1). Bridges end in `park` so a
    failed bridge leaves the caller on the switch instead of hanging them up; `m:^:` because the
    bridge's {variables} carry commas."""
    if cmd.destination_type == "agent_queue":
        return queue_dialplan(cmd.destination, settings.callcenter_domain)
    variables: dict[str, str] = {}
    number = customer_number(session)
    if PRESENTABLE_RE.match(number or ""):
        # The agent who picks up sees which customer it is.
        variables["origination_caller_id_number"] = number
    variables["ignore_early_media"] = "true"
    # How long the far end may ring before the caller comes back to the AI (NO_ANSWER).
    variables["originate_timeout"] = str(settings.transfer_ring_timeout_s)
    endpoint = dial_endpoint(settings, cmd.destination_type, cmd.destination)
    return inline_dialplan(
        ("set", "continue_on_fail=true"),
        ("set", "hangup_after_bridge=true"),
        ("bridge", join(var_block(variables), endpoint)),
        ("park", ""),
    )


def dial_endpoint(settings: Settings, destination_type: str, destination: str) -> Arg:
    """A number through the PSTN gateway, or a SIP URI through the SIP profile."""
    where = word(destination, "destination")
    if destination_type == "e164":
        return join("sofia/gateway/", word(settings.gateway, "gateway"), "/", where)
    return join("sofia/", word(settings.sip_profile, "sip profile"), "/", where)


@verb("transfer", idempotency="strong")
async def transfer(ctx: VerbContext, cmd: Transfer) -> dict[str, Any]:
    require_answered(ctx)
    svc, call_id = ctx.svc, ctx.call_id
    metadata = cmd.metadata or {}
    # The whole record already: the switch's answer (bridge.calls.transfers) may come before
    # this verb moves the field to `dialing`.
    pending = json.dumps(
        {
            "state": "pending",
            "destination_type": cmd.destination_type,
            "destination": cmd.destination,
            "metadata": metadata,
        }
    )
    claimed = await svc.sessions.compare_and_set(call_id, "transfer", "", pending)
    if claimed == -1:
        raise ApiError(404, "ai_session_not_found", f"no AI session {call_id}")
    if claimed == -2:
        raise terminated(ctx)
    if claimed == 0:
        raise ApiError(409, "transfer_in_progress", "a transfer of this call is already under way")

    dialplan = transfer_dialplan(svc.settings, ctx.session, cmd)
    fork_stopped = False
    try:
        # Media bugs survive a transfer: the AI must stop hearing the call before it leaves.
        try:
            await ctx.switch.fork_stop(call_id, FORK_BUGNAME)
            fork_stopped = True
        except SwitchError as exc:
            log.info("transfer_no_fork_to_stop", call_id=call_id, reply=exc.reply)
        await ctx.switch.api(command("uuid_transfer", call_id, dialplan, "inline"))
    except (SwitchError, SwitchUnavailable):
        await svc.sessions.compare_and_set(call_id, "transfer", pending, "")
        if fork_stopped:
            await reopen_fork(ctx)
        raise

    record = {
        "destination_type": cmd.destination_type,
        "destination": cmd.destination,
        "metadata": metadata,
        "transferred_at": now_iso(),
    }
    await audit(
        ctx, "transfer", destination_type=cmd.destination_type, destination=cmd.destination, metadata=metadata
    )
    if cmd.destination_type != "agent_queue":
        # Ringing: bridge.calls.transfers ends the session when the far end answers, or gives the
        # caller back to the AI. Its events may already have come: then the field moved on.
        dialing = json.dumps({**record, "state": DIALING})
        await svc.sessions.compare_and_set(call_id, "transfer", pending, dialing)
        await svc.sessions.update(call_id, fork_connected=False)
        return {}
    outcome = f"transferred_{cmd.destination_type}"
    await svc.sessions.update(call_id, transfer=json.dumps(record), fork_connected=False)
    await svc.outbox.emit(
        "ai_session.transferred",
        ctx.session.tenant_id,
        {
            "call_id": call_id,
            "destination_type": cmd.destination_type,
            "destination": cmd.destination,
            "metadata": metadata,
        },
    )
    if not await svc.calls.finish(call_id, outcome, "ai_transfer"):
        # The caller hung up in the same instant: the switch took the transfer, the session's
        # outcome is whatever ended it first.
        log.info("transfer_after_session_ended", call_id=call_id)
    return {}


async def reopen_fork(ctx: VerbContext) -> None:
    """The switch refused the command after the AI's fork was stopped: give the AI its audio back
    (bridge.calls.manager.reopen_fork), best effort, since the verb reports the refusal anyway."""
    try:
        await ctx.svc.calls.reopen_fork(ctx.session)
    except Exception:
        log.exception("fork_reopen_failed", call_id=ctx.call_id)


# ---------------------------------------------------------------- hangup


@verb("hangup", idempotency="strong")
async def hangup(ctx: VerbContext, cmd: Hangup) -> dict[str, Any]:
    svc, call_id = ctx.svc, ctx.call_id
    # Logged first: ai_session.ended carries the audit log.
    await audit(ctx, "hangup", metadata=cmd.metadata or {})
    # The session ends before the channel does, so the CHANNEL_HANGUP_COMPLETE our uuid_kill
    # causes cannot record the hangup as the caller's.
    if not await svc.calls.finish(call_id, "hangup", "ai_hangup"):
        raise terminated(ctx)
    conf_id = ctx.session.conference_id
    if conf_id and conf_id != PENDING:
        # Hanging up ends the call for everyone the AI brought in, not only for the caller (a
        # conference_leave is how the AI leaves the others talking).
        for member in await svc.conferences.participants(conf_id):
            if member.type in ADDED_TYPES:
                await svc.calls.kill_quietly(ctx.session, "NORMAL_CLEARING", member.call_id)
    try:
        await svc.switches.of(ctx.session).kill(call_id, "NORMAL_CLEARING")
    except SwitchError as exc:
        if "No such channel" not in exc.reply:
            raise
        log.info("hangup_channel_already_gone", call_id=call_id)
    return {}


# ---------------------------------------------------------------- log, disposition, state


@verb("log", idempotency="read")
async def log_entry(ctx: VerbContext, cmd: Log) -> dict[str, Any]:
    # The AI's own keys win, `ts` included: it is the AI's breadcrumb.
    await append_log(ctx, {"ts": now_iso(), **cmd.metadata})
    return {}


@verb("set_disposition", idempotency="last_write")
async def set_disposition(ctx: VerbContext, cmd: SetDisposition) -> dict[str, Any]:
    # Disposition and notes are one pair: a later disposition without notes clears stale notes.
    await ctx.svc.sessions.update(
        ctx.call_id, disposition=cmd.disposition, notes=cmd.notes, disposition_source="ai"
    )
    return {}


@verb("get_call_state", idempotency="read")
async def get_call_state(ctx: VerbContext, cmd: GetCallState) -> dict[str, Any]:
    conf_id = ctx.session.conference_id
    if not conf_id or conf_id == PENDING:
        state = ctx.session.call_state()
        state["conference_id"] = None  # a conference_start still under way is not a conference yet
        return state
    # In a conference: who FreeSWITCH says is in the room, by member type.
    members = await ctx.svc.conferences.participants(conf_id)
    return ctx.session.call_state([p.type for p in members])
