"""Callbacks booked by `schedule_callback`, and the state machine the scheduler drives them through.

    scheduled --claim--> dialing --> dialed            (originate accepted; result_call_id set)
        |                   |------> failed            (424, 404, switch down, or the claimer died)
        |                   `------> scheduled         (429 max_concurrent: tried again a bit later)
        `--cancel--> cancelled

Every transition is one Lua script, so with any number of bridge instances on one Redis a
callback is claimed by exactly one of them (ZREM on the due set wins), and a cancel and a claim
that race cannot both succeed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ulid import ULID

from bridge.store import keys
from bridge.store.crm import now_iso
from bridge.store.redis import RedisClient, multi

CallbackState = Literal["scheduled", "dialing", "dialed", "failed", "cancelled"]
CALLBACK_STATES: tuple[str, ...] = ("scheduled", "dialing", "dialed", "failed", "cancelled")
IDEMPOTENCY_TTL_S = 86400

_FIELDS = (
    "id", "tenant_id", "call_id", "lead_id", "campaign_id", "to", "from", "voice_agent_id",
    "origin_voice_agent_id", "reason", "scheduled_at", "state", "attempts", "result_call_id",
    "error_code", "error_message", "next_attempt_at", "created_at", "updated_at", "dialed_at",
)  # fmt: skip

# Creates a callback, at most once per idempotency key when KEYS[3] is given. KEYS: callback, due,
# idempotency key (all {callbacks}). ARGV: id, due ms, key TTL, then the hash's field/value pairs.
# Returns the callback's id. The tenant's and the call's indexes are other slots: create() adds
# the id to them afterwards (ZADD, so a retry that finds the first booking finishes them).
_CREATE = """
if #KEYS == 3 then
  local existing = redis.call('GET', KEYS[3])
  if existing then return existing end
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return ARGV[1]
"""

# Whoever removes the id from the due set owns the dial. KEYS: due, dialing, callback.
# ARGV: id, lease deadline ms, claim token, now. 1 claimed, 0 somebody else has it (or it was cancelled).
_CLAIM = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[3], 'state') ~= 'scheduled' then return 0 end
redis.call('HSET', KEYS[3], 'state', 'dialing', 'claim', ARGV[3], 'updated_at', ARGV[4],
  'next_attempt_at', '')
redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# The claimer records the outcome. KEYS: callback, dialing. ARGV: id, claim token, state, field pairs.
# The claim token outlives a lease that was reaped, so a slow claimer's real outcome still lands.
_FINISH = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', ARGV[3], unpack(ARGV, 4))
return 1
"""

# Back to scheduled for another try. KEYS: callback, dialing, due. ARGV: id, claim, due ms, field pairs.
_RETRY = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'dialing' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'scheduled', unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

# A claim whose lease ran out: the claimer died between claim and outcome. We cannot know whether it
# dialed, so the callback fails rather than risk calling the customer twice. KEYS: dialing, callback.
_REAP = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[2], 'state') ~= 'dialing' then return 0 end
redis.call('HSET', KEYS[2], 'state', 'failed', 'error_code', 'claim_lost', 'error_message', ARGV[2],
  'updated_at', ARGV[3])
