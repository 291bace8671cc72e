"""The caller's DTMF reaches the AI as `{"type": "dtmf"}` text frames on its audio fork
(bridge/calls/dtmf.py): mod_audio_fork carries audio only, the digits come as ESL DTMF events."""

from __future__ import annotations

from typing import Any

from tests.conftest import AgentServer, in_thread
from tests.helpers import commands, end_call, sdk, start_call, wait_until


def dtmf_frames(agent_server: AgentServer, call_id: str) -> list[dict[str, Any]]:
    return [t for t in agent_server.connection(call_id)["texts"] if t.get("type") == "dtmf"]


async def test_the_callers_digits_reach_the_ai_as_text_frames(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    await sandbox.sim.press_digits(call.call_id, "5#")

    async def both() -> list[dict[str, Any]]:
        frames = dtmf_frames(agent_server, call.call_id)
        return frames if len(frames) == 2 else []

    assert await wait_until(both) == [
        {"type": "dtmf", "digit": "5", "source": "RTP"},
        {"type": "dtmf", "digit": "#", "source": "RTP"},
    ]
    sent = commands(sandbox, call.call_id, f"uuid_audio_fork ^^|{call.call_id}|send_text|ai_fork|")
    assert len(sent) == 2


async def test_digits_after_the_session_ended_are_not_relayed(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    await in_thread(
        sdk(sandbox).ai_sessions.transfer,
        call.call_id,
        destination_type="agent_queue",
        destination="support",
        callback_token=call.token,
    )
    await sandbox.sim.press_digits(call.call_id, "78")
    # The bridge handles a call's events in order: once the hangup is through, so are the digits.
    await end_call(sandbox, call.call_id)
    assert dtmf_frames(agent_server, call.call_id) == []
    assert commands(sandbox, call.call_id, f"uuid_audio_fork ^^|{call.call_id}|send_text|") == []
