"""The AI session's time limit (yotel-docs §9.21): a hard cap counted from the moment the AI got
the call (its fork opened), `BRIDGE_SESSION_TIMEOUT_S`, 30 minutes by default, 0 for none.

When it is reached the session ends with outcome `timeout` (reason `session_limit`), the AI's fork
is stopped, and the call goes where the agent's `ws_disconnect_action` sends a call whose AI is
gone: `hangup` hangs the caller up, `transfer_to_queue` hands them to the tenant's queue
(`BRIDGE_DEFAULT_QUEUE`) and fires `ai_session.transferred` too. The deadlines live in a Redis
zset (bridge.store.due), so a restart does not lose them and one instance acts on each.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from bridge.errors import SwitchError, SwitchUnavailable
from bridge.store import keys
from bridge.store.due import DueSet

if TYPE_CHECKING:
    from bridge.calls.manager import CallManager
    from bridge.calls.voice_agents import VoiceAgent

log = structlog.get_logger(__name__)

OUTCOME = "timeout"
REASON = "session_limit"


class SessionTimeouts:
    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.svc = calls.svc
        self.limit_s = calls.settings.session_timeout_s
        self.due = DueSet(self.svc.redis, keys.session_deadlines())
        calls.after_connect.append(self._schedule)
        calls.on_finish.append(self.due.cancel)

    def start(self) -> None:
        if self.limit_s > 0:
            interval = min(1.0, max(0.05, self.limit_s / 20))
            self.svc.spawn(self.due.serve(self.expire, interval, "session-timeouts"), name="session-timeouts")

    async def _schedule(self, call_id: str, agent: VoiceAgent, token: Any) -> None:
        if self.limit_s > 0:
            await self.due.schedule(call_id, time.time() + self.limit_s)

    async def expire(self, call_id: str) -> None:
        svc = self.svc
        session = await svc.sessions.get(call_id)
        if session is None or session.terminal:
            return
        agent = await svc.voice_agents.get(session.voice_agent_id or "")
        action = agent.ws_disconnect_action if agent is not None else "hangup"
        if not await self.calls.finish(call_id, OUTCOME, REASON):
            return  # it ended some other way meanwhile
        log.info("ai_session_timed_out", call_id=call_id, limit_s=self.limit_s, action=action)
        fork_uuid = session.extra.get("ai_fork_uuid") or call_id
        try:
            await svc.switches.of(session).fork_stop(fork_uuid)
        except (SwitchError, SwitchUnavailable) as exc:
            log.info("session_timeout_no_fork", call_id=call_id, error=str(exc))
        if action != "transfer_to_queue" or not await self.calls.to_default_queue(session, REASON):
            await self.calls.kill_quietly(session, "NORMAL_CLEARING")
