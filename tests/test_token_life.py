"""Issue 4: the callback token's life over the audio fork, and a dropped AI WebSocket."""

from __future__ import annotations

import asyncio

import pytest
import yotel

from tests.conftest import AgentServer, in_thread
from tests.helpers import events, sdk, snapshot, start_call, wait_until


@pytest.fixture
async def sandbox(redis_url, redis, tmp_path):
    from tests.helpers import sandbox_with

    # minute 25 -> 1.0 s, minute 30 -> 2.0 s
    async with sandbox_with(redis_url, tmp_path, token_ttl_s=2, token_refresh_at_s=1) as box:
        yield box


async def test_token_refresh_frame_arrives_and_the_unswapped_token_stops_at_expiry(
    sandbox, agent_server: AgentServer
):
    call = await start_call(sandbox, agent_server)
    client = sdk(sandbox)

    def refresh_frames() -> list[dict]:
        texts = agent_server.connection(call.call_id)["texts"]
        return [t for t in texts if t.get("type") == "token_refresh"]

    frames = await agent_server.wait_for(refresh_frames, timeout=5)
    new_token = frames[0]["callback_token"]
    assert new_token.startswith("yt_cb_") and new_token != call.token
    assert frames[0]["expires_at"].endswith("Z")

    # Both tokens work between the refresh and the old token's expiry.
    for token in (call.token, new_token):
        state = await in_thread(client.ai_sessions.get_call_state, call.call_id, callback_token=token)
        assert state["result"]["state"] == "in_progress"

    await asyncio.sleep(2.2)  # past the first token's 30-minute mark (compressed)
    with pytest.raises(yotel.errors.AuthenticationError) as exc:
        await in_thread(client.ai_sessions.get_call_state, call.call_id, callback_token=call.token)
    assert exc.value.detail["code"] == "token_expired"
    # The call goes on, and the swapped-in token (or a newer one) still drives it.
    latest = refresh_frames()[-1]["callback_token"]
    state = await in_thread(client.ai_sessions.get_call_state, call.call_id, callback_token=latest)
    assert state["result"]["state"] == "in_progress"
    assert any("send_text" in c for c in snapshot(sandbox, call.call_id)["commands"])


async def test_ai_websocket_drop_hangs_up_by_default(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    await agent_server.connection(call.call_id)["ws"].close()
    svc = sandbox.runtime.services

    async def ended():
        session = await svc.sessions.get(call.call_id)
        return session if session and session.terminal else None

    session = await wait_until(ended)
    assert session.outcome == "error" and session.reason == "ws_disconnected"
    await wait_until(lambda: _gone(sandbox, call.call_id))
    assert await events(sandbox, call.call_id, "ai_session.ended")


async def _gone(sandbox, call_id: str) -> bool:
    snap = snapshot(sandbox, call_id)
    return snap is None or snap.get("hangup_cause") is not None