return 1
"""

# KEYS: callback, due. ARGV: id, tenant, now. Returns the state after the call, or '' if not found.
_CANCEL = """
if redis.call('HGET', KEYS[1], 'tenant_id') ~= ARGV[2] then return '' end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'scheduled' then return state end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated_at', ARGV[3], 'next_attempt_at', '')
redis.call('ZREM', KEYS[2], ARGV[1])
return 'cancelled'
"""


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Callback:
    id: str
    tenant_id: str
    call_id: str
    to: str
    from_: str
    scheduled_at: str
    state: str = "scheduled"
    lead_id: str | None = None
    campaign_id: str | None = None
    voice_agent_id: str | None = None
    origin_voice_agent_id: str | None = None
    reason: str | None = None
    attempts: int = 0
    result_call_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    next_attempt_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    dialed_at: str | None = None

    @property
    def scheduled_ms(self) -> int:
        return to_ms(datetime.fromisoformat(self.scheduled_at.replace("Z", "+00:00")))

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Callback:
        def opt(name: str) -> str | None:
            return raw.get(name) or None

        return cls(
            id=raw["id"],
            tenant_id=raw["tenant_id"],
            call_id=raw.get("call_id", ""),
            to=raw.get("to", ""),
            from_=raw.get("from", ""),
            scheduled_at=raw["scheduled_at"],
            state=raw.get("state", "scheduled"),
            lead_id=opt("lead_id"),
            campaign_id=opt("campaign_id"),
            voice_agent_id=opt("voice_agent_id"),
            origin_voice_agent_id=opt("origin_voice_agent_id"),
            reason=opt("reason"),
            attempts=int(raw.get("attempts") or 0),
            result_call_id=opt("result_call_id"),
            error_code=opt("error_code"),
            error_message=opt("error_message"),
            next_attempt_at=opt("next_attempt_at"),
            created_at=opt("created_at"),
            updated_at=opt("updated_at"),
            dialed_at=opt("dialed_at"),
        )

    def to_hash(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "call_id": self.call_id,
            "lead_id": self.lead_id,
            "campaign_id": self.campaign_id,
            "to": self.to,
            "from": self.from_,
            "voice_agent_id": self.voice_agent_id,
            "origin_voice_agent_id": self.origin_voice_agent_id,
            "reason": self.reason,
            "scheduled_at": self.scheduled_at,
            "state": self.state,
            "attempts": self.attempts,
            "result_call_id": self.result_call_id,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "dialed_at": self.dialed_at,
        }
        return {name: "" if values[name] is None else str(values[name]) for name in _FIELDS}

    def public(self) -> dict[str, Any]:
        """The object `GET /api/v1/callbacks/{id}` returns."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "call_id": self.call_id,
            "lead_id": self.lead_id,
            "campaign_id": self.campaign_id,
            "to": self.to,
            "from": self.from_,
            "voice_agent_id": self.voice_agent_id,
            "reason": self.reason,
            "scheduled_at": self.scheduled_at,
            "state": self.state,
            "attempts": self.attempts,
            "result_call_id": self.result_call_id,
            "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
            "next_attempt_at": self.next_attempt_at,
            "dialed_at": self.dialed_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _pairs(fields: dict[str, str | None]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        flat += [name, "" if value is None else value]
    return flat


class CallbackStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._retry = redis.register_script(_RETRY)
        self._reap = redis.register_script(_REAP)
        self._cancel = redis.register_script(_CANCEL)

    # ------------------------------------------------------------ booking and reading

    async def create(
        self,
        *,
        tenant_id: str,
        call_id: str,
        to: str,
        from_: str,
        scheduled_at: datetime,
        lead_id: str | None = None,
        campaign_id: str | None = None,
        voice_agent_id: str | None = None,
        origin_voice_agent_id: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Callback, bool]:
        """Book a callback. With an idempotency key, a second booking under the same (call_id, key)
        returns the first callback. Returns (the callback, whether this call created it)."""
        due_ms = to_ms(scheduled_at)
        now = now_iso()
        cb = Callback(
            id=f"cb_{ULID()}",
            tenant_id=tenant_id,
            call_id=call_id,
            to=to,
            from_=from_,
            scheduled_at=iso_ms(due_ms),
            lead_id=lead_id,
            campaign_id=campaign_id,
            voice_agent_id=voice_agent_id,
            origin_voice_agent_id=origin_voice_agent_id,
            reason=reason,
            created_at=now,
            updated_at=now,
        )
        script_keys = [keys.callback(cb.id), keys.callbacks_due()]
        if idempotency_key:
            script_keys.append(keys.callback_idempotency(call_id, idempotency_key))
        args: list[str | int] = [cb.id, due_ms, IDEMPOTENCY_TTL_S, *_pairs(dict(cb.to_hash()))]
        stored_id = await self._create(keys=script_keys, args=args)
        if stored_id == cb.id:
            await self._index(cb)
            return cb, True
        existing = await self.get(stored_id)
        if existing is None:  # the first booking's hash is gone; should not happen without a flush
            raise RuntimeError(f"idempotency key points at missing callback {stored_id}")
        await self._index(existing)
        return existing, False

    async def _index(self, cb: Callback) -> None:
        pipe = multi(self.redis)
        pipe.zadd(keys.tenant_callbacks(cb.tenant_id), {cb.id: cb.scheduled_ms})
        pipe.zadd(keys.call_callbacks(cb.call_id), {cb.id: cb.scheduled_ms})
        await pipe.execute()

    async def get(self, callback_id: str, tenant_id: str | None = None) -> Callback | None:
        raw = await self.redis.hgetall(keys.callback(callback_id))
        if not raw or "tenant_id" not in raw:
            return None
        if tenant_id is not None and raw["tenant_id"] != tenant_id:
            return None
        return Callback.from_hash(raw)

    async def list(
        self,
        tenant_id: str,
        *,
        state: str | None = None,
        call_id: str | None = None,
        limit: int = 100,
    ) -> list[Callback]:
        """By scheduled_at, oldest first. `call_id` narrows to the callbacks one call booked."""
        index = keys.call_callbacks(call_id) if call_id else keys.tenant_callbacks(tenant_id)
        result: list[Callback] = []
        offset = 0
        chunk = max(limit, 100)
        while len(result) < limit:
            ids = await self.redis.zrange(index, offset, offset + chunk - 1)
            if not ids:
                break
            offset += len(ids)
            pipe = self.redis.pipeline(transaction=False)
            for cb_id in ids:
                pipe.hgetall(keys.callback(cb_id))
            for raw in await pipe.execute():
                if not raw or raw.get("tenant_id") != tenant_id:
                    continue
                if state and raw.get("state") != state:
                    continue
                result.append(Callback.from_hash(raw))
                if len(result) >= limit:
                    break
        return result

    async def cancel(self, callback_id: str, tenant_id: str) -> str | None:
        """Cancel a scheduled callback. Returns the state it is in afterwards (None: not found);
        anything but "cancelled" means it was already past the point of cancelling."""
        state = await self._cancel(
            keys=[keys.callback(callback_id), keys.callbacks_due()], args=[callback_id, tenant_id, now_iso()]
        )
        return state or None

    # ------------------------------------------------------------ the scheduler's side

    async def due_ids(self, now_ms: int, limit: int) -> list[str]:
        return list(await self.redis.zrangebyscore(keys.callbacks_due(), "-inf", now_ms, start=0, num=limit))

    async def claim(self, callback_id: str, claim: str, lease_until_ms: int) -> Callback | None:
        """Take a due callback for dialing; None if another instance took it (or it was cancelled)."""
        won = await self._claim(
            keys=[keys.callbacks_due(), keys.callbacks_dialing(), keys.callback(callback_id)],
            args=[callback_id, lease_until_ms, claim, now_iso()],
        )
        if int(won) != 1:
            return None
        return await self.get(callback_id)

    async def mark_dialed(self, callback_id: str, claim: str, result_call_id: str) -> bool:
        now = now_iso()
        fields = {
            "result_call_id": result_call_id,
            "dialed_at": now,
            "updated_at": now,
            "error_code": None,
            "error_message": None,
        }
        return await self._finish_with(callback_id, claim, "dialed", fields)

    async def mark_failed(self, callback_id: str, claim: str, code: str, message: str) -> bool:
        fields = {"error_code": code, "error_message": message, "updated_at": now_iso()}
        return await self._finish_with(callback_id, claim, "failed", fields)

    async def _finish_with(
        self, callback_id: str, claim: str, state: str, fields: dict[str, str | None]
    ) -> bool:
        done = await self._finish(
            keys=[keys.callback(callback_id), keys.callbacks_dialing()],
            args=[callback_id, claim, state, *_pairs(fields)],
        )
        return int(done) == 1

    async def retry_later(self, callback_id: str, claim: str, due_ms: int, code: str, message: str) -> bool:
        fields = {
            "error_code": code,
            "error_message": message,
            "next_attempt_at": iso_ms(due_ms),
            "updated_at": now_iso(),
        }
        done = await self._retry(
            keys=[keys.callback(callback_id), keys.callbacks_dialing(), keys.callbacks_due()],
            args=[callback_id, claim, due_ms, *_pairs(fields)],
        )
        return int(done) == 1

    async def reap_expired(self, now_ms: int | None = None) -> list[str]:
        """Fail every claim whose lease ran out; returns their ids."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        expired = await self.redis.zrangebyscore(keys.callbacks_dialing(), "-inf", now_ms, start=0, num=100)
        reaped: list[str] = []
        for cb_id in expired:
            done = await self._reap(
                keys=[keys.callbacks_dialing(), keys.callback(cb_id)],
                args=[
                    cb_id,
                    "the bridge instance that claimed this callback stopped before recording the dial; "
                    "it was not retried, so the customer is never called twice",
                    now_iso(),
                ],
            )
            if int(done) == 1:
                reaped.append(cb_id)
        return reaped
