"""The control pipeline's refusals, each with its status and code, through the official SDK where the
SDK can send the request and raw HTTP where it cannot (bad JSON, no Idempotency-Key...)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from yotel.errors import (
    AISessionTerminated,
    APIError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionError,
    RateLimitError,
    ValidationError,
)

from bridge.store import keys
from bridge.verbs.base import REGISTRY
from tests.conftest import AgentServer, in_thread
from tests.helpers import commands, control, events, http, sdk, snapshot, start_call, wait_until


async def session_of(sandbox: Any, call_id: str) -> Any:
    return await sandbox.runtime.services.sessions.get(call_id)


# ---------------------------------------------------------------- credentials and reach


async def test_every_answer_carries_a_request_id(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ok = await control(sandbox, call.call_id, {"event": "get_call_state"}, auth=call.token)
    bad = await control(sandbox, call.call_id, {"event": "nope"}, auth=call.token)
    assert ok.status == 200 and bad.status == 400
    assert ok.headers["X-Request-Id"].startswith("req_") and bad.headers["X-Request-Id"].startswith("req_")


async def test_missing_and_unknown_credentials_are_401(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    unknown = await control(sandbox, call.call_id, {"event": "get_call_state"}, auth="yt_cb_" + "0" * 26)
    assert (unknown.status, unknown.code) == (401, "invalid_token")
    with pytest.raises(AuthenticationError):
        await in_thread(
            sdk(sandbox).ai_sessions.get_call_state, call.call_id, callback_token="yt_cb_" + "1" * 26
        )


async def test_expired_callback_token_is_401(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    services = sandbox.runtime.services
    short = await services.tokens.mint(call_id=call.call_id, tenant_id="acme", ttl_s=0.05)
    await asyncio.sleep(0.1)
    with pytest.raises(AuthenticationError) as exc:
        await in_thread(sdk(sandbox).ai_sessions.mute, call.call_id, callback_token=short.token)
    assert exc.value.status_code == 401 and exc.value.detail["code"] == "token_expired"
    assert commands(sandbox, call.call_id, "uuid_audio ") == []


async def test_revoked_callback_token_is_401(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    revoked = await http(
        sandbox, "POST", f"/api/v1/ai-sessions/{call.call_id}/revoke_token", {"token": call.token}
    )
    assert revoked.status == 200 and revoked.body["ok"] is True
    with pytest.raises(AuthenticationError) as exc:
        await in_thread(sdk(sandbox).ai_sessions.hold, call.call_id, callback_token=call.token)
    assert exc.value.detail["code"] == "token_revoked"
    assert commands(sandbox, call.call_id, "uuid_hold") == []


async def test_a_token_of_another_call_is_403(sandbox, agent_server: AgentServer):
    first = await start_call(sandbox, agent_server)
    second = await start_call(sandbox, agent_server)
    with pytest.raises(PermissionError) as exc:
        await in_thread(sdk(sandbox).ai_sessions.mute, second.call_id, callback_token=first.token)
    assert exc.value.status_code == 403 and exc.value.detail["code"] == "token_call_mismatch"
    assert commands(sandbox, second.call_id, "uuid_audio ") == []


async def test_a_tenant_key_without_the_control_scope_is_403(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    reader, _ = await sandbox.runtime.services.tenants.create_key("acme", ["ai_sessions:read"])
    with pytest.raises(PermissionError) as exc:
        await in_thread(sdk(sandbox, reader).ai_sessions.get_call_state, call.call_id)
    assert exc.value.detail["code"] == "missing_scope"
    assert exc.value.detail["scope"] == "ai_sessions:control_admin"
    # With the scope, a tenant key drives any call of its tenant.
    admin, _ = await sandbox.runtime.services.tenants.create_key("acme", ["ai_sessions:control_admin"])
    state = await in_thread(sdk(sandbox, admin).ai_sessions.get_call_state, call.call_id)
    assert state["result"]["state"] == "in_progress"


async def test_another_tenants_call_is_the_same_404_as_an_unknown_one(sandbox, agent_server: AgentServer):
    """Issue 13, finding 7: a 403 here told a key of one tenant which call ids exist in another."""
    call = await start_call(sandbox, agent_server)
    other, _ = await sandbox.runtime.services.tenants.create_key("globex", ["ai_sessions:control_admin"])
    replies = []
    for call_id in (call.call_id, "5f0c3c1e-0000-4000-8000-000000000000"):
        with pytest.raises(NotFoundError) as exc:
            await in_thread(sdk(sandbox, other).ai_sessions.hangup, call_id)
        replies.append((exc.value.status_code, exc.value.detail["code"]))
    assert replies == [(404, "ai_session_not_found")] * 2
    assert commands(sandbox, call.call_id, "uuid_kill") == []
    assert (await session_of(sandbox, call.call_id)).terminal is False


async def test_a_callback_token_on_another_tenants_call_is_403_like_on_any_other_call(
    sandbox, agent_server: AgentServer
):
    """The fence the contract states (403) holds for the AI's token, decided before any lookup."""
    ours = await start_call(sandbox, agent_server)
    theirs = await start_call(sandbox, agent_server)
    await sandbox.runtime.services.redis.hset(keys.session(theirs.call_id), "tenant_id", "globex")
    for call_id in (theirs.call_id, "5f0c3c1e-0000-4000-8000-000000000000"):
        reply = await control(sandbox, call_id, {"event": "hangup"}, auth=ours.token)
        assert (reply.status, reply.code) == (403, "token_call_mismatch")


