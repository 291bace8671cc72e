"""The per-call control rate limit: `Settings.rate_limit_per_s` requests in any one second.

A sliding log in Redis (a sorted set of accepted request ids scored by time) rather than a
fixed per-second counter: a fixed window lets twice the limit through across a second boundary,
and "10 req/s per call_id" should hold for any second. The clock is Redis's own `TIME`, so every
bridge instance on that Redis counts against one window with one clock.

The check is a Lua fragment so the idempotency claim (bridge.api.idempotency) can run in the same
script: one round trip decides both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from bridge.api.errors import ApiError
from bridge.store import keys

# KEYS[1] the call's window; ARGV[1] limit, ARGV[2] window ms, ARGV[3] member (the request id).
# Leaves `now` (ms) in scope; returns {'limited', <ms until a slot frees>} when over the limit.
RATE_LIMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {'limited', tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
"""

# Redis 6 needs effects replication for a script that writes after TIME; 7 always does it.
REPLICATE_EFFECTS_LUA = "if redis.replicate_commands then redis.replicate_commands() end\n"

WINDOW_MS = 1000


@dataclass(frozen=True, slots=True)
class RateLimited:
    retry_after_ms: int

    @property
    def retry_after_s(self) -> int:
        # Retry-After is whole seconds; never 0, or a client would retry into the same window.
        return max(1, math.ceil(self.retry_after_ms / 1000))

    def error(self, limit: int) -> ApiError:
        seconds = self.retry_after_s
        return ApiError(
            429,
            "rate_limited",
            f"more than {limit} control requests in one second for this call; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
            extra={"retry_after_s": seconds},
        )


class RateLimiter:
    """The limit on its own (the control pipeline uses the combined script in idempotency.py)."""

    def __init__(self, redis: aioredis.Redis, limit: int) -> None:
        self.limit = limit
        self._script = redis.register_script(REPLICATE_EFFECTS_LUA + RATE_LIMIT_LUA + "return {'ok'}\n")

    async def hit(self, call_id: str, member: str) -> RateLimited | None:
        reply = await self._script(keys=[keys.rate_limit(call_id)], args=[self.limit, WINDOW_MS, member])
        if reply[0] == "limited":
            return RateLimited(int(float(reply[1])))
        return None
