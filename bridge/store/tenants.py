"""Tenants and their API keys. Keys are shown once and stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

from ulid import ULID

from bridge.store import keys
from bridge.store.redis import RedisClient, multi

LIVE_PREFIX = "yt_live_"
TEST_PREFIX = "yt_test_"

# Every scope the bridge checks. Keys carry only what they were created with.
ALL_SCOPES = (
    "ai_sessions:read",
    "ai_sessions:control_admin",
    "voice_agents:read",
    "voice_agents:write",
    "voice_agents:admin",
    "calls:read",
    "calls:write",
    "recordings:download",
    "campaigns:read",
    "campaigns:write",
    "leads:read",
    "leads:write",
    "webhooks:manage",
    "supervisors:act",
    "callbacks:read",
    "callbacks:write",
    "sandbox:admin",
)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant_id: str
    scopes: frozenset[str]
    prefix: str
    created_at: float

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> ApiKey:
        return cls(
            id=raw["id"],
            tenant_id=raw["tenant_id"],
            scopes=frozenset(json.loads(raw.get("scopes", "[]"))),
            prefix=raw.get("prefix", ""),
            created_at=float(raw.get("created_at", 0)),
        )


class TenantStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def ensure_tenant(self, tenant_id: str, name: str | None = None) -> None:
        pipe = multi(self.redis)  # the tenant's hash, and `tenants` (a single key: another slot)
        pipe.hsetnx(keys.tenant(tenant_id), "id", tenant_id)
        pipe.hsetnx(keys.tenant(tenant_id), "name", name or tenant_id)
        pipe.hsetnx(keys.tenant(tenant_id), "created_at", str(time.time()))
        pipe.sadd(keys.tenants(), tenant_id)
        await pipe.execute()

    async def exists(self, tenant_id: str) -> bool:
        return bool(await self.redis.exists(keys.tenant(tenant_id)))

    async def get_field(self, tenant_id: str, field: str) -> str | None:
        return await self.redis.hget(keys.tenant(tenant_id), field)

    async def set_field(self, tenant_id: str, field: str, value: str | None) -> None:
        if value is None:
            await self.redis.hdel(keys.tenant(tenant_id), field)
        else:
            await self.redis.hset(keys.tenant(tenant_id), field, value)

    async def create_key(
        self,
        tenant_id: str,
        scopes: list[str] | tuple[str, ...],
        *,
        live: bool = True,
        secret: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Mint a key. Returns (the key in clear, shown once; its stored record)."""
        unknown = set(scopes) - set(ALL_SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
        await self.ensure_tenant(tenant_id)
        prefix = LIVE_PREFIX if live else TEST_PREFIX
        clear = secret or f"{prefix}{secrets.token_urlsafe(32)}"
        if not clear.startswith((LIVE_PREFIX, TEST_PREFIX)):
            raise ValueError("an API key must start with yt_live_ or yt_test_")
        record = ApiKey(
            id=f"key_{ULID()}",
            tenant_id=tenant_id,
            scopes=frozenset(scopes),
            prefix=clear[:12],
            created_at=time.time(),
        )
        digest = hash_secret(clear)
        # The tenant's set first, then the key (two slots on a cluster): a key that works is one
        # the tenant's listing and revocation can find.
        await self.redis.sadd(keys.tenant_api_keys(tenant_id), digest)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            keys.api_key(digest),
            mapping={
                "id": record.id,
                "tenant_id": tenant_id,
                "scopes": json.dumps(sorted(record.scopes)),
                "prefix": record.prefix,
                "created_at": str(record.created_at),
                "revoked": "0",
            },
        )
        await pipe.execute()
        return clear, record

    async def lookup_key(self, clear: str) -> ApiKey | None:
        raw = await self.redis.hgetall(keys.api_key(hash_secret(clear)))
        if not raw or raw.get("revoked") == "1":
            return None
        return ApiKey.from_hash(raw)