async def test_an_unknown_call_is_404(sandbox):
    with pytest.raises(NotFoundError) as exc:
        await in_thread(sdk(sandbox).ai_sessions.get_call_state, "5f0c3c1e-0000-4000-8000-000000000000")
    assert exc.value.detail["code"] == "ai_session_not_found"


# ---------------------------------------------------------------- rate limit


async def test_eleven_requests_in_one_second_are_rate_limited(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    replies = [
        await control(sandbox, call.call_id, {"event": "get_call_state"}, auth=call.token) for _ in range(11)
    ]
    assert [r.status for r in replies[:10]] == [200] * 10
    limited = replies[10]
    assert limited.status == 429 and limited.code == "rate_limited"
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after >= 1
    assert limited.body["detail"]["retry_after_s"] == retry_after
    assert limited.headers["X-Request-Id"]

    # The SDK reads Retry-After (with its own retry switched off it raises at once).
    with pytest.raises(RateLimitError) as exc:
        await in_thread(
            sdk(sandbox, retry_on_429=False).ai_sessions.send_dtmf,
            call.call_id,
            digits="1",
            callback_token=call.token,
        )
    assert exc.value.retry_after >= 1
    assert commands(sandbox, call.call_id, "uuid_send_dtmf") == []


async def test_the_limit_is_per_call(sandbox, agent_server: AgentServer):
    first = await start_call(sandbox, agent_server)
    second = await start_call(sandbox, agent_server)
    for _ in range(10):
        assert (
            await control(sandbox, first.call_id, {"event": "get_call_state"}, auth=first.token)
        ).status == 200
    assert (
        await control(sandbox, first.call_id, {"event": "get_call_state"}, auth=first.token)
    ).status == 429
    assert (
        await control(sandbox, second.call_id, {"event": "get_call_state"}, auth=second.token)
    ).status == 200


# ---------------------------------------------------------------- the body


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"event": "teleport"}, "event"),
        ({"digits": "1"}, "event"),
        ({"event": "send_dtmf"}, "digits"),
        ({"event": "send_dtmf", "digits": "12x"}, "digits"),
        (
            {"event": "play_audio", "audio_url": "https://cdn.example.com/a.wav", "tts_text": "hi"},
            "play_audio",
        ),
        ({"event": "play_audio"}, "play_audio"),
        ({"event": "play_audio", "audio_url": "file:///etc/passwd"}, "audio_url"),
        ({"event": "hold", "moh_url": "http://cdn.example.com/a b.wav"}, "moh_url"),
        ({"event": "transfer", "destination_type": "e164", "destination": "5550123"}, "transfer"),
        ({"event": "transfer", "destination_type": "agent", "destination": "x"}, "destination_type"),
        (
            {
                "event": "transfer",
                "destination_type": "sip_uri",
                "destination": "sip:a,sofia/gateway/x@h.com",
            },
            "transfer",
        ),
        ({"event": "mute", "target": "everyone"}, "target"),
        ({"event": "mute", "volume": 3}, "volume"),
        ({"event": "log"}, "metadata"),
    ],
)
async def test_invalid_bodies_are_400_with_field_errors(sandbox, agent_server: AgentServer, body, where):
    call = await start_call(sandbox, agent_server)
    before = commands(sandbox, call.call_id)
    reply = await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="k-1")
    assert reply.status == 400 and reply.code == "validation_error", reply.body
    errors = reply.body["detail"]["errors"]
    assert errors and all({"loc", "msg", "type"} <= set(e) for e in errors)
    assert any(where in [str(p) for p in e["loc"]] for e in errors), errors
    assert commands(sandbox, call.call_id) == before


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"mute"'])
async def test_a_body_that_is_not_a_json_object_is_400(sandbox, agent_server: AgentServer, raw):
    call = await start_call(sandbox, agent_server)
    reply = await control(sandbox, call.call_id, None, auth=call.token, raw=raw)
    assert reply.status == 400 and reply.code == "invalid_json"


