"""The per-call control rate limit: `Settings.rate_limit_per_s` requests in any one second.

A sliding log in Redis (a sorted set of accepted request ids scored by time) rather than a
fixed per-second counter: a fixed window lets twice the limit through across a second boundary,
and "10 req/s per call_id" should hold for any second. The clock is Redis's own `TIME`, so every
bridge instance on that Redis counts against one window with one clock.

The check is a Lua function so the admission script (bridge.api.admission) runs it together with
the credential check and the idempotency claim: one round trip decides all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bridge.api.errors import ApiError
from bridge.store import keys
from bridge.store.redis import RedisClient

# Lua building blocks, shared with the admission script (bridge.api.admission).
# `now` in ms from Redis's clock: every instance agrees on it.
NOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# nil when the request fits (and is counted), else the ms until the oldest counted one leaves.
RATE_LIMIT_LUA = """
local function rate_limit(key, limit, window, member, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return tonumber(oldest[2]) + window - now
  end
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
  return nil
end
"""

# Redis 6 needs effects replication for a script that writes after TIME; 7 always does it.
REPLICATE_EFFECTS_LUA = "if redis.replicate_commands then redis.replicate_commands() end\n"

# KEYS[1] the call's window; ARGV[1] limit, ARGV[2] window ms, ARGV[3] member (the request id).
_HIT = (
    REPLICATE_EFFECTS_LUA
    + NOW_LUA
    + RATE_LIMIT_LUA
    + """
local wait = rate_limit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], now)
if wait then return {'limited', tostring(wait)} end
return {'ok'}
"""
)

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

    def __init__(self, redis: RedisClient, limit: int) -> None:
        self.limit = limit
        self._script = redis.register_script(_HIT)

    async def hit(self, call_id: str, member: str) -> RateLimited | None:
        reply = await self._script(keys=[keys.rate_limit(call_id)], args=[self.limit, WINDOW_MS, member])
        if reply[0] == "limited":
            return RateLimited(int(float(reply[1])))
        return None
