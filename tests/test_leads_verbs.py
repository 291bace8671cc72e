"""The Group 3 handlers called directly on a stored session (no HTTP, no switch)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from bridge.api.auth import Principal
from bridge.api.errors import ApiError
from bridge.calls.sessions import Session, SessionStore
from bridge.calls.voice_agents import VoiceAgentCreate, VoiceAgentStore
from bridge.config import Settings
from bridge.services import Services
from bridge.store.callbacks import CallbackStore
from bridge.store.crm import LeadStore
from bridge.verbs import leads as verbs
from bridge.verbs.base import REGISTRY, VerbContext
from bridge.verbs.models import VERB_ADAPTER


@dataclass
class KeyedContext(VerbContext):
    """A context carrying the request's Idempotency-Key, as the control pipeline may pass it."""

    idempotency_key: str | None = None


@pytest.fixture
async def svc(settings: Settings, redis: aioredis.Redis) -> Services:
    services = Services(settings, redis)
    services.sessions = SessionStore(redis)
    services.voice_agents = VoiceAgentStore(redis)
    return services


async def _ctx(svc: Services, *, key: str | None = None, **session: Any) -> VerbContext:
    fields: dict[str, Any] = {
        "call_id": f"call-{time.monotonic_ns()}",
        "tenant_id": "acme",
        "direction": "inbound",
        "from_": "+14155550100",
        "to": "+14155550199",
        "state": "in_progress",
        "started_at": time.time(),
        **session,
    }
    stored = Session(**fields)
    await svc.sessions.create(stored)
    principal = Principal("callback_token", stored.tenant_id, frozenset({"voice_agent:control"}))
    if key is not None:
        return KeyedContext(svc, stored, principal, "req_test", idempotency_key=key)
    return VerbContext(svc, stored, principal, "req_test")


async def _lead(svc: Services, tenant: str = "acme", **doc: Any) -> str:
    lead_id = f"lead_{time.monotonic_ns()}"
    await LeadStore(svc.redis).put(
        {"id": lead_id, "tenant_id": tenant, "campaign_id": "cmp_1", "phone": "+442079460958", **doc}
    )
    return lead_id


def cmd(body: dict[str, Any]) -> Any:
    return VERB_ADAPTER.validate_python(body)


