"""The durable half of webhook delivery: fan-out records, the retry queue, claims and the delivery log.

One delivery is one event for one subscription (a `delivery:{id}` hash). Its id is derived from the
event and the subscription, so recording the same outbox entry twice (a reclaimed entry, two
instances racing) creates it once. Every state change is one Lua call, so a process that dies at
any point leaves Redis in a state another instance can pick up from:

- fan-out writes the deliveries and XACKs the outbox entry together;
- a claim moves the delivery's score in `webhooks:retry` from "due" to a lease deadline, so exactly
  one instance holds it, and a holder that dies simply lets the lease run out;
- completing an attempt checks that the lease is still ours, then records the outcome, the log
  entry and the next due time together.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.store import keys
from bridge.store.batch import Batcher
from bridge.store.redis import RedisClient
from bridge.webhooks.outbox import DomainEvent
from bridge.webhooks.subscriptions import Subscription, iso

DELIVERY_PREFIX = "whdl_"

PENDING = "pending"
DELIVERED = "delivered"
RETRYING = "retrying"
DEAD = "dead"


def delivery_id(event_id: str, sub_id: str) -> str:
    return DELIVERY_PREFIX + hashlib.sha256(f"{event_id}/{sub_id}".encode()).hexdigest()[:32]


def now_ms() -> int:
    return int(time.time() * 1000)


def _json(obj: Any) -> str:
    # orjson: the stdlib's encoder was the largest single cost of fan-out (bench/webhooks.py).
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def encode_body(event: DomainEvent) -> str:
    # Serialised once at fan-out: every attempt then sends (and signs) the very same bytes.
    return _json(event.envelope())


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    sub_id: str
    tenant_id: str
    event_id: str
    event_type: str
    body: str
    livemode: bool
    attempts: int
    retry_base: int
    state: str
    created_at: str
    next_retry_at_ms: int | None
    last_status_code: int | None
    last_error: str | None

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Delivery:
        nxt = raw.get("next_retry_at_ms") or ""
        code = raw.get("last_status_code") or ""
        return cls(
            id=raw["id"],
            sub_id=raw["sub_id"],
            tenant_id=raw["tenant_id"],
            event_id=raw["event_id"],
            event_type=raw["event_type"],
            body=raw.get("body", ""),
            livemode=raw.get("livemode", "1") == "1",
            attempts=int(raw.get("attempts") or 0),
            retry_base=int(raw.get("retry_base") or 0),
            state=raw.get("state", PENDING),
            created_at=raw.get("created_at", ""),
            next_retry_at_ms=int(nxt) if nxt else None,
            last_status_code=int(code) if code else None,
            last_error=raw.get("last_error") or None,
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription_id": self.sub_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "attempts": self.attempts,
            "state": self.state,
            "created_at": self.created_at,
            "next_retry_at": iso(self.next_retry_at_ms / 1000) if self.next_retry_at_ms else None,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
        }


def new_delivery_fields(event: DomainEvent, sub: Subscription, due_ms: int) -> dict[str, str]:
    return {
        "id": delivery_id(event.event_id, sub.id),
        "sub_id": sub.id,
        "tenant_id": event.tenant_id,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "body": encode_body(event),
        # Events the call layer marks `"livemode": false` (test-key traffic) go to test_url.
        "livemode": "0" if event.data.get("livemode") is False else "1",
        "attempts": "0",
        "retry_base": "0",
        "state": PENDING,
        "created_at": iso(due_ms / 1000),
        "next_retry_at_ms": str(due_ms),
    }


# KEYS: 1 outbox stream, 2 retry zset, 3.. one delivery hash per (entry, matching subscription)
# ARGV: 1 group, 2 due (ms), then per outbox entry: its id, n, and n JSON field maps (KEYS order)
# Each entry is acked with its deliveries. A delivery that already exists (the entry was fanned
# out before, then re-read) is left alone.
_FAN_OUT = """
local created = 0
local k = 3
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  for j = 1, n do
    if redis.call('EXISTS', KEYS[k]) == 0 then
      local fields = cjson.decode(ARGV[i + 1 + j])
      local flat = {}
      for f, v in pairs(fields) do
        flat[#flat + 1] = f
        flat[#flat + 1] = v
      end
      redis.call('HSET', KEYS[k], unpack(flat))
      redis.call('ZADD', KEYS[2], ARGV[2], fields['id'])
      created = created + 1
    end
    k = k + 1
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  i = i + 2 + n
end
return created
"""

# KEYS: 1 retry zset.  ARGV: 1 now (ms), 2 lease deadline (ms), 3 max count.
# Returns {claimed ids, the lowest score left ('' when empty)}: when to look again.
_CLAIM = """
local ids = {}
if tonumber(ARGV[3]) > 0 then
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
  for _, id in ipairs(ids) do
    redis.call('ZADD', KEYS[1], ARGV[2], id)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {ids, first[2] or ''}
"""

# Per delivery: KEYS 1 retry zset, 2 delivery hash, 3 subscription hash, 4 delivery log
# ARGV: 1 delivery id, 2 our lease (ms), 3 outcome, 4 next due (ms), 5 log entry JSON, 6 log cap,
#       7 TTL once terminal (s), 8 "1" failed / "0" succeeded / "" neither (consecutive_failures),
#       9.. delivery hash field/value pairs
# Records nothing (0) when the lease is no longer ours: someone else owns the delivery now.
# The script takes a batch (bridge.store.batch): KEYS four per delivery; ARGV per delivery its
# count, then its arguments as above. Returns one 0/1 per delivery.
_COMPLETE = """
local function complete(K, A)
  local score = redis.call('ZSCORE', K[1], A[1])
  if (not score) or tonumber(score) ~= tonumber(A[2]) then return 0 end
  if #A >= 9 then
    redis.call('HSET', K[2], unpack(A, 9))
  end
  if A[3] == 'retrying' then
    redis.call('ZADD', K[1], A[4], A[1])
  else
    redis.call('ZREM', K[1], A[1])
    if tonumber(A[7]) > 0 then redis.call('EXPIRE', K[2], A[7]) end
    -- A delivered record only guards against a second fan-out; the body is dead weight by then.
    if A[3] == 'delivered' then redis.call('HDEL', K[2], 'body') end
  end
  if redis.call('EXISTS', K[3]) == 1 then
    if A[8] == '1' then
      redis.call('HINCRBY', K[3], 'consecutive_failures', 1)
    elseif A[8] == '0' then
      redis.call('HSET', K[3], 'consecutive_failures', '0')
    end
    if A[5] ~= '' then
      redis.call('LPUSH', K[4], A[5])
      redis.call('LTRIM', K[4], 0, tonumber(A[6]) - 1)
    end
  end
  return 1
end
local out = {}
local a = 1
for d = 0, #KEYS / 4 - 1 do
  local n = tonumber(ARGV[a])
  out[#out + 1] = complete({KEYS[d * 4 + 1], KEYS[d * 4 + 2], KEYS[d * 4 + 3], KEYS[d * 4 + 4]},
                           {unpack(ARGV, a + 1, a + n)})
  a = a + 1 + n
end
return out
"""

# KEYS: 1 retry zset.  ARGV: 1 delivery id, 2 our lease (ms), 3 new due (ms).
# Hands an unfinished attempt back (graceful stop) without waiting for the lease to run out.
_RELEASE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

# KEYS: 1 retry zset, 2 delivery hash.  ARGV: 1 delivery id, 2 our lease (ms), 3 "1" to delete the record.
_DROP = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[3] == '1' then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS: 1 retry zset, 2 delivery hash.  ARGV: 1 delivery id, 2 subscription id, 3 now (ms), 4 ISO now
# -1 unknown (or another subscription's), 0 not dead, 1 queued again.
_REDELIVER = """
if redis.call('HGET', KEYS[2], 'sub_id') ~= ARGV[2] then return -1 end
if redis.call('HGET', KEYS[2], 'state') ~= 'dead' then return 0 end
local attempts = redis.call('HGET', KEYS[2], 'attempts')
redis.call('HSET', KEYS[2], 'state', 'pending', 'retry_base', attempts, 'next_retry_at_ms', ARGV[3],
           'redelivered_at', ARGV[4])
redis.call('PERSIST', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


class DeliveryQueue:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._fan_out = redis.register_script(_FAN_OUT)
        self._claim = redis.register_script(_CLAIM)
        self._complete = redis.register_script(_COMPLETE)
        self._release = redis.register_script(_RELEASE)
        self._drop = redis.register_script(_DROP)
        self._redeliver = redis.register_script(_REDELIVER)
        # Attempts that finish together are recorded in one script call.
        self._completions: Batcher[tuple[list[str], list[str | int]], bool] = Batcher(
            self._complete_many, max_batch=128
        )

    async def _complete_many(self, items: list[tuple[list[str], list[str | int]]]) -> list[bool]:
        script_keys: list[str] = []
        args: list[str | int] = []
        for k, a in items:
            script_keys += k
            args += [len(a), *a]
        return [bool(x) for x in await self._complete(keys=script_keys, args=args)]

    async def aclose(self) -> None:
        await self._completions.aclose()

    async def fan_out(
        self, group: str, entry_id: str, event: DomainEvent, subs: list[Subscription], due_ms: int
    ) -> int:
        """Record one delivery per subscription and ack the outbox entry, atomically."""
        return await self.fan_out_many(group, [(entry_id, event, subs)], due_ms)

    async def fan_out_many(
        self,
        group: str,
        entries: list[tuple[str, DomainEvent | None, list[Subscription]]],
        due_ms: int,
    ) -> int:
        """fan_out for a batch of outbox entries in one call; an entry whose event is None (it
        could not be read) is only acked. Returns the deliveries created."""
        if not entries:
            return 0
        script_keys = [keys.outbox(), keys.webhook_retry_queue()]
        args: list[str] = [group, str(due_ms)]
        for entry_id, event, subs in entries:
            docs = [] if event is None else [new_delivery_fields(event, sub, due_ms) for sub in subs]
            script_keys += [keys.delivery(d["id"]) for d in docs]
            args += [entry_id, str(len(docs))] + [_json(d) for d in docs]
        return int(await self._fan_out(keys=script_keys, args=args))

    async def claim_due(self, now: int, lease_until: int, limit: int) -> tuple[list[str], int | None]:
        """Lease up to `limit` due deliveries; also the lowest score left in the queue (the next
        due time, or an attempt's lease deadline), None when it is empty."""
        ids, first = await self._claim(
            keys=[keys.webhook_retry_queue()], args=[now, lease_until, max(0, limit)]
        )
        return list(ids), (int(float(first)) if first not in ("", b"", None) else None)

    async def load_many(
        self, delivery_ids: list[str], *, version_key: str | None = None
    ) -> tuple[str | None, list[Delivery | None]]:
        """Each id's delivery (None when gone) in one round trip, with the value of `version_key`
        (read first: the subscription token, SubscriptionCache) when one is named."""
        pipe = self.redis.pipeline(transaction=False)
        if version_key is not None:
            pipe.get(version_key)
        for delivery_id in delivery_ids:
            pipe.hgetall(keys.delivery(delivery_id))
        rows = await pipe.execute() if (version_key is not None or delivery_ids) else []
        version = rows.pop(0) if version_key is not None else None
        return version, [Delivery.from_hash(raw) if raw and "sub_id" in raw else None for raw in rows]

    async def load(self, delivery_id: str) -> Delivery | None:
        raw = await self.redis.hgetall(keys.delivery(delivery_id))
        if not raw or "sub_id" not in raw:
            return None
        return Delivery.from_hash(raw)

    async def complete(
        self,
        delivery: Delivery,
        lease: int,
        *,
        outcome: str,
        next_due_ms: int | None,
        log_entry: dict[str, Any] | None,
        failed: bool | None,
        fields: dict[str, str],
        terminal_ttl_s: int,
    ) -> bool:
        argv: list[str | int] = [
            delivery.id,
            lease,
            outcome,
            next_due_ms or 0,
            _json(log_entry) if log_entry else "",
            keys.DELIVERY_LOG_MAX,
            terminal_ttl_s,
            "" if failed is None else ("1" if failed else "0"),
        ]
        for k, v in fields.items():
            argv += [k, v]
        script_keys = [
            keys.webhook_retry_queue(),
            keys.delivery(delivery.id),
            keys.webhook(delivery.sub_id),
            keys.webhook_deliveries(delivery.sub_id),
        ]
        return await self._completions.submit((script_keys, argv))

    async def release(self, delivery_id: str, lease: int, due_ms: int) -> bool:
        return bool(await self._release(keys=[keys.webhook_retry_queue()], args=[delivery_id, lease, due_ms]))

    async def drop(self, delivery_id: str, lease: int, *, delete: bool) -> bool:
        """Take a claimed delivery off the queue without an attempt (and forget it when `delete`)."""
        return bool(
            await self._drop(
                keys=[keys.webhook_retry_queue(), keys.delivery(delivery_id)],
                args=[delivery_id, lease, "1" if delete else "0"],
            )
        )

    async def redeliver(self, sub_id: str, delivery_id: str) -> int:
        now = now_ms()
        return int(
            await self._redeliver(
                keys=[keys.webhook_retry_queue(), keys.delivery(delivery_id)],
                args=[delivery_id, sub_id, now, iso(now / 1000)],
            )
        )

    async def log(self, sub_id: str) -> list[dict[str, Any]]:
        rows = await self.redis.lrange(keys.webhook_deliveries(sub_id), 0, keys.DELIVERY_LOG_MAX - 1)
        return [json.loads(r) for r in rows]
