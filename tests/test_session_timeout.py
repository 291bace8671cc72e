"""Issue 10: the AI session's time limit ends it with outcome `timeout`, and the call goes where
the agent's ws_disconnect_action says (hang up, or the tenant's queue)."""

from __future__ import annotations

import pytest

from bridge.store import keys
from tests.conftest import AgentServer, in_thread
from tests.helpers import (
    commands,
    ensure_default_agent,
    events,
    sandbox_with,
    sdk,
    snapshot,
    start_call,
    wait_until,
)


@pytest.fixture
async def sandbox(redis_url, redis, tmp_path):
    async with sandbox_with(redis_url, tmp_path, session_timeout_s=1) as box:
        yield box


async def test_the_time_limit_ends_the_session_and_hangs_up(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    assert (await sandbox.runtime.services.sessions.get(call.call_id)).terminal is False
    [ended] = await wait_until(lambda: events(sandbox, call.call_id, "ai_session.ended"), timeout=5)
    assert (ended.data["outcome"], ended.data["reason"]) == ("timeout", "session_limit")
    await wait_until(lambda: events(sandbox, call.call_id, "call.ended"), timeout=5)
    assert snapshot(sandbox, call.call_id)["hangup_cause"] == "NORMAL_CLEARING"
    stop = f"uuid_audio_fork {call.call_id} stop ai_fork"
    assert commands(sandbox, call.call_id, "uuid_audio_fork")[-1] == stop
    with pytest.raises(Exception) as exc:
        await in_thread(sdk(sandbox).ai_sessions.get_call_state, call.call_id, callback_token=call.token)
    assert exc.value.detail["code"] == "ai_session_terminated"


async def test_with_transfer_to_queue_the_caller_goes_to_the_queue(sandbox, agent_server: AgentServer):
    agent = await ensure_default_agent(sandbox, agent_server)
    await in_thread(sdk(sandbox).voice_agents.update, agent.id, ws_disconnect_action="transfer_to_queue")
    call = await start_call(sandbox, agent_server)
    [ended] = await wait_until(lambda: events(sandbox, call.call_id, "ai_session.ended"), timeout=5)
    assert ended.data["outcome"] == "timeout"
    [transferred] = await wait_until(lambda: events(sandbox, call.call_id, "ai_session.transferred"))
    assert transferred.data["destination"] == "support"
    assert transferred.data["metadata"] == {"reason": "session_limit"}
    assert commands(sandbox, call.call_id, "uuid_transfer") == [
        f"uuid_transfer {call.call_id} 'callcenter:support@default' inline"
    ]
    assert snapshot(sandbox, call.call_id)["hangup_cause"] is None  # the caller waits for a person


async def test_a_session_that_ended_first_is_not_timed_out(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    await in_thread(sdk(sandbox).ai_sessions.hangup, call.call_id, callback_token=call.token)
    await wait_until(lambda: events(sandbox, call.call_id, "call.ended"))
    deadlines = await sandbox.runtime.services.redis.zrange(keys.session_deadlines(), 0, -1)
    assert call.call_id not in deadlines
    [ended] = await events(sandbox, call.call_id, "ai_session.ended")
    assert ended.data["outcome"] == "hangup"
