"""Issue 10, "Transfer that fails": a transfer to a number or a SIP URI ends the AI session only
when the far end answers; busy, unanswered or refused, the caller comes back to the AI."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import AgentServer, in_thread
from tests.helpers import commands, events, sandbox_with, sdk, snapshot, start_call, wait_until

NUMBER = "+14155550123"
SIP_URI = "sip:agent@pbx.example.com"


@pytest.fixture
async def sandbox(redis_url, redis, tmp_path):
    async with sandbox_with(redis_url, tmp_path, transfer_ring_timeout_s=1) as box:
        yield box


def _endpoint(destination_type: str) -> str:
    return f"sofia/gateway/pstn/{NUMBER}" if destination_type == "e164" else f"sofia/lab/{SIP_URI}"


async def _transfer(sandbox: Any, call: Any, destination_type: str) -> dict[str, Any]:
    destination = NUMBER if destination_type == "e164" else SIP_URI
    return await in_thread(
        sdk(sandbox).ai_sessions.transfer,
        call.call_id,
        destination_type=destination_type,
        destination=destination,
        metadata={"intent": "sales"},
        callback_token=call.token,
    )


async def _session(sandbox: Any, call_id: str) -> Any:
    return await sandbox.runtime.services.sessions.get(call_id)


@pytest.mark.parametrize("destination_type", ["e164", "sip_uri"])
@pytest.mark.parametrize(
    ("far_end", "cause"),
    [
        ({"cause": "USER_BUSY"}, "USER_BUSY"),
        ({"cause": "CALL_REJECTED"}, "CALL_REJECTED"),
        ({"cause": None, "answer_delay_s": 3.0}, "NO_ANSWER"),  # rings past the 1 s ring timeout
    ],
    ids=["busy", "refused", "no_answer"],
)
async def test_a_failed_transfer_gives_the_caller_back_to_the_ai(
    sandbox, agent_server: AgentServer, destination_type: str, far_end: dict[str, Any], cause: str
):
    sandbox.sim.set_originate_outcome(_endpoint(destination_type), **far_end)
    call = await start_call(sandbox, agent_server)
    call_id = call.call_id
    await _transfer(sandbox, call, destination_type)

    # A new fork, with a metadata frame that says why the AI is back.
    def reopened() -> Any:
        conns = [c for c in agent_server.connections if c["texts"] and c["texts"][0]["call_id"] == call_id]
        return conns[1]["texts"][0] if len(conns) > 1 else None

    frame = await agent_server.wait_for(reopened, timeout=8)
    assert frame["resumed"] is True
    assert frame["transfer_failed"] == {
        "destination_type": destination_type,
        "destination": NUMBER if destination_type == "e164" else SIP_URI,
        "hangup_cause": cause,
    }
    assert frame["callback_token"] != call.token

    session = await _session(sandbox, call.call_id)
    assert (session.state, session.outcome, session.transfer) == ("in_progress", None, None)
    assert snapshot(sandbox, call.call_id)["audio_fork"] is not None
    [failed] = await events(sandbox, call.call_id, "ai_session.transfer_failed")
    assert failed.data["hangup_cause"] == cause and failed.data["metadata"] == {"intent": "sales"}
    assert await events(sandbox, call.call_id, "ai_session.transferred") == []
    assert await events(sandbox, call.call_id, "ai_session.ended") == []

    # The AI drives the call again with its new token, and may transfer again.
    token = frame["callback_token"]
    state = await in_thread(sdk(sandbox).ai_sessions.get_call_state, call.call_id, callback_token=token)
    assert state["result"]["state"] == "in_progress"
    sandbox.sim.set_originate_outcome(_endpoint(destination_type), None)
    call.token = token
    await _transfer(sandbox, call, destination_type)
    ended = await wait_until(lambda: events(sandbox, call.call_id, "ai_session.ended"), timeout=5)
    assert ended[0].data["outcome"] == f"transferred_{destination_type}"


async def test_the_outcome_waits_for_the_far_end_to_answer(sandbox, agent_server: AgentServer):
    sandbox.sim.set_originate_outcome(_endpoint("e164"), None, answer_delay_s=0.5)
    call = await start_call(sandbox, agent_server)
    await _transfer(sandbox, call, "e164")
    ringing = await _session(sandbox, call.call_id)
    assert (ringing.state, ringing.outcome) == ("in_progress", None)
    assert ringing.transfer["state"] == "dialing"
    assert await events(sandbox, call.call_id, "ai_session.transferred") == []

    [transferred] = await wait_until(lambda: events(sandbox, call.call_id, "ai_session.transferred"))
    assert transferred.data["destination"] == NUMBER

    # The event is emitted just before the session is ended: it may be seen a moment earlier.
    async def ended() -> Any:
        s = await _session(sandbox, call.call_id)
        return s if s.state == "ended" else None

    session = await wait_until(ended, timeout=5)
    assert (session.state, session.outcome) == ("ended", "transferred_e164")
    assert session.transfer["state"] == "connected"
    assert snapshot(sandbox, call.call_id)["bridged_to"] is not None


async def test_a_second_transfer_while_ringing_is_refused(sandbox, agent_server: AgentServer):
    sandbox.sim.set_originate_outcome(_endpoint("e164"), None, answer_delay_s=0.8)
    call = await start_call(sandbox, agent_server)
    await _transfer(sandbox, call, "e164")
    with pytest.raises(Exception) as exc:
        await _transfer(sandbox, call, "e164")
    assert exc.value.detail["code"] == "transfer_in_progress"


async def test_the_caller_hanging_up_while_it_rings_ends_the_session_as_a_hangup(sandbox, agent_server):
    sandbox.sim.set_originate_outcome(_endpoint("e164"), None, answer_delay_s=3.0)
    call = await start_call(sandbox, agent_server)
    await _transfer(sandbox, call, "e164")
    await sandbox.sim.hangup(call.call_id)
    [ended] = await wait_until(lambda: events(sandbox, call.call_id, "ai_session.ended"))
    assert ended.data["outcome"] == "hangup"
    assert await events(sandbox, call.call_id, "ai_session.transfer_failed") == []


async def test_the_recording_goes_on_after_a_queue_transfer_and_says_where_the_ai_left(
    sandbox, agent_server: AgentServer
):
    """Issue 10: the recording after the session ends is kept (the queue agent's part is part of
    the call's record), and call.recording_ready says where the AI's part ends."""
    call = await start_call(sandbox, agent_server)
    await asyncio.sleep(0.3)
    await in_thread(
        sdk(sandbox).ai_sessions.transfer,
        call.call_id,
        destination_type="agent_queue",
        destination="support",
        callback_token=call.token,
    )
    await wait_until(lambda: events(sandbox, call.call_id, "ai_session.ended"))
    assert commands(sandbox, call.call_id, f"uuid_record {call.call_id} stop") == []
    await asyncio.sleep(0.5)  # the caller waits in the queue, still recorded
    await sandbox.sim.hangup(call.call_id)
    [ready] = await wait_until(lambda: events(sandbox, call.call_id, "call.recording_ready"))
    assert ready.data["covers"] == "call"
    offset = ready.data["ai_session_ended_offset_s"]
    assert 0.2 < offset < ready.data["duration_ms"] / 1000 - 0.3


@pytest.mark.parametrize(
    "stored",
    [
        '{"state":"pending"}',
        '{"state":"dialing","destination":7}',
        '{"state":"dialing","destination_type":"e164"}',
    ],
)
async def test_a_transfer_field_the_bridge_did_not_write_is_not_followed(
    sandbox, agent_server: AgentServer, stored: str
):
    """A PARK or BRIDGE of the call must not fail (and so end the call) on such a record."""
    call = await start_call(sandbox, agent_server)
    services = sandbox.runtime.services
    assert await services.sessions.compare_and_set(call.call_id, "transfer", "", stored) == 1
    watch = services.calls.transfers
    assert await watch._dialing(call.call_id) is None
    session = await _session(sandbox, call.call_id)
    assert session.state == "in_progress"
