"""Group 3, lead / context: set_lead_field, set_lead_status, schedule_callback.

All three act on the lead the call is about (the session's lead_id, from the dialplan, the sandbox
or `POST /api/v1/calls`). The lead must belong to the call's tenant; one that does not, or does
not exist, is 404 `lead_not_found`, never another tenant's data.
"""

from __future__ import annotations

import json
import re
from typing import Any

import structlog

from bridge.errors import ApiError
from bridge.store.callbacks import CallbackStore
from bridge.store.crm import (
    MAX_CUSTOM_FIELDS,
    MAX_CUSTOM_VALUE_BYTES,
    TERMINAL_LEAD_STATUSES,
    LeadNotFound,
    LeadStore,
    TooManyCustomFields,
)
from bridge.verbs.base import VerbContext, verb
from bridge.verbs.models import ScheduleCallback, SetLeadField, SetLeadStatus

log = structlog.get_logger(__name__)

# A number FreeSWITCH can dial and put in a caller id without quoting: the callback's `to` and
# `from` go straight into an originate string.
DIALABLE_RE = re.compile(r"^\+?[0-9]{3,20}$")


def _leads(ctx: VerbContext) -> LeadStore:
    calls = ctx.svc.calls
    return calls.leads if calls is not None else LeadStore(ctx.svc.redis)


def _lead_id(ctx: VerbContext) -> str:
    if not ctx.session.lead_id:
        raise ApiError(409, "no_lead_on_call", "this call carries no lead_id, so there is no lead to update")
    return ctx.session.lead_id


def _not_found(lead_id: str) -> ApiError:
    return ApiError(404, "lead_not_found", f"lead {lead_id} does not exist in this tenant")


@verb("set_lead_field", idempotency="last_write")
async def set_lead_field(ctx: VerbContext, cmd: SetLeadField) -> dict[str, Any]:
    lead_id = _lead_id(ctx)
    if len(json.dumps(cmd.value).encode()) > MAX_CUSTOM_VALUE_BYTES:
        raise ApiError(
            400, "value_too_large", f"value must encode to at most {MAX_CUSTOM_VALUE_BYTES} bytes of JSON"
        )
    try:
        await _leads(ctx).set_custom_field(lead_id, ctx.session.tenant_id, cmd.field, cmd.value)
    except LeadNotFound:
        raise _not_found(lead_id) from None
    except TooManyCustomFields:
        raise ApiError(
            409,
            "too_many_custom_fields",
            f"the lead already has {MAX_CUSTOM_FIELDS} custom fields; overwrite one instead",
        ) from None
    return {"lead_id": lead_id, "field": cmd.field, "value": cmd.value}


@verb("set_lead_status", idempotency="last_write")
async def set_lead_status(ctx: VerbContext, cmd: SetLeadStatus) -> dict[str, Any]:
    lead_id = _lead_id(ctx)
    leads = _leads(ctx)
    try:
        previous = await leads.set_status(lead_id, ctx.session.tenant_id, cmd.status, set_by="ai")
    except LeadNotFound:
        raise _not_found(lead_id) from None
    if cmd.status in TERMINAL_LEAD_STATUSES and previous != cmd.status:
        await _emit_lead_completed(ctx, leads, lead_id)
    return {"lead_id": lead_id, "status": cmd.status}


async def _emit_lead_completed(ctx: VerbContext, leads: LeadStore, lead_id: str) -> None:
    """`lead.completed` fires on the move into a terminal status, once per move, not per replay."""
    lead = await leads.get(lead_id, ctx.session.tenant_id)
    if lead is None:
        return
    await ctx.svc.outbox.emit(
        "lead.completed",
        ctx.session.tenant_id,
        {
            "lead_id": lead_id,
            "campaign_id": lead["campaign_id"],
            "status": lead["status"],
            "attempts": lead["attempts"],
            "call_id": ctx.call_id,
            "status_set_by": lead["status_set_by"],
        },
    )


@verb("schedule_callback", idempotency="last_write")
async def schedule_callback(ctx: VerbContext, cmd: ScheduleCallback) -> dict[str, Any]:
    session = ctx.session
    tenant_id = session.tenant_id
    if cmd.voice_agent_id:
        agent = await ctx.svc.voice_agents.get(cmd.voice_agent_id, tenant_id)
        if agent is None or agent.status != "active":
            raise ApiError(
                404,
                "voice_agent_not_found",
                f"{cmd.voice_agent_id} is not an active voice agent of this tenant",
            )
    leads = _leads(ctx)
    lead: dict[str, Any] | None = None
    if session.lead_id:
        lead = await leads.get(session.lead_id, tenant_id)
        if lead is None:
            raise _not_found(session.lead_id)
    # Our number is the one the caller dialed (inbound) or called from (outbound); the customer's
    # is the other one, unless the lead says where to reach them.
    ours, theirs = (
        (session.to, session.from_) if session.direction == "inbound" else (session.from_, session.to)
    )
    to = lead["phone"] if lead and lead.get("phone") else theirs
    if not DIALABLE_RE.match(to or ""):
        raise ApiError(
            409, "no_callback_number", "the call has no dialable number to call back (withheld caller id?)"
        )
    from_ = ours if DIALABLE_RE.match(ours or "") else ""
    # The control pipeline already answers a replayed Idempotency-Key from its cache; keying the
    # booking on (call_id, key) as well means a replay that races past the cache books nothing new.
    idem_key = getattr(ctx, "idempotency_key", None)
    callback, created = await CallbackStore(ctx.svc.redis).create(
        tenant_id=tenant_id,
        call_id=session.call_id,
        to=to,
        from_=from_,
        scheduled_at=cmd.scheduled_at,
        lead_id=session.lead_id,
        campaign_id=session.campaign_id or (lead or {}).get("campaign_id"),
        voice_agent_id=cmd.voice_agent_id,
        origin_voice_agent_id=session.voice_agent_id,
        reason=cmd.reason,
        idempotency_key=idem_key if isinstance(idem_key, str) and idem_key else None,
    )
    if created:
        log.info(
            "callback_scheduled", callback_id=callback.id, call_id=session.call_id, at=callback.scheduled_at
        )
        if lead is not None:
            try:
                await leads.set_status(lead["id"], tenant_id, "callback", set_by="ai")
            except LeadNotFound:
                pass
    return {"callback_id": callback.id, "scheduled_at": callback.scheduled_at}
