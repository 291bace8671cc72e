"""Monitor relationships: an AI session listening to another channel through a second audio fork.

`monitor_start` attaches a stereo fork (bug name `monitor_<AI call_id>`) to the target channel,
pointing at the AI's own ws_url; this module keeps the relationship in Redis so every bridge
instance sees it: keys.monitors(ai_call_id) maps target -> JSON, keys.monitored_by(target) is the
reverse index. A relationship ends with monitor_stop, barge, the AI's session ending (the forks it
opened are stopped) or the target's hangup (FreeSWITCH drops the bug with the channel; only the
record is left to remove).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import structlog

from bridge.calls.sessions import now_iso
from bridge.errors import SwitchError, SwitchUnavailable
from bridge.esl.protocol import Event
from bridge.store import keys
from bridge.store.reads import point_reads
from bridge.store.redis import RedisClient, multi

if TYPE_CHECKING:
    from bridge.services import Services

log = structlog.get_logger(__name__)

MODES = ("listen", "listen_and_whisper")
STARTING = "starting"
ACTIVE = "active"


def bugname_for(ai_call_id: str) -> str:
    """One monitor fork per AI and target: the bug name says whose it is (mod_audio_fork allows
    64 characters; `monitor_` + a uuid is 44)."""
    return f"monitor_{ai_call_id}"


@dataclass(slots=True)
class Monitor:
    call_id: str  # the AI session that listens
    target_call_id: str  # the channel the fork is on
    mode: str  # listen | listen_and_whisper
    bugname: str
    conference_id: str | None
    started_at: float
    state: str = STARTING  # starting (claimed, fork not yet accepted) | active

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Monitor:
        data = json.loads(raw)
        return cls(
            call_id=data["call_id"],
            target_call_id=data["target_call_id"],
            mode=data.get("mode", "listen"),
            bugname=data.get("bugname") or bugname_for(data["call_id"]),
            conference_id=data.get("conference_id"),
            started_at=float(data.get("started_at") or 0.0),
            state=data.get("state", ACTIVE),
        )


class MonitorStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def claim(self, monitor: Monitor) -> bool:
        """Record a monitor that is being started; False when this AI already monitors the target
        (one HSETNX decides, so two concurrent monitor_starts cannot both open a fork)."""
        # Two calls, so two slots on a cluster; the HSETNX on the AI call's side decides either way.
        pipe = multi(self.redis)
        pipe.hsetnx(keys.monitors(monitor.call_id), monitor.target_call_id, monitor.to_json())
        pipe.sadd(keys.monitored_by(monitor.target_call_id), monitor.call_id)
        pipe.expire(keys.monitors(monitor.call_id), keys.MONITOR_TTL_S)
        pipe.expire(keys.monitored_by(monitor.target_call_id), keys.MONITOR_TTL_S)
        claimed, *_ = await pipe.execute()
        return bool(claimed)

    async def activate(self, monitor: Monitor) -> None:
        monitor.state = ACTIVE
        await self.redis.hset(keys.monitors(monitor.call_id), monitor.target_call_id, monitor.to_json())

    async def get(self, ai_call_id: str, target_call_id: str) -> Monitor | None:
        raw = await self.redis.hget(keys.monitors(ai_call_id), target_call_id)
        return Monitor.from_json(raw) if raw else None

    async def of_call(self, ai_call_id: str) -> list[Monitor]:
        raw = await self.redis.hvals(keys.monitors(ai_call_id))
        return [Monitor.from_json(r) for r in raw]

    async def watchers(self, target_call_id: str) -> set[str]:
        """AI call ids that monitor this channel."""
        return await point_reads(self.redis).smembers(keys.monitored_by(target_call_id))

    async def release(self, ai_call_id: str, target_call_id: str) -> Monitor | None:
        """Forget one relationship; returns it, or None if it was already gone."""
        pipe = multi(self.redis)  # the HDEL's count decides who forgot it
        pipe.hget(keys.monitors(ai_call_id), target_call_id)
        pipe.hdel(keys.monitors(ai_call_id), target_call_id)
        pipe.srem(keys.monitored_by(target_call_id), ai_call_id)
        raw, removed, _ = await pipe.execute()
        return Monitor.from_json(raw) if raw and removed else None


class Monitors:
    """The store plus the call-lifecycle hooks that end monitors with either call."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.store = MonitorStore(svc.redis)
        svc.calls.on_finish.append(self._ai_session_ended)
        svc.calls.on("CHANNEL_HANGUP_COMPLETE", self._channel_gone)
        svc.calls.on("mod_audio_fork::disconnect", self._fork_dropped)
        svc.calls.on("mod_audio_fork::connect_failed", self._fork_dropped)

    async def stop_fork(self, monitor: Monitor) -> None:
        """`uuid_audio_fork <target> stop <bug>`; a refusal means the bug is not there any more
        (the channel is gone, or it was stopped already), which is what stopping wants."""
        listener = await self.svc.sessions.get(monitor.call_id)
        # A monitor's target is on its listener's box (a conference stays on one box).
        box = self.svc.switches.box_of(listener) if listener is not None else self.svc.switches.default
        try:
            await box.switch.fork_stop(monitor.target_call_id, monitor.bugname)
        except SwitchError as exc:
            log.info("monitor_fork_already_gone", target=monitor.target_call_id, reply=exc.reply)

    async def end(self, monitor: Monitor, reason: str) -> None:
        """Stop the fork and forget the relationship."""
        await self.stop_fork(monitor)
        if await self.store.release(monitor.call_id, monitor.target_call_id) is not None:
            log.info("monitor_ended", call_id=monitor.call_id, target=monitor.target_call_id, reason=reason)

    async def _ai_session_ended(self, call_id: str) -> None:
        """The AI is gone (hangup, transfer, conference_leave, error): close every fork it opened."""
        for monitor in await self.store.of_call(call_id):
            try:
                await self.end(monitor, "ai_session_ended")
            except SwitchUnavailable as exc:
                # The switch is unreachable: forget the record anyway; the bug dies with its channel.
                log.warning("monitor_fork_stop_failed", target=monitor.target_call_id, error=str(exc))
                await self.store.release(monitor.call_id, monitor.target_call_id)

    async def _channel_gone(self, event: Event) -> None:
        """A monitored channel hung up: FreeSWITCH removed the fork with it; drop the records."""
        target = event.unique_id
        if not target:
            return
        for ai_call_id in await self.store.watchers(target):
            if await self.store.release(ai_call_id, target) is not None:
                log.info("monitor_ended", call_id=ai_call_id, target=target, reason="target_hangup")


    async def _fork_dropped(self, event: Event) -> None:
        """The AI closed a monitor's WebSocket (or it never connected). mod_audio_fork's event
        names no bug, so it is matched by channel: a drop on a channel the bridge opened exactly
        one monitor fork on, and no AI fork of its own, is that monitor's. Otherwise it stays
        ambiguous and the record stays until monitor_stop, barge or either call ending."""
        target = event.unique_id
        watchers = await self.store.watchers(target) if target else set()
        if not watchers:
            return
        if len(watchers) > 1 or await self.svc.calls.forks.fork_session(target) is not None:
            log.info("monitor_fork_drop_ambiguous", target=target, watchers=sorted(watchers))
            return
        ai_call_id = next(iter(watchers))
        monitor = await self.store.get(ai_call_id, target)
        if monitor is None:
            return
        # The real module keeps the dead bug on the channel: stop it so a new monitor can start.
        await self.stop_fork(monitor)
        if await self.store.release(ai_call_id, target) is None:
            return
        reason = "ws_connect_failed" if event.subclass.endswith("connect_failed") else "ws_closed"
        log.info("monitor_ended", call_id=ai_call_id, target=target, reason=reason)
        entry = {"ts": now_iso(), "event": "monitor_ended", "target_call_id": target, "reason": reason}
        await self.svc.sessions.append_log(ai_call_id, entry)


def new_monitor(ai_call_id: str, target_call_id: str, mode: str, conference_id: str | None) -> Monitor:
    return Monitor(
        call_id=ai_call_id,
        target_call_id=target_call_id,
        mode=mode,
        bugname=bugname_for(ai_call_id),
        conference_id=conference_id,
        started_at=time.time(),
    )
