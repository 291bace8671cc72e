"""Voice agents: where a call's audio fork goes (ws_url, auth, audio format, limits).

Each agent is one JSON document. Its `max_concurrent` cap is a Redis set of the call_ids
holding a slot, changed only by Lua scripts, so every bridge instance sharing the Redis
sees one count, and a slot can be traced to (and freed for) the exact call that holds it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ulid import ULID

from bridge.calls.commands import UnsafeValue, url, word
from bridge.calls.sessions import now_iso
from bridge.store import keys
from bridge.store.redis import RedisClient, mget, multi

TokenLifetime = Literal["30min_with_refresh", "ws_session"]
Subprotocol = Literal["audio.drachtio.org", "audio.jambonz.org"]
DisconnectAction = Literal["hangup", "transfer_to_queue"]
AgentStatus = Literal["active", "paused", "archived"]

DEFAULT_AUDIO_FORMAT = {"encoding": "pcm_s16le", "sample_rate_hz": 16000, "channels": 1, "frame_ms": 20}


def _check_ws_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("ws_url must be a ws:// or wss:// URL with a host")
    try:
        url(value, "ws_url", schemes=("ws", "wss"))
    except UnsafeValue as exc:
        raise ValueError(f"{exc.reason}: percent-encode spaces, quotes, commas, braces and '$'") from None
    return value


def _check_auth_token(value: str | None) -> str | None:
    """The token mod_audio_fork presents to the agent: a bearer token's characters (RFC 6750's
    b64token, plus `:` `%` `;` `@` `=`), as it becomes a channel variable."""
    if value is None:
        return None
    try:
        word(value, "auth_token")
    except UnsafeValue as exc:
        raise ValueError(f"{exc.reason}: use letters, digits and - . _ ~ + / = : % ; @") from None
    return value


def _check_audio_format(value: dict[str, Any]) -> dict[str, Any]:
    merged = {**DEFAULT_AUDIO_FORMAT, **value}
    rate = merged.get("sample_rate_hz", merged.get("sample_rate"))
    if rate not in (8000, 16000, 24000, 32000, 48000, 64000):
        raise ValueError("audio_format.sample_rate_hz must be one of 8000, 16000, 24000, 32000, 64000")
    merged["sample_rate_hz"] = rate
    merged.pop("sample_rate", None)
    return merged


class VoiceAgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    ws_url: str
    auth_token: str | None = Field(default=None, max_length=4096)
    audio_format: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_AUDIO_FORMAT))
    external_agent_id: str | None = Field(default=None, max_length=200)
    transfer_destination: str | None = Field(default=None, max_length=500)
    max_concurrent: int = Field(default=10, ge=1, le=10_000)
    token_lifetime: TokenLifetime = "30min_with_refresh"
    subprotocol: Subprotocol = "audio.drachtio.org"
    ws_disconnect_action: DisconnectAction = "hangup"

    _ws = field_validator("ws_url")(lambda cls, v: _check_ws_url(v))
    _token = field_validator("auth_token")(lambda cls, v: _check_auth_token(v))
    _af = field_validator("audio_format")(lambda cls, v: _check_audio_format(v))


class VoiceAgentUpdate(BaseModel):
    """PATCH: absent or null fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    ws_url: str | None = None
    auth_token: str | None = Field(default=None, max_length=4096)
    audio_format: dict[str, Any] | None = None
    external_agent_id: str | None = Field(default=None, max_length=200)
    transfer_destination: str | None = Field(default=None, max_length=500)
    max_concurrent: int | None = Field(default=None, ge=1, le=10_000)
    token_lifetime: TokenLifetime | None = None
    subprotocol: Subprotocol | None = None
    ws_disconnect_action: DisconnectAction | None = None
    status: Literal["active", "paused"] | None = None

    @field_validator("ws_url")
    @classmethod
    def _ws(cls, v: str | None) -> str | None:
        return None if v is None else _check_ws_url(v)

    @field_validator("audio_format")
    @classmethod
    def _af(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else _check_audio_format(v)

    _token = field_validator("auth_token")(lambda cls, v: _check_auth_token(v))


class VoiceAgent(BaseModel):
    id: str
    tenant_id: str
    name: str
    ws_url: str
    auth_token: str | None = None
    audio_format: dict[str, Any]
    external_agent_id: str | None = None
    transfer_destination: str | None = None
    max_concurrent: int = 10
    token_lifetime: TokenLifetime = "30min_with_refresh"
    subprotocol: Subprotocol = "audio.drachtio.org"
    ws_disconnect_action: DisconnectAction = "hangup"
    status: AgentStatus = "active"
    created_at: str
    updated_at: str

    @property
    def sample_rate_hz(self) -> int:
        return int(self.audio_format.get("sample_rate_hz", 16000))


# Takes a slot for ARGV[1] if fewer than ARGV[2] are held. 1 taken (or already held), 0 full.
_ACQUIRE = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""


class VoiceAgentStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._acquire = redis.register_script(_ACQUIRE)

    async def create(self, tenant_id: str, body: VoiceAgentCreate) -> VoiceAgent:
        now = now_iso()
        agent = VoiceAgent(
            id=f"va_{ULID()}", tenant_id=tenant_id, created_at=now, updated_at=now, **body.model_dump()
        )
        pipe = multi(self.redis)  # the agent, then the tenant's index (another slot): readers skip a gap
        pipe.set(keys.voice_agent(agent.id), agent.model_dump_json())
        pipe.zadd(keys.tenant_voice_agents(tenant_id), {agent.id: time.time()})
        await pipe.execute()
        return agent

    async def get(self, va_id: str, tenant_id: str | None = None) -> VoiceAgent | None:
        """The agent, or None when it does not exist or belongs to another tenant."""
        raw = await self.redis.get(keys.voice_agent(va_id))
        if raw is None:
            return None
        agent = VoiceAgent.model_validate_json(raw)
        if tenant_id is not None and agent.tenant_id != tenant_id:
            return None
        return agent

    async def list(self, tenant_id: str, status: str | None = None) -> list[VoiceAgent]:
        ids = await self.redis.zrange(keys.tenant_voice_agents(tenant_id), 0, -1)
        if not ids:
            return []
        raws = await mget(self.redis, [keys.voice_agent(i) for i in ids])
        agents = [VoiceAgent.model_validate_json(r) for r in raws if r]
        return [a for a in agents if status is None or a.status == status]

    async def save(self, agent: VoiceAgent) -> VoiceAgent:
        agent = agent.model_copy(update={"updated_at": now_iso()})
        await self.redis.set(keys.voice_agent(agent.id), agent.model_dump_json())
        return agent

    async def update(self, agent: VoiceAgent, patch: VoiceAgentUpdate) -> VoiceAgent:
        changes = patch.model_dump(exclude_none=True)
        return await self.save(agent.model_copy(update=changes))

    async def delete(self, agent: VoiceAgent) -> None:
        pipe = multi(self.redis)
        pipe.delete(keys.voice_agent(agent.id))
        pipe.zrem(keys.tenant_voice_agents(agent.tenant_id), agent.id)
        pipe.delete(keys.voice_agent_active(agent.id))
        await pipe.execute()

    # ------------------------------------------------------------ tenant default

    async def get_default(self, tenant_id: str) -> str | None:
        return await self.redis.hget(keys.tenant(tenant_id), "default_voice_agent_id") or None

    async def set_default(self, tenant_id: str, va_id: str | None) -> None:
        if va_id is None:
            await self.redis.hdel(keys.tenant(tenant_id), "default_voice_agent_id")
        else:
            await self.redis.hset(keys.tenant(tenant_id), "default_voice_agent_id", va_id)
        await self.redis.sadd(keys.tenants(), tenant_id)

    # ------------------------------------------------------------ max_concurrent slots

    async def acquire_slot(self, agent: VoiceAgent, call_id: str) -> bool:
        result = await self._acquire(
            keys=[keys.voice_agent_active(agent.id)], args=[call_id, agent.max_concurrent]
        )
        return int(result) == 1

    async def release_slot(self, va_id: str, call_id: str) -> None:
        await self.redis.srem(keys.voice_agent_active(va_id), call_id)

    async def active_calls(self, va_id: str) -> set[str]:
        return set(await self.redis.smembers(keys.voice_agent_active(va_id)))


def agent_public(agent: VoiceAgent) -> dict[str, Any]:
    return json.loads(agent.model_dump_json())