async def test_tts_text_is_422_tts_not_supported(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    with pytest.raises(ValidationError) as exc:
        await in_thread(
            sdk(sandbox).ai_sessions.play_audio, call.call_id, tts_text="Hello", callback_token=call.token
        )
    assert exc.value.status_code == 422 and exc.value.detail["code"] == "tts_not_supported"
    assert commands(sandbox, call.call_id, "uuid_broadcast") == []


async def test_a_bad_idempotency_key_is_400(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    reply = await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token, idempotency_key="a b")
    assert reply.status == 400 and reply.code == "invalid_idempotency_key"


async def test_a_verb_without_a_handler_is_501(sandbox, agent_server: AgentServer, monkeypatch):
    # Whichever Group 2 verbs have landed, one without a handler must answer 501.
    monkeypatch.delitem(REGISTRY, "barge", raising=False)
    call = await start_call(sandbox, agent_server)
    with pytest.raises(APIError) as exc:
        await in_thread(
            sdk(sandbox).ai_sessions.barge, call.call_id, target_call_id="x", callback_token=call.token
        )
    assert exc.value.status_code == 501 and exc.value.detail["code"] == "verb_not_implemented"


# ---------------------------------------------------------------- state machine


async def test_verbs_on_a_terminal_session_are_409_ai_session_terminated(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    await in_thread(ai.hangup, call.call_id, callback_token=call.token, idempotency_key="bye-1")
    for verb, kwargs in (
        ("mute", {}),
        ("hangup", {}),
        ("get_call_state", {}),
        ("log", {"metadata": {"a": 1}}),
        ("transfer", {"destination_type": "agent_queue", "destination": "tier1"}),
    ):
        with pytest.raises(AISessionTerminated) as exc:
            await in_thread(getattr(ai, verb), call.call_id, callback_token=call.token, **kwargs)
        assert exc.value.status_code == 409 and exc.value.detail["code"] == "ai_session_terminated"
    # A replay of the hangup's own key still gets its 200.
    replay = await in_thread(ai.hangup, call.call_id, callback_token=call.token, idempotency_key="bye-1")
    assert replay["ok"] is True
    assert len(commands(sandbox, call.call_id, "uuid_kill")) == 1


async def test_a_second_transfer_is_409(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    services = sandbox.runtime.services
    # A transfer in flight (claimed, not finished): the second one is refused.
    assert await services.sessions.compare_and_set(call.call_id, "transfer", "", '{"state":"pending"}') == 1
    with pytest.raises(ConflictError) as exc:
        await in_thread(
            sdk(sandbox).ai_sessions.transfer,
            call.call_id,
            destination_type="agent_queue",
            destination="tier1",
            callback_token=call.token,
        )
    assert exc.value.detail["code"] == "transfer_in_progress"
    assert commands(sandbox, call.call_id, "uuid_transfer") == []
    await services.sessions.compare_and_set(call.call_id, "transfer", '{"state":"pending"}', "")
    ai = sdk(sandbox).ai_sessions
    await in_thread(
        ai.transfer,
        call.call_id,
        destination_type="e164",
        destination="+14155550123",
        callback_token=call.token,
    )
    # While it rings it is still in flight; once the far end answered, the session is over.
    await wait_until(lambda: events(sandbox, call.call_id, "ai_session.ended"))
    with pytest.raises(AISessionTerminated):
        await in_thread(
            ai.transfer,
            call.call_id,
            destination_type="e164",
            destination="+14155550124",
            callback_token=call.token,
        )
    assert len(commands(sandbox, call.call_id, "uuid_transfer")) == 1


async def test_preconditions_of_hold_mute_and_recording(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    cid, tok = call.call_id, call.token

    async def conflict(verb: str, **kwargs: Any) -> str:
        with pytest.raises(ConflictError) as exc:
            await in_thread(getattr(ai, verb), cid, callback_token=tok, **kwargs)
        return exc.value.detail["code"]

    assert await conflict("unhold") == "not_held"
    assert await conflict("unmute") == "not_muted"
    assert await conflict("unmute", target="agent") == "not_muted"
    assert await conflict("recording_resume") == "recording_not_paused"
    await asyncio.sleep(1.0)  # stay under 10 requests per second
    await in_thread(ai.hold, cid, callback_token=tok)
    assert await conflict("hold") == "already_held"
    await in_thread(ai.recording_pause, cid, callback_token=tok)
    assert await conflict("recording_pause") == "recording_not_active"
    assert len(commands(sandbox, cid, "uuid_hold")) == 1
    assert len(commands(sandbox, cid, "uuid_record")) == 2  # start (at answer) and one pause


async def test_pause_without_a_recording_is_409(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    await sandbox.runtime.services.sessions.update(call.call_id, recording_state="off")
    with pytest.raises(ConflictError) as exc:
        await in_thread(sdk(sandbox).ai_sessions.recording_pause, call.call_id, callback_token=call.token)
    assert exc.value.detail["code"] == "recording_not_active"


# ---------------------------------------------------------------- FreeSWITCH refuses


async def test_a_refused_hold_is_502_and_changes_nothing(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    cid = call.call_id
    sandbox.sim.fail_next(f"uuid_displace {cid} start", "-ERR Cannot displace session!")
    with pytest.raises(APIError) as exc:
        await in_thread(sdk(sandbox).ai_sessions.hold, cid, callback_token=call.token)
    assert exc.value.status_code == 502
    assert exc.value.detail["code"] == "switch_command_failed" and exc.value.detail["request_id"]
    # The hold that did go through was taken back, and the session says what is true.
    assert commands(sandbox, cid)[-3:] == [
        f"uuid_hold {cid}",
        f"uuid_displace {cid} start local_stream://moh 0 lm",
        f"uuid_hold off {cid}",
    ]
    assert snapshot(sandbox, cid)["held"] is False
    assert (await session_of(sandbox, cid)).held is False
    state = await in_thread(sdk(sandbox).ai_sessions.get_call_state, cid, callback_token=call.token)
    assert state["result"]["is_held"] is False
    # Nothing was cached: the same request can simply be tried again.
    await in_thread(sdk(sandbox).ai_sessions.hold, cid, callback_token=call.token)
    assert snapshot(sandbox, cid)["held"] is True


async def test_a_refused_mute_is_502_and_the_party_stays_unmuted(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    sandbox.sim.fail_next("uuid_audio ", "-ERR Operation Failed")
    with pytest.raises(APIError) as exc:
        await in_thread(sdk(sandbox).ai_sessions.mute, call.call_id, callback_token=call.token)
    assert exc.value.status_code == 502
    assert (await session_of(sandbox, call.call_id)).muted_caller is False
    assert snapshot(sandbox, call.call_id)["muted"]["read"] is False


async def test_a_refused_transfer_is_502_and_the_ai_gets_its_call_back(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    cid = call.call_id
    sandbox.sim.fail_next(f"uuid_transfer {cid}", "-ERR No such channel!")
    ai = sdk(sandbox).ai_sessions
    with pytest.raises(APIError) as exc:
        await in_thread(
            ai.transfer,
            cid,
            destination_type="agent_queue",
            destination="tier1",
            callback_token=call.token,
            idempotency_key="xfer-1",
        )
    assert exc.value.status_code == 502
    session = await session_of(sandbox, cid)
    assert session.terminal is False and session.transfer is None
    assert await events(sandbox, cid, "ai_session.transferred") == []
    # The fork stopped before the transfer is opened again, with a fresh metadata frame.
    resumed = await agent_server.wait_for(
        lambda: [c for c in agent_server.connections if c["texts"] and c["texts"][0].get("call_id") == cid][
            1:
        ]
    )
    frame = resumed[0]["texts"][0]
    assert frame["resumed"] is True and frame["callback_token"].startswith("yt_cb_")
    assert snapshot(sandbox, cid)["audio_fork"] is not None
    # Still live: the same request (same key, nothing was cached) now goes through.
    await in_thread(
        ai.transfer,
        cid,
        destination_type="agent_queue",
        destination="tier1",
        callback_token=call.token,
        idempotency_key="xfer-1",
    )
    assert (await session_of(sandbox, cid)).outcome == "transferred_agent_queue"