def in_(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def _raises(coro: Any, status: int, code: str) -> ApiError:
    with pytest.raises(ApiError) as exc:
        await coro
    assert (exc.value.status, exc.value.code) == (status, code), exc.value
    return exc.value


def test_the_three_verbs_are_registered_last_write():
    for name in ("set_lead_field", "set_lead_status", "schedule_callback"):
        assert REGISTRY[name].idempotency == "last_write"


async def test_set_lead_field_patches_one_custom_field(svc):
    lead_id = await _lead(svc, custom_fields={"keep": 1})
    ctx = await _ctx(svc, lead_id=lead_id)
    body = {"event": "set_lead_field", "field": "preferred_callback_window", "value": "weekday_evenings"}
    result = await verbs.set_lead_field(ctx, cmd(body))
    assert result == {"lead_id": lead_id, "field": "preferred_callback_window", "value": "weekday_evenings"}
    lead = await LeadStore(svc.redis).get(lead_id, "acme")
    assert lead["custom_fields"] == {"keep": 1, "preferred_callback_window": "weekday_evenings"}
    await verbs.set_lead_field(ctx, cmd({"event": "set_lead_field", "field": "budget", "value": None}))
    assert (await LeadStore(svc.redis).get(lead_id, "acme"))["custom_fields"]["budget"] is None
    await _raises(
        verbs.set_lead_field(ctx, cmd({"event": "set_lead_field", "field": "x", "value": "y" * 20000})),
        400,
        "value_too_large",
    )


async def test_lead_verbs_need_a_lead_of_the_calls_tenant(svc):
    no_lead = await _ctx(svc)
    field = cmd({"event": "set_lead_field", "field": "a", "value": 1})
    status = cmd({"event": "set_lead_status", "status": "completed"})
    await _raises(verbs.set_lead_field(no_lead, field), 409, "no_lead_on_call")
    await _raises(verbs.set_lead_status(no_lead, status), 409, "no_lead_on_call")
    foreign = await _ctx(svc, lead_id=await _lead(svc, tenant="globex"))
    await _raises(verbs.set_lead_field(foreign, field), 404, "lead_not_found")
    await _raises(verbs.set_lead_status(foreign, status), 404, "lead_not_found")
    dangling = await _ctx(svc, lead_id="lead_nope")
    await _raises(verbs.set_lead_field(dangling, field), 404, "lead_not_found")
    await _raises(
        verbs.schedule_callback(dangling, cmd({"event": "schedule_callback", "scheduled_at": in_(60)})),
        404,
        "lead_not_found",
    )


async def test_set_lead_status_records_the_ai_and_fires_lead_completed_once(svc):
    lead_id = await _lead(svc)
    ctx = await _ctx(svc, lead_id=lead_id)
    assert await verbs.set_lead_status(ctx, cmd({"event": "set_lead_status", "status": "connected"})) == {
        "lead_id": lead_id,
        "status": "connected",
    }
    completed = cmd({"event": "set_lead_status", "status": "completed"})
    await verbs.set_lead_status(ctx, completed)
    await verbs.set_lead_status(ctx, completed)  # a retry: last write wins, no second event
    lead = await LeadStore(svc.redis).get(lead_id, "acme")
    assert lead["status"] == "completed" and lead["status_set_by"] == "ai"
    events = [e for e in await svc.outbox.read_all() if e.event_type == "lead.completed"]
    assert len(events) == 1
    assert events[0].data["lead_id"] == lead_id and events[0].data["status"] == "completed"
    assert events[0].data["campaign_id"] == "cmp_1" and events[0].tenant_id == "acme"
    with pytest.raises(ValidationError):
        cmd({"event": "set_lead_status", "status": "qualified"})


async def test_schedule_callback_with_a_lead_calls_the_lead_and_marks_it(svc):
    agent = await svc.voice_agents.create(
        "acme", VoiceAgentCreate(name="tier2", ws_url="ws://127.0.0.1:1/ws")
    )
    lead_id = await _lead(svc)
    ctx = await _ctx(svc, lead_id=lead_id, campaign_id="cmp_9", voice_agent_id="va_origin")
    at = datetime.now(UTC) + timedelta(hours=2)
    body = {"event": "schedule_callback", "scheduled_at": at.isoformat(), "reason": "asked for Tuesday"}
    result = await verbs.schedule_callback(ctx, cmd({**body, "voice_agent_id": agent.id}))
    assert result["callback_id"].startswith("cb_") and len(result["callback_id"]) == 29
    assert result["scheduled_at"].endswith("Z")
    assert abs(datetime.fromisoformat(result["scheduled_at"]) - at) < timedelta(milliseconds=1)
    cb = await CallbackStore(svc.redis).get(result["callback_id"], "acme")
    assert cb.public() | {"id": "", "created_at": "", "updated_at": ""} == {
        "id": "",
        "tenant_id": "acme",
        "call_id": ctx.call_id,
        "lead_id": lead_id,
        "campaign_id": "cmp_9",
        "to": "+442079460958",
        "from": "+14155550199",
        "voice_agent_id": agent.id,
        "reason": "asked for Tuesday",
        "scheduled_at": result["scheduled_at"],
        "state": "scheduled",
        "attempts": 0,
        "result_call_id": None,
        "error": None,
        "next_attempt_at": None,
        "dialed_at": None,
        "created_at": "",
        "updated_at": "",
    }
    assert cb.origin_voice_agent_id == "va_origin"
    lead = await LeadStore(svc.redis).get(lead_id, "acme")
    assert lead["status"] == "callback" and lead["status_set_by"] == "ai"


async def test_schedule_callback_without_a_lead_calls_the_caller_back(svc):
    inbound = await _ctx(svc)
    result = await verbs.schedule_callback(
        inbound, cmd({"event": "schedule_callback", "scheduled_at": in_(60)})
    )
    cb = await CallbackStore(svc.redis).get(result["callback_id"])
    assert (cb.to, cb.from_, cb.lead_id, cb.voice_agent_id) == ("+14155550100", "+14155550199", None, None)
    outbound = await _ctx(svc, direction="outbound", from_="+14155550001", to="+14155550002")
    result = await verbs.schedule_callback(
        outbound, cmd({"event": "schedule_callback", "scheduled_at": in_(60)})
    )
    cb = await CallbackStore(svc.redis).get(result["callback_id"])
    assert (cb.to, cb.from_) == ("+14155550002", "+14155550001")
    withheld = await _ctx(svc, from_="anonymous")
    await _raises(
        verbs.schedule_callback(withheld, cmd({"event": "schedule_callback", "scheduled_at": in_(60)})),
        409,
        "no_callback_number",
    )


async def test_schedule_callback_voice_agent_must_be_an_active_agent_of_the_tenant(svc):
    ctx = await _ctx(svc)
    theirs = await svc.voice_agents.create("globex", VoiceAgentCreate(name="x", ws_url="ws://127.0.0.1:1/ws"))
    paused = await svc.voice_agents.create("acme", VoiceAgentCreate(name="p", ws_url="ws://127.0.0.1:1/ws"))
    await svc.voice_agents.save(paused.model_copy(update={"status": "paused"}))
    for va_id in ("va_unknown", theirs.id, paused.id):
        body = {"event": "schedule_callback", "scheduled_at": in_(60), "voice_agent_id": va_id}
        await _raises(verbs.schedule_callback(ctx, cmd(body)), 404, "voice_agent_not_found")
    assert await CallbackStore(svc.redis).list("acme") == []


async def test_schedule_callback_time_must_be_future_and_zoned():
    for bad in (in_(-5), datetime.now().replace(microsecond=0).isoformat(), "tomorrow"):
        with pytest.raises(ValidationError):
            cmd({"event": "schedule_callback", "scheduled_at": bad})


async def test_a_replayed_idempotency_key_books_one_callback(svc):
    ctx = await _ctx(svc, key="3f2c6a1e-0000-4000-8000-000000000001")
    body = cmd({"event": "schedule_callback", "scheduled_at": in_(60)})
    first = await verbs.schedule_callback(ctx, body)
    again = await verbs.schedule_callback(ctx, body)
    assert first == again
    assert len(await CallbackStore(svc.redis).list("acme", call_id=ctx.call_id)) == 1
    unkeyed = await _ctx(svc)
    a = await verbs.schedule_callback(unkeyed, body)
    b = await verbs.schedule_callback(unkeyed, body)
    assert a["callback_id"] != b["callback_id"]
