"""Idempotency-Key for control verbs, scoped per call_id.

A key goes through two states in one Redis hash (`keys.idempotency(call_id, key)`):

- `inflight`: claimed by one request (its request id is the `owner`) under a lease, so a crashed
  bridge cannot wedge the key. Claiming is atomic inside a Lua script (the admission script in
  bridge.api.admission, or the gate script here, both after the rate limit), so of two concurrent
  requests with one key exactly one runs the verb; the other polls until the owner finishes and
  replays its answer.
- `done`: the final status and body, kept for the verb class's window (24 h, or 60 s for
  play_audio / whisper / send_dtmf). Only final answers are kept (2xx and 4xx except 401 and 429);
  for anything else the owner deletes the key so a retry runs the verb again.

Every claim carries a fingerprint of the validated verb: the same key with another body is
refused (422 `idempotency_key_reused`) instead of silently replaying an unrelated answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from bridge.api.errors import ApiError
from bridge.api.ratelimit import NOW_LUA, RATE_LIMIT_LUA, REPLICATE_EFFECTS_LUA, WINDOW_MS, RateLimited
from bridge.store import keys
from bridge.store.batch import PipelinedScript
from bridge.store.redis import RedisClient

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Printable ASCII without spaces: a UUID v4 in practice; anything a client can put in a header
# and we can put in a Redis key name without surprises.
KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")

# The key's state for this request: claimed (now ours), wait (someone else's, in flight),
# replay (done: status and body), or mismatch (used with another body).
CLAIM_LUA = """
local function claim(key, fp, owner, lease)
  local cur = redis.call('HMGET', key, 'state', 'fp', 'status', 'body')
  if not cur[1] then
    redis.call('HSET', key, 'state', 'inflight', 'fp', fp, 'owner', owner)
    redis.call('PEXPIRE', key, lease)
    return {'claimed'}
  end
  if cur[2] ~= fp then return {'mismatch'} end
  if cur[1] == 'done' then return {'replay', cur[3], cur[4]} end
  return {'wait'}
end
"""

# KEYS[1] rate window; KEYS[2] idempotency hash (absent: no key)
# ARGV[1] limit, ARGV[2] window ms, ARGV[3] request id, ARGV[4] check the rate limit,
# ARGV[5] fingerprint, ARGV[6] lease ms
_GATE = (
    REPLICATE_EFFECTS_LUA
    + NOW_LUA
    + RATE_LIMIT_LUA
    + CLAIM_LUA
    + """
if ARGV[4] == '1' then
  local wait = rate_limit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], now)
  if wait then return {'limited', tostring(wait)} end
end
if #KEYS < 2 then return {'run'} end
return claim(KEYS[2], ARGV[5], ARGV[3], ARGV[6])
"""
)

# KEYS[1] idempotency hash; ARGV[1] owner, ARGV[2] 'store'|'release', ARGV[3] status, ARGV[4] body,
# ARGV[5] ttl ms. A lease that expired and was claimed again belongs to someone else: hands off.
_FINISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if ARGV[2] == 'release' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[3], 'body', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass(frozen=True, slots=True)
class GateResult:
    kind: str  # run | claimed | replay | wait | mismatch | limited
    status: int = 0
    body: str = ""
    limited: RateLimited | None = None


RUN = GateResult("run")
CLAIMED = GateResult("claimed")
WAIT = GateResult("wait")
MISMATCH = GateResult("mismatch")


def gate_result(reply: list[Any]) -> GateResult:
    kind = reply[0]
    if kind == "run":
        return RUN
    if kind == "claimed":
        return CLAIMED
    if kind == "wait":
        return WAIT
    if kind == "mismatch":
        return MISMATCH
    if kind == "replay":
        return GateResult("replay", int(reply[1]), reply[2])
    if kind == "limited":
        return GateResult("limited", limited=RateLimited(int(float(reply[1]))))
    raise ValueError(f"unexpected gate reply {kind!r}")


def fingerprint(payload: dict[str, Any]) -> str:
    """The verb as validated (defaults filled in, key order ignored): two bodies that mean the
    same verb match, `{"event":"mute"}` and `{"event":"mute","target":"caller"}` included."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def check_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not KEY_RE.match(value):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{HEADER} must be 1-255 printable ASCII characters without spaces (a UUID v4)",
        )
    return value


def cacheable(status: int) -> bool:
    """Final answers only: a 5xx, a 429 or a 401 says nothing about the verb, so a retry must run it."""
    return status < 500 and status not in (401, 429)


class IdempotencyStore:
    def __init__(self, redis: RedisClient, *, rate_limit: int, lease_ms: int) -> None:
        self.rate_limit = rate_limit
        self.lease_ms = lease_ms
        self._gate = redis.register_script(_GATE)
        # Answers stored at the same moment (a busy bridge) share one round trip.
        self._finish = PipelinedScript(redis, _FINISH)

    async def gate(
        self,
        call_id: str,
        request_id: str,
        *,
        key: str | None,
        fp: str = "",
        check_rate: bool = True,
    ) -> GateResult:
        """Count the request against the call's rate limit and, with a key, claim or look it up."""
        redis_keys = [keys.rate_limit(call_id)]
        if key is not None:
            redis_keys.append(keys.idempotency(call_id, key))
        reply = await self._gate(
            keys=redis_keys,
            args=[self.rate_limit, WINDOW_MS, request_id, "1" if check_rate else "0", fp, self.lease_ms],
        )
        return gate_result(reply)

    async def store(self, call_id: str, key: str, owner: str, *, status: int, body: str, ttl_s: int) -> bool:
        result = await self._finish(
            keys=[keys.idempotency(call_id, key)], args=[owner, "store", status, body, ttl_s * 1000]
        )
        return bool(result)

    async def release(self, call_id: str, key: str, owner: str) -> bool:
        result = await self._finish(keys=[keys.idempotency(call_id, key)], args=[owner, "release", 0, "", 0])
        return bool(result)

    async def aclose(self) -> None:
        """Wait (bounded) for the stores and releases already submitted to be sent."""
        await self._finish.aclose()
