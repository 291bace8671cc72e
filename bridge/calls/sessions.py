"""AI sessions: one per call, keyed by call_id (the FreeSWITCH channel uuid).

A session is a Redis hash so single fields change without read-modify-write races, and
the transitions that must happen once (ending, claiming a transfer) are Lua compare-and-set
scripts: with several bridge instances on one Redis, exactly one of them wins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.store import keys
from bridge.store.reads import point_reads
from bridge.store.redis import RedisClient, multi

TERMINAL_OUTCOMES = (
    "hangup",
    "transferred_agent_queue",
    "transferred_e164",
    "transferred_sip_uri",
    "error",
    "timeout",
    # conference_leave: the AI's leg left the conference; the caller and the others stay in it.
    "conference_left",
)


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(time.time()) or ""


def _f(raw: dict[str, str], name: str) -> float | None:
    value = raw.get(name)
    return float(value) if value else None


def _b(raw: dict[str, str], name: str) -> bool:
    return raw.get(name) == "1"


@dataclass(slots=True)
class Session:
    call_id: str
    tenant_id: str
    direction: str = "inbound"
    from_: str = ""
    to: str = ""
    voice_agent_id: str | None = None
    campaign_id: str | None = None
    lead_id: str | None = None
    ws_url: str | None = None
    subprotocol: str | None = None
    token_lifetime: str = "30min_with_refresh"
    state: str = "ringing"  # ringing -> in_progress -> ended
    outcome: str | None = None
    reason: str | None = None
    started_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    hangup_cause: str | None = None
    held: bool = False
    muted_caller: bool = False
    muted_agent: bool = False
    recording_path: str | None = None
    recording_state: str = "off"  # off | recording | paused | stopped
    recording_started_at: float | None = None
    conference_id: str | None = None
    disposition: str | None = None
    notes: str | None = None
    transfer: dict[str, Any] | None = None
    fork_connected: bool = False
    # The FreeSWITCH box holding the channel (bridge.calls.pool); empty on sessions from before
    # boxes were recorded, which belong to the first box.
    switch_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return bool(self.outcome)

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def is_recording(self) -> bool:
        return self.recording_state == "recording"

    def duration_s(self, now: float | None = None) -> int:
        if not self.answered_at:
            return 0
        end = self.ended_at or (now if now is not None else time.time())
        return max(0, int(end - self.answered_at))

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Session:
        known = {
            "call_id", "tenant_id", "direction", "from", "to", "voice_agent_id", "campaign_id",
            "lead_id", "ws_url", "subprotocol", "token_lifetime", "state", "outcome", "reason",
            "started_at", "answered_at", "ended_at", "hangup_cause", "held", "muted_caller",
            "muted_agent", "recording_path", "recording_state", "recording_started_at", "conference_id",
            "disposition",
            "notes", "transfer", "fork_connected", "switch_id",
        }  # fmt: skip
        return cls(
            call_id=raw["call_id"],
            tenant_id=raw["tenant_id"],
            direction=raw.get("direction", "inbound"),
            from_=raw.get("from", ""),
            to=raw.get("to", ""),
            voice_agent_id=raw.get("voice_agent_id") or None,
            campaign_id=raw.get("campaign_id") or None,
            lead_id=raw.get("lead_id") or None,
            ws_url=raw.get("ws_url") or None,
            subprotocol=raw.get("subprotocol") or None,
            token_lifetime=raw.get("token_lifetime") or "30min_with_refresh",
            state=raw.get("state", "ringing"),
            outcome=raw.get("outcome") or None,
            reason=raw.get("reason") or None,
            started_at=_f(raw, "started_at") or 0.0,
            answered_at=_f(raw, "answered_at"),
            ended_at=_f(raw, "ended_at"),
            hangup_cause=raw.get("hangup_cause") or None,
            held=_b(raw, "held"),
            muted_caller=_b(raw, "muted_caller"),
            muted_agent=_b(raw, "muted_agent"),
            recording_path=raw.get("recording_path") or None,
            recording_state=raw.get("recording_state") or "off",
            recording_started_at=_f(raw, "recording_started_at"),
            conference_id=raw.get("conference_id") or None,
            disposition=raw.get("disposition") or None,
            notes=raw.get("notes") or None,
            transfer=json.loads(raw["transfer"]) if raw.get("transfer") else None,
            fork_connected=_b(raw, "fork_connected"),
            switch_id=raw.get("switch_id", ""),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def call_state(self, participants: list[str] | None = None) -> dict[str, Any]:
        """The `get_call_state` result, exactly the contract's shape."""
        if participants is None:
            participants = [] if self.state == "ended" else ["caller", "ai_agent"]
        return {
            "state": self.state,
            "duration_s": self.duration_s(),
            "answered": self.answered,
            "current_participants": participants,
            "is_recording": self.is_recording,
            "is_muted": {"caller": self.muted_caller, "agent": self.muted_agent},
            "is_held": self.held,
            "conference_id": self.conference_id,
            "disposition": self.disposition,
        }

    def public(self, logs: list[dict[str, Any]]) -> dict[str, Any]:
        """The object `GET /api/v1/ai-sessions/{call_id}` returns."""
        return {
            "id": self.call_id,
            "call_id": self.call_id,
            "tenant_id": self.tenant_id,
            "voice_agent_id": self.voice_agent_id,
            "campaign_id": self.campaign_id,
            "lead_id": self.lead_id,
            "direction": self.direction,
            "from": self.from_,
            "to": self.to,
            "ws_url": self.ws_url,
            "state": self.state,
            "outcome": self.outcome,
            "outcome_reason": self.reason,
            "started_at": iso(self.started_at),
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "duration_s": self.duration_s(),
            "hangup_cause": self.hangup_cause,
            "disposition": self.disposition,
            "notes": self.notes,
            "is_recording": self.is_recording,
            "recording_path": self.recording_path,
            "conference_id": self.conference_id,
            "transfer": self.transfer,
            "metadata": {"logs": logs},
        }


