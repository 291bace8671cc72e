"""Admission of a control request in one Redis round trip: read the credential and the session,
check the credential may act on that call, count the request against the call's rate limit and
claim its Idempotency-Key.

Round trips dominate a verb's cost (each one is two syscalls and a pass through redis-py), so
everything the pipeline needs before the handler comes back from this one script, run with EVALSHA
(redis-py's `register_script`, which loads it again if Redis has forgotten it). The script returns
both hashes as JSON strings: one bulk string each for the parser, which `json.loads` turns into a
dict in C, instead of flat field/value lists paired up in Python.

The credential check here is coarse on purpose (exists, not revoked, same tenant, bound to this
call / holds the control scope, not expired): it only decides whether the request may be counted
and may claim a key, so an unauthenticated caller cannot spend a call's rate limit or squat on its
keys. The verdict the client sees is bridge.api.auth's, judged in Python from the same hashes; if
the two ever disagree, the pipeline falls back to the plain gate (bridge.api.idempotency).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.api.idempotency import CLAIM_LUA, GateResult, gate_result
from bridge.api.ratelimit import NOW_LUA, RATE_LIMIT_LUA, REPLICATE_EFFECTS_LUA, WINDOW_MS
from bridge.store import keys
from bridge.store.batch import PipelinedScript
from bridge.store.redis import RedisClient, is_cluster

# KEYS[1] credential hash, KEYS[2] session hash, KEYS[3] rate window, KEYS[4] idempotency hash (opt.)
# ARGV[1] 'token' | 'key', ARGV[2] call_id, ARGV[3] scope a key needs, ARGV[4] limit,
# ARGV[5] window ms, ARGV[6] request id, ARGV[7] fingerprint, ARGV[8] lease ms
# On a Redis Cluster the credential is another slot than the call's keys ({apikey:..}/{cbtoken:..}
# vs {call:<id>}): it is read first (HGETALL) and given as ARGV[9], its JSON ('' none), and KEYS
# start at the session hash. The check is the same; the credential is read a moment earlier.
# Returns {credential json, session json, verdict...} with verdict 'denied' or the gate's answer.
_ADMIT = (
    REPLICATE_EFFECTS_LUA
    + NOW_LUA
    + RATE_LIMIT_LUA
    + CLAIM_LUA
    + """
local function read(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil, '' end
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map, cjson.encode(map)
end
local cred, cred_json, k
if ARGV[9] then
  cred_json, k = ARGV[9], 0
  if cred_json ~= '' then cred = cjson.decode(cred_json) end
else
  cred, cred_json = read(KEYS[1])
  k = 1
end
local sess, sess_json = read(KEYS[k + 1])
local ok = cred ~= nil and sess ~= nil and cred['revoked'] ~= '1' and cred['tenant_id'] == sess['tenant_id']
if ok and ARGV[1] == 'token' then
  ok = cred['call_id'] == ARGV[2] and (tonumber(cred['expires_at']) or 0) * 1000 > now
elseif ok then
  ok = string.find(cred['scopes'] or '', '"' .. ARGV[3] .. '"', 1, true) ~= nil
end
if not ok then return {cred_json, sess_json, 'denied'} end
local wait = rate_limit(KEYS[k + 2], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], now)
if wait then return {cred_json, sess_json, 'limited', tostring(wait)} end
if #KEYS < k + 3 then return {cred_json, sess_json, 'run'} end
local verdict = claim(KEYS[k + 3], ARGV[7], ARGV[6], ARGV[8])
return {cred_json, sess_json, unpack(verdict)}
"""
)

DENIED = GateResult("denied")


@dataclass(frozen=True, slots=True)
class Admission:
    credential: dict[str, str]  # empty: no such credential
    session: dict[str, str]  # empty: no such session
    gate: GateResult  # kind "denied" when the coarse check refused


class Admitter:
    def __init__(self, redis: RedisClient, *, rate_limit: int, lease_ms: int, scope: str) -> None:
        self.rate_limit = rate_limit
        self.lease_ms = lease_ms
        self.scope = scope
        # Admissions made while one is on the wire share the next round trip (a busy bridge).
        self._script = PipelinedScript(redis, _ADMIT)
        self._split = is_cluster(redis)
        self.redis = redis

    async def aclose(self) -> None:
        """Wait (bounded) for the admissions already submitted to be answered."""
        await self._script.aclose()

    async def admit(
        self,
        *,
        credential_key: str,
        is_token: bool,
        call_id: str,
        request_id: str,
        key: str | None,
        fp: str,
    ) -> Admission:
        redis_keys = [credential_key, keys.session(call_id), keys.rate_limit(call_id)]
        if key is not None:
            redis_keys.append(keys.idempotency(call_id, key))
        credential_arg: list[str] = []
        if self._split:
            found = await self.redis.hgetall(credential_key)
            credential_arg = [json.dumps(found) if found else ""]
            redis_keys = redis_keys[1:]
        reply: list[Any] = await self._script(
            keys=redis_keys,
            args=[
                "token" if is_token else "key",
                call_id,
                self.scope,
                self.rate_limit,
                WINDOW_MS,
                request_id,
                fp,
                self.lease_ms,
                *credential_arg,
            ],
        )
        credential = json.loads(reply[0]) if reply[0] else {}
        session = json.loads(reply[1]) if reply[1] else {}
        gate = DENIED if reply[2] == "denied" else gate_result(reply[2:])
        return Admission(credential, session, gate)
