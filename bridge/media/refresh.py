"""The callback token's life over the audio fork.

`30min_with_refresh` agents get a new token at minute 25 (Settings.token_refresh_at_s) as a
`token_refresh` text frame; the old token keeps working until its own expiry. Due refreshes
live in a Redis zset rather than in timers, so a bridge restart does not lose them and only
one instance (the one whose ZREM wins) sends each frame.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from bridge.calls.manager import FORK_BUGNAME
from bridge.calls.sessions import iso
from bridge.errors import SwitchError, SwitchUnavailable
from bridge.store import keys
from bridge.store.due import DueSet

if TYPE_CHECKING:
    from bridge.calls.voice_agents import VoiceAgent
    from bridge.media.tokens import CallbackToken
    from bridge.services import Services

log = structlog.get_logger(__name__)

class TokenRefresher:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.due = DueSet(svc.redis, keys.token_refresh_due())

    async def start(self) -> None:
        self.svc.calls.after_connect.append(self.schedule_first)
        interval = min(1.0, max(0.05, self.svc.settings.token_refresh_at_s / 20))
        self.svc.spawn(self.due.serve(self.refresh, interval, "token-refresh"), name="token-refresh")

    async def schedule_first(self, call_id: str, agent: VoiceAgent, token: CallbackToken) -> None:
        if agent.token_lifetime != "30min_with_refresh":
            return
        await self.schedule(call_id, time.time() + self.svc.settings.token_refresh_at_s)

    async def schedule(self, call_id: str, at: float) -> None:
        await self.due.schedule(call_id, at)

    async def refresh(self, call_id: str) -> bool:
        """Mint and send a new token for a live session; schedule the next refresh."""
        svc = self.svc
        session = await svc.sessions.get(call_id)
        if session is None or session.terminal or session.token_lifetime != "30min_with_refresh":
            return False
        token = await svc.tokens.mint(
            call_id=call_id, tenant_id=session.tenant_id, ttl_s=svc.settings.token_ttl_s
        )
        frame = {"type": "token_refresh", "callback_token": token.token, "expires_at": iso(token.expires_at)}
        try:
            # After conference_start the AI's fork runs on its conference leg, not on the call.
            fork_uuid = session.extra.get("ai_fork_uuid") or call_id
            await svc.switches.of(session).fork_send_text(fork_uuid, frame, bugname=FORK_BUGNAME)
        except (SwitchError, SwitchUnavailable) as exc:
            log.warning("token_refresh_not_sent", call_id=call_id, error=str(exc))
            if isinstance(exc, SwitchUnavailable):  # try again shortly; the old token is still valid
                await self.schedule(call_id, time.time() + 1.0)
            return False
        log.info("token_refreshed", call_id=call_id, jti=token.jti)
        await self.schedule(call_id, time.time() + svc.settings.token_refresh_at_s)
        return True
