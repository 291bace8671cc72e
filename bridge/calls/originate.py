"""Outbound AI calls: `POST /api/v1/calls` and scheduled callbacks dial through here."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import TYPE_CHECKING

import structlog

from bridge.calls.commands import Command, command, join, literal, var_block, word
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
    from bridge.config import Settings
    from bridge.services import Services

log = structlog.get_logger(__name__)


async def require_references(
    svc: Services,
    tenant_id: str,
    *,
    voice_agent_id: str | None = None,
    campaign_id: str | None = None,
    lead_id: str | None = None,
) -> None:
    """404 for an id that is not this tenant's (another tenant's is as unknown as a made-up one)."""
    if voice_agent_id and await svc.voice_agents.get(voice_agent_id, tenant_id) is None:
        raise ApiError(404, "voice_agent_not_found", f"no voice agent {voice_agent_id} in this tenant")
    if campaign_id and await svc.calls.campaigns.get(campaign_id, tenant_id) is None:
        raise ApiError(404, "campaign_not_found", f"no campaign {campaign_id} in this tenant")
    if lead_id and await svc.calls.leads.get(lead_id, tenant_id) is None:
        raise ApiError(404, "lead_not_found", f"no lead {lead_id} in this tenant")


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
    box = svc.switches.pick()  # SwitchUnavailable (503) when no box is connected
    await require_references(
        svc, tenant_id, voice_agent_id=voice_agent_id, campaign_id=campaign_id, lead_id=lead_id
    )
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
    # Built before anything is reserved: a value the switch cannot take is refused (400) with
    # no slot held and no session left behind.
    command = _dial_command(
        svc.settings, call_id, tenant_id, to, from_,
        agent_id=agent.id, campaign_id=campaign_id, lead_id=lead_id,
    )  # fmt: skip
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
        switch_id=box.id,
    )
    # Counted on its box now, not at its CHANNEL_CREATE: a burst of calls must not all pick one box.
    box.channels.add(call_id)
    await svc.sessions.create(session)
    svc.metrics.session_started(call_id, box=box.id, voice_agent=agent.id)
    await svc.redis.set(keys.call_owner(call_id), svc.holder_id, ex=keys.CALL_OWNER_TTL_S)
    await svc.calls.emit_call_started(session)
    svc.spawn(_dial(svc, session, command), name=f"originate:{call_id}")
    return call_id


def _dial_command(
    settings: Settings,
    call_id: str,
    tenant_id: str,
    to: str,
    from_: str,
    *,
    agent_id: str,
    campaign_id: str | None,
    lead_id: str | None,
) -> Command:
    variables = {
        "origination_uuid": call_id,
        "origination_caller_id_number": from_,
        "originate_timeout": str(settings.originate_timeout_s),
        "ignore_early_media": "true",
        VAR_TENANT: tenant_id,
        VAR_DIRECTION: "outbound",
        VAR_VOICE_AGENT: agent_id,
    }
    if campaign_id:
        variables[VAR_CAMPAIGN] = campaign_id
    if lead_id:
        variables[VAR_LEAD] = lead_id
    endpoint = join("sofia/gateway/", word(settings.gateway, "gateway"), "/", word(to, "to"))
    return command("originate", join(var_block(variables), endpoint), literal("&park()"))


async def _dial(svc: Services, session: Session, command: Command) -> None:
    try:
        await svc.switches.of(session).bgapi(command, timeout=svc.settings.originate_timeout_s + 15)
    except (SwitchError, SwitchUnavailable) as exc:
        reply = exc.reply if isinstance(exc, SwitchError) else "SWITCH_UNAVAILABLE"
        cause = reply.removeprefix("-ERR").strip().split()[0] if reply.startswith("-ERR") else reply
        log.warning("originate_failed", call_id=session.call_id, cause=cause)
        current = await svc.sessions.get(session.call_id) or session
        await svc.calls.call_ended(current, cause or "NORMAL_TEMPORARY_FAILURE")
