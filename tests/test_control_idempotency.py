"""Idempotency-Key on the control endpoint: replays, concurrent duplicates, reuse with another body,
the 60 s class, the keyless class, what is (not) cached, and scoping per call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from yotel.errors import ValidationError

from bridge.store import keys
from tests.conftest import AgentServer, in_thread
from tests.helpers import commands, control, sandbox_with, sdk, snapshot, start_call


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    # A short action window (play_audio, whisper, send_dtmf) so its expiry is testable.
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000, idempotency_short_ttl_s=1) as box:
        yield box


async def test_a_replayed_key_returns_the_cached_answer(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    first = await control(sandbox, call.call_id, {"event": "hold"}, auth=call.token, idempotency_key="k-hold")
    again = await control(sandbox, call.call_id, {"event": "hold"}, auth=call.token, idempotency_key="k-hold")
    assert first.status == again.status == 200
    assert again.body == first.body  # dispatched_at included: it is the first answer
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["X-Request-Id"] != first.headers["X-Request-Id"]
    assert len(commands(sandbox, call.call_id, "uuid_hold")) == 1

    # The SDK with an explicit key sees the same body.
    replay = await in_thread(
        sdk(sandbox).ai_sessions.hold, call.call_id, callback_token=call.token, idempotency_key="k-hold"
    )
    assert replay == first.body
    assert len(commands(sandbox, call.call_id, "uuid_hold")) == 1


async def test_a_cached_refusal_is_replayed_too(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    first = await control(sandbox, call.call_id, {"event": "unhold"}, auth=call.token, idempotency_key="k-u")
    assert (first.status, first.code) == (409, "not_held")
    await control(sandbox, call.call_id, {"event": "hold"}, auth=call.token, idempotency_key="k-h")
    again = await control(sandbox, call.call_id, {"event": "unhold"}, auth=call.token, idempotency_key="k-u")
    assert (again.status, again.body) == (409, first.body)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert snapshot(sandbox, call.call_id)["held"] is True


async def test_concurrent_duplicates_send_one_command(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    replies = await asyncio.gather(
        *[
            control(
                sandbox,
                call.call_id,
                {"event": "hold", "moh_url": "https://cdn.example.com/moh.wav"},
                auth=call.token,
                idempotency_key="same-key",
            )
            for _ in range(8)
        ]
    )
    assert [r.status for r in replies] == [200] * 8
    assert len({r.body["dispatched_at"] for r in replies}) == 1
    assert sum(1 for r in replies if r.headers.get("Idempotent-Replayed") == "true") == 7
    assert len(commands(sandbox, call.call_id, "uuid_hold")) == 1
    assert len(commands(sandbox, call.call_id, "uuid_displace")) == 1


async def test_concurrent_duplicates_through_the_sdk(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    replies = await asyncio.gather(
        *[
            in_thread(
                ai.send_dtmf, call.call_id, digits="42", callback_token=call.token, idempotency_key="d-1"
            )
            for _ in range(5)
        ]
    )
    assert all(r == replies[0] for r in replies)
    assert commands(sandbox, call.call_id, "uuid_send_dtmf") == [f"uuid_send_dtmf {call.call_id} 42"]


async def test_the_same_key_with_another_body_is_422(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    await in_thread(ai.send_dtmf, call.call_id, digits="1", callback_token=call.token, idempotency_key="k")
    with pytest.raises(ValidationError) as exc:
        await in_thread(
            ai.send_dtmf, call.call_id, digits="2", callback_token=call.token, idempotency_key="k"
        )
    assert exc.value.status_code == 422 and exc.value.detail["code"] == "idempotency_key_reused"
    with pytest.raises(ValidationError):
        await in_thread(ai.mute, call.call_id, callback_token=call.token, idempotency_key="k")
    assert commands(sandbox, call.call_id, "uuid_send_dtmf") == [f"uuid_send_dtmf {call.call_id} 1"]
    assert commands(sandbox, call.call_id, "uuid_audio ") == []


async def test_a_body_that_means_the_same_verb_is_the_same_body(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    first = await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token, idempotency_key="m")
    again = await control(
        sandbox, call.call_id, {"target": "caller", "event": "mute"}, auth=call.token, idempotency_key="m"
    )
    assert again.status == 200 and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_action_verbs_dedupe_only_within_their_window(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    body = {"event": "send_dtmf", "digits": "9"}
    await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="dtmf")
    await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="dtmf")
    assert len(commands(sandbox, call.call_id, "uuid_send_dtmf")) == 1
    await asyncio.sleep(1.2)  # the window is 1 s in this sandbox (60 s by default)
    late = await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="dtmf")
    assert late.status == 200 and "Idempotent-Replayed" not in late.headers
    assert len(commands(sandbox, call.call_id, "uuid_send_dtmf")) == 2


async def test_strong_verbs_keep_their_answer_past_the_action_window(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    await control(sandbox, call.call_id, {"event": "hold"}, auth=call.token, idempotency_key="h")
    await asyncio.sleep(1.2)
    again = await control(sandbox, call.call_id, {"event": "hold"}, auth=call.token, idempotency_key="h")
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    ttl = await sandbox.runtime.services.redis.ttl(keys.idempotency(call.call_id, "h"))
    assert 86000 < ttl <= 86400


async def test_without_a_key_an_action_runs_again(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    url = "https://cdn.example.com/a.wav"
    first = await control(sandbox, call.call_id, {"event": "play_audio", "audio_url": url}, auth=call.token)
    second = await control(sandbox, call.call_id, {"event": "play_audio", "audio_url": url}, auth=call.token)
    assert first.status == second.status == 200
    assert first.body["result"]["playback_id"] != second.body["result"]["playback_id"]
    assert len(commands(sandbox, call.call_id, "uuid_broadcast")) == 2


async def test_log_and_get_call_state_ignore_the_key(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    for _ in range(2):
        reply = await control(
            sandbox,
            call.call_id,
            {"event": "log", "metadata": {"n": 1}},
            auth=call.token,
            idempotency_key="L",
        )
        assert reply.status == 200 and "Idempotent-Replayed" not in reply.headers
    logs = await sandbox.runtime.services.sessions.logs(call.call_id)
    assert len(logs) == 2
    # The same key on another verb class is not "reused": the read verbs never looked at it.
    state = await control(
        sandbox, call.call_id, {"event": "get_call_state"}, auth=call.token, idempotency_key="L"
    )
    assert state.status == 200 and "Idempotent-Replayed" not in state.headers
    assert not await sandbox.runtime.services.redis.exists(keys.idempotency(call.call_id, "L"))


async def test_switch_failures_are_not_cached(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    sandbox.sim.fail_next(f"uuid_send_dtmf {call.call_id}", "-ERR Operation failed")
    body = {"event": "send_dtmf", "digits": "5"}
    failed = await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="retry-me")
    assert failed.status == 502
    retried = await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="retry-me")
    assert retried.status == 200 and "Idempotent-Replayed" not in retried.headers
    assert len(commands(sandbox, call.call_id, "uuid_send_dtmf")) == 2


async def test_keys_are_scoped_per_call(sandbox, agent_server: AgentServer):
    first = await start_call(sandbox, agent_server)
    second = await start_call(sandbox, agent_server)
    a = await control(sandbox, first.call_id, {"event": "hold"}, auth=first.token, idempotency_key="shared")
    b = await control(sandbox, second.call_id, {"event": "hold"}, auth=second.token, idempotency_key="shared")
    assert a.status == b.status == 200
    assert "Idempotent-Replayed" not in b.headers and b.body["call_id"] == second.call_id
    assert snapshot(sandbox, first.call_id)["held"] and snapshot(sandbox, second.call_id)["held"]


async def test_a_replay_still_needs_a_valid_credential(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    other = await start_call(sandbox, agent_server)
    await control(sandbox, call.call_id, {"event": "hold"}, auth=call.token, idempotency_key="mine")
    stolen = await control(sandbox, call.call_id, {"event": "hold"}, auth=other.token, idempotency_key="mine")
    assert (stolen.status, stolen.code) == (403, "token_call_mismatch")


async def test_python_is_the_judge_when_the_admission_script_disagrees(sandbox, agent_server: AgentServer):
    # Make the script's coarse check refuse every tenant key: auth.py still accepts the admin key,
    # so the request goes through the plain rate-limit-and-claim script and behaves the same.
    from bridge.api.routes.control import PIPELINE_KEY

    pipeline = sandbox.runtime._runner.app[PIPELINE_KEY]
    pipeline.admitter.scope = "nobody:has_this"
    call = await start_call(sandbox, agent_server)
    first = await control(sandbox, call.call_id, {"event": "hold"}, idempotency_key="fallback")
    again = await control(sandbox, call.call_id, {"event": "hold"}, idempotency_key="fallback")
    assert first.status == again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(commands(sandbox, call.call_id, "uuid_hold")) == 1
