"""Outbound AI calls: `POST /api/v1/calls` and scheduled callbacks dial through here."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import TYPE_CHECKING

import structlog

from bridge.calls.manager import (
    VAR_CAMPAIGN,
    VAR_DIRECTION,
    VAR_LEAD,
    VAR_TENANT,
    VAR_VOICE_AGENT,
    NoVoiceAgent,
)
from bridge.calls.sessions import Session
from bridge.errors import ApiError, SwitchError, SwitchUnavailable
from bridge.store import keys

if TYPE_CHECKING:
    from bridge.services import Services

log = structlog.get_logger(__name__)


async def originate_ai_call(
    svc: Services,
    *,
    tenant_id: str,
    to: str,
    from_: str,
    voice_agent_id: str | None = None,
    campaign_id: str | None = None,
    lead_id: str | None = None,
) -> str:
    """Reserve a slot, create the session and dial. Returns the call_id (the channel uuid).

    The dial itself runs as a background job: its outcome (answer, or -ERR <cause>) arrives
    later as events, so the caller gets the call_id at once, like Twilio's Calls API."""
    if svc.esl is None or not svc.esl.connected:
        raise SwitchUnavailable("no ESL connection to FreeSWITCH")
    try:
        agent = await svc.calls.resolve_agent(
            tenant_id, flow_voice_agent_id=voice_agent_id, campaign_id=campaign_id
        )
    except NoVoiceAgent:
        raise ApiError(
            424,
            "no_voice_agent_configured",
            "no voice agent resolves for this call: pass voice_agent_id, pin one on the campaign, "
            "or set a tenant default",
        ) from None
    if voice_agent_id and agent.id != voice_agent_id:
        raise ApiError(404, "voice_agent_not_found", "voice_agent_id is not an active agent of this tenant")
    if agent.subprotocol not in svc.settings.fork_subprotocols:
        raise ApiError(
            424,
            "subprotocol_mismatch",
            f"this switch's audio fork speaks {', '.join(svc.settings.fork_subprotocols)}, "
            f"the agent asks for {agent.subprotocol}",
        )
    call_id = str(uuidlib.uuid4())
    if not await svc.voice_agents.acquire_slot(agent, call_id):
        raise ApiError(
            429,
            "max_concurrent_exceeded",
            f"voice agent {agent.id} already has {agent.max_concurrent} live calls",
            headers={"Retry-After": "5"},
            extra={"retry_after_s": 5},
        )
    session = Session(
        call_id=call_id,
        tenant_id=tenant_id,
        direction="outbound",
        from_=from_,
        to=to,
        voice_agent_id=agent.id,
        campaign_id=campaign_id,
        lead_id=lead_id,
        ws_url=agent.ws_url,
        subprotocol=agent.subprotocol,
        token_lifetime=agent.token_lifetime,
        started_at=time.time(),
    )
    await svc.sessions.create(session)
    await svc.redis.set(keys.call_owner(call_id), svc.settings.instance_id, ex=keys.CALL_OWNER_TTL_S)
    await svc.calls.emit_call_started(session)
    variables = {
        "origination_uuid": call_id,
        "origination_caller_id_number": from_,
        "originate_timeout": str(svc.settings.originate_timeout_s),
        "ignore_early_media": "true",
        VAR_TENANT: tenant_id,
        VAR_DIRECTION: "outbound",
        VAR_VOICE_AGENT: agent.id,
    }
    if campaign_id:
        variables[VAR_CAMPAIGN] = campaign_id
    if lead_id:
        variables[VAR_LEAD] = lead_id
    channel_vars = ",".join(f"{k}={v}" for k, v in variables.items())
    command = f"originate {{{channel_vars}}}sofia/gateway/{svc.settings.gateway}/{to} &park()"
    svc.spawn(_dial(svc, session, command), name=f"originate:{call_id}")
    return call_id


async def _dial(svc: Services, session: Session, command: str) -> None:
    try:
        await svc.switch.bgapi(command, timeout=svc.settings.originate_timeout_s + 15)
    except (SwitchError, SwitchUnavailable) as exc:
        reply = exc.reply if isinstance(exc, SwitchError) else "SWITCH_UNAVAILABLE"
        cause = reply.removeprefix("-ERR").strip().split()[0] if reply.startswith("-ERR") else reply
        log.warning("originate_failed", call_id=session.call_id, cause=cause)
        current = await svc.sessions.get(session.call_id) or session
        await svc.calls.call_ended(current, cause or "NORMAL_TEMPORARY_FAILURE")