# Ends a session once: returns 1 for the caller that ended it, 0 if it was already ended.
# KEYS: the session hash, its logs (one slot: {call:<id>}). `sessions:live` is another slot, so
# SessionStore.end takes the call out of it afterwards, whatever this returned.
_END = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'outcome') then return 0 end
redis.call('HSET', KEYS[1], 'outcome', ARGV[1], 'reason', ARGV[2], 'state', 'ended', 'ended_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

# Sets a field only if the session is live and the field currently holds ARGV[2] ('' = unset).
_CAS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'outcome') then return -2 end
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class SessionStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.reads = point_reads(redis)
        self._end = redis.register_script(_END)
        self._cas = redis.register_script(_CAS)

    async def create(self, session: Session) -> bool:
        """Store a new session; False if one already exists for the call."""
        mapping: dict[str, str] = {
            "call_id": session.call_id,
            "tenant_id": session.tenant_id,
            "direction": session.direction,
            "from": session.from_,
            "to": session.to,
            "voice_agent_id": session.voice_agent_id or "",
            "campaign_id": session.campaign_id or "",
            "lead_id": session.lead_id or "",
            "ws_url": session.ws_url or "",
            "subprotocol": session.subprotocol or "",
            "token_lifetime": session.token_lifetime,
            "state": session.state,
            "started_at": repr(session.started_at or time.time()),
            "recording_state": session.recording_state,
            "switch_id": session.switch_id,
        }
        created = await self.redis.hsetnx(keys.session(session.call_id), "call_id", session.call_id)
        if not created:
            return False
        # Three slots on a cluster, so not all at once there: a reader of the tenant's index or of
        # sessions:live skips an id whose hash has no tenant_id yet (HSETNX above wrote call_id only).
        pipe = multi(self.redis)
        pipe.hset(keys.session(session.call_id), mapping=mapping)
        pipe.zadd(
            keys.tenant_sessions(session.tenant_id),
            {session.call_id: int(float(mapping["started_at"]) * 1000)},
        )
        pipe.sadd(keys.live_sessions(), session.call_id)
        await pipe.execute()
        return True

    async def get(self, call_id: str) -> Session | None:
        raw = await self.reads.hgetall(keys.session(call_id))
        if not raw or "tenant_id" not in raw:
            return None
        return Session.from_hash(raw)

    async def update(self, call_id: str, **fields: str | float | bool | None) -> None:
        """Set plain fields (booleans become "1"/"0", None deletes the field)."""
        to_set: dict[str, str] = {}
        to_del: list[str] = []
        for name, value in fields.items():
            name = "from" if name == "from_" else name
            if value is None:
                to_del.append(name)
            elif isinstance(value, bool):
                to_set[name] = "1" if value else "0"
            elif isinstance(value, float):
                to_set[name] = repr(value)
            else:
                to_set[name] = str(value)
        pipe = self.redis.pipeline(transaction=True)
        if to_set:
            pipe.hset(keys.session(call_id), mapping=to_set)
        if to_del:
            pipe.hdel(keys.session(call_id), *to_del)
        await pipe.execute()

    async def set_once(self, call_id: str, name: str, value: str) -> bool:
        """HSETNX: True for the first writer (used to emit an event exactly once)."""
        return bool(await self.redis.hsetnx(keys.session(call_id), name, value))

    async def compare_and_set(self, call_id: str, name: str, expected: str, new: str) -> int:
        """1 set; 0 the field held something else; -1 no session; -2 session already ended."""
        return int(await self._cas(keys=[keys.session(call_id)], args=[name, expected, new]))

    async def end(self, call_id: str, outcome: str, reason: str = "") -> bool:
        """Make the session terminal. True only for the caller whose call ended it."""
        if outcome not in TERMINAL_OUTCOMES:
            raise ValueError(f"not a terminal outcome: {outcome}")
        result = await self._end(
            keys=[keys.session(call_id), keys.session_logs(call_id)],
            args=[outcome, reason, repr(time.time()), keys.SESSION_TTL_S],
        )
        # Also when it was ended already: an end that stopped between the two steps is finished
        # by the next one (resync ends a live session whose channel is gone).
        await self.redis.srem(keys.live_sessions(), call_id)
        return int(result) == 1

    async def append_log(self, call_id: str, entry: dict[str, Any]) -> None:
        await self.redis.rpush(keys.session_logs(call_id), json.dumps(entry, default=str))

    async def logs(self, call_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in await self.redis.lrange(keys.session_logs(call_id), 0, -1)]

    async def live_call_ids(self) -> set[str]:
        return set(await self.redis.smembers(keys.live_sessions()))

    async def list_for_tenant(
        self,
        tenant_id: str,
        *,
        limit: int = 100,
        started_after: float | None = None,
        voice_agent_id: str | None = None,
    ) -> list[Session]:
        """Oldest first from `started_after` (keyset pagination on started_at, call_id)."""
        low = f"({int(started_after * 1000)}" if started_after else "-inf"
        result: list[Session] = []
        offset = 0
        while len(result) < limit:
            ids = await self.redis.zrangebyscore(
                keys.tenant_sessions(tenant_id), low, "+inf", start=offset, num=limit * 2
            )
            if not ids:
                break
            offset += len(ids)
            pipe = self.redis.pipeline(transaction=False)
            for call_id in ids:
                pipe.hgetall(keys.session(call_id))
            for raw in await pipe.execute():
                if not raw or "tenant_id" not in raw:
                    continue
                session = Session.from_hash(raw)
                if voice_agent_id and session.voice_agent_id != voice_agent_id:
                    continue
                result.append(session)
                if len(result) >= limit:
                    break
        return result
