"""Per-call callback tokens: `yt_cb_` + a 26-character ULID, bound to one call and tenant.

The token itself is an opaque handle; what it grants lives in Redis under its SHA-256 hash,
so a token can be revoked before it expires. Its ULID doubles as the `jti` that
`revoke_token` reports.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ulid import ULID

from bridge.store import keys
from bridge.store.redis import RedisClient
from bridge.store.tenants import hash_secret

TOKEN_PREFIX = "yt_cb_"


@dataclass(frozen=True, slots=True)
class CallbackToken:
    token: str
    jti: str
    call_id: str
    tenant_id: str
    expires_at: float
    revoked: bool = False

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at

    @classmethod
    def from_hash(cls, token: str, raw: dict[str, str]) -> CallbackToken:
        return cls(
            token=token,
            jti=raw["jti"],
            call_id=raw["call_id"],
            tenant_id=raw["tenant_id"],
            expires_at=float(raw["expires_at"]),
            revoked=raw.get("revoked") == "1",
        )


class TokenStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._revoke = redis.register_script(_REVOKE_EXISTING)

    async def mint(self, *, call_id: str, tenant_id: str, ttl_s: float) -> CallbackToken:
        jti = str(ULID())
        token = f"{TOKEN_PREFIX}{jti}"
        expires_at = time.time() + ttl_s
        digest = hash_secret(token)
        # The call's set first, then the token (two slots on a cluster): a token exists only once
        # revoke_all_for_call can find it.
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(keys.session_tokens(call_id), digest)
        pipe.expire(keys.session_tokens(call_id), keys.SESSION_TTL_S)
        await pipe.execute()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            keys.callback_token(digest),
            mapping={
                "jti": jti,
                "call_id": call_id,
                "tenant_id": tenant_id,
                "expires_at": repr(expires_at),
                "revoked": "0",
            },
        )
        pipe.expire(keys.callback_token(digest), int(ttl_s) + keys.TOKEN_GRACE_S)
        await pipe.execute()
        return CallbackToken(token, jti, call_id, tenant_id, expires_at)

    async def lookup(self, token: str) -> CallbackToken | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        raw = await self.redis.hgetall(keys.callback_token(hash_secret(token)))
        if not raw:
            return None
        return CallbackToken.from_hash(token, raw)

    async def revoke(self, token: str) -> CallbackToken | None:
        found = await self.lookup(token)
        if found is None:
            return None
        await self.redis.hset(keys.callback_token(hash_secret(token)), "revoked", "1")
        return CallbackToken(found.token, found.jti, found.call_id, found.tenant_id, found.expires_at, True)

    async def revoke_all_for_call(self, call_id: str) -> int:
        """Revoke every token minted for the call; returns how many were still stored."""
        digests = sorted(await self.redis.smembers(keys.session_tokens(call_id)))
        if not digests:
            return 0
        # One script per token: each token hash is a slot of its own on a cluster.
        revoked = await asyncio.gather(*(self._revoke(keys=[keys.callback_token(d)]) for d in digests))
        return sum(int(n) for n in revoked)


# HSET on an expired (already deleted) token hash would resurrect it without a TTL. KEYS: the token.
_REVOKE_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 1
"""
