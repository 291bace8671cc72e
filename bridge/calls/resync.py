"""After the ESL link (re)connects: sessions whose channel vanished while it was down are ended,
and voice-agent slots held by calls that are no longer live are freed, so a crash or an outage
cannot leak either."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import structlog

from bridge.calls.commands import command
from bridge.errors import SwitchError, SwitchUnavailable
from bridge.store import keys

if TYPE_CHECKING:
    from bridge.calls.manager import CallManager
    from bridge.calls.pool import SwitchBox

log = structlog.get_logger(__name__)


class Resync:
    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.svc = calls.svc
        self.settings = calls.settings

    async def run(self, box: SwitchBox | None = None) -> None:
        """Sessions on `box` (default: the first) whose channel vanished while its events went
        unhandled (the link was down, or another bridge held the box and died) are ended; slots
        held by calls that are no longer live are freed (a crash cannot leak them)."""
        pool = self.svc.switches
        box = box or pool.default
        try:
            raw = await box.switch.api(command("show", "channels", "as", "json"))
        except (SwitchError, SwitchUnavailable) as exc:
            log.error("resync_failed", box=box.id, error=str(exc))
            return
        try:
            rows = json.loads(raw).get("rows") or []
        except ValueError:
            log.error("resync_unparseable_channels", head=raw[:120])
            return
        alive = {row.get("uuid") for row in rows}
        box.channels = {uuid for uuid in alive if isinstance(uuid, str)}
        metrics = self.svc.metrics
        for call_id in await self.svc.sessions.live_call_ids():
            if call_id in alive:
                if not metrics.counts_session(call_id):
                    await self._count_live(call_id, box)
                continue
            session = await self.svc.sessions.get(call_id)
            if session is None:
                await self.svc.redis.srem(keys.live_sessions(), call_id)
                continue
            if session.switch_id != box.id and (session.switch_id or box is not pool.default):
                continue  # another box's call
            if (
                session.direction == "outbound"
                and not session.answered
                and time.time() - session.started_at < (self.settings.originate_timeout_s + 5)
            ):
                continue  # still dialling: the channel may not exist yet
            log.warning("session_channel_vanished", call_id=call_id)
            await self.calls.call_ended(session, "LOSE_RACE" if not session.answered else "UNKNOWN")
        await self.free_orphan_slots()
        log.info("resynced", box=box.id, channels=len(alive))

    async def _count_live(self, call_id: str, box: SwitchBox) -> None:
        """A live call on a box this bridge now handles (a takeover, a restart) that it did not
        start itself: bridge_live_sessions counts it here from now on."""
        session = await self.svc.sessions.get(call_id)
        if session is None or session.terminal:
            return
        if session.switch_id == box.id or (not session.switch_id and box is self.svc.switches.default):
            self.svc.metrics.session_started(call_id, box=box.id, voice_agent=session.voice_agent_id)

    async def free_orphan_slots(self) -> None:
        live = await self.svc.sessions.live_call_ids()
        async for key in self.svc.redis.scan_iter(match=keys.voice_agent_active("*"), count=500):
            holders = await self.svc.redis.smembers(key)
            stale = [c for c in holders if c not in live]
            if stale:
                await self.svc.redis.srem(key, *stale)
                log.warning("freed_orphan_slots", key=key, calls=stale)
